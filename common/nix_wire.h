// The wire format Nix's protocols share (the serve protocol of `nix-store --serve`, the worker
// protocol of `nix-daemon`): u64 little-endian integers, strings as a u64 length then the bytes
// zero-padded to a multiple of 8, lists as a count then the items. Pure encoding and decoding:
// WireWriter appends to a buffer, WireReader pulls from a NarSource.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "nar.h"
#include "path_info.h"
#include "result.h"

namespace lazystore::wire {

// Limits a decoder enforces so hostile input cannot make it allocate without bound.
inline constexpr size_t kMaxStringLength = 64 * 1024;
inline constexpr uint64_t kMaxListLength = 10'000'000;

constexpr size_t padding(size_t length) { return (8 - length % 8) % 8; }

// A protocol version as both protocols send it: major in the second byte, minor in the first.
constexpr unsigned version_major(uint64_t version) { return (version >> 8) & 0xff; }
constexpr unsigned version_minor(uint64_t version) { return version & 0xff; }

// Appends wire items to a byte buffer.
class WireWriter {
 public:
  WireWriter& u64(uint64_t value);
  WireWriter& boolean(bool value) { return u64(value ? 1 : 0); }
  WireWriter& str(std::string_view value);
  WireWriter& strings(std::span<const std::string> values);
  // An operation code or another enum, as its u64.
  template <class Enum>
  requires std::is_enum_v<Enum> WireWriter& op(Enum value) { return u64(static_cast<uint64_t>(value)); }
  // Bytes as they are (no length, no padding).
  WireWriter& raw(std::string_view bytes);
  // A ValidPathInfo as both protocols send one to be added: path, deriver, `nar_hash` (each
  // protocol spells it its own way), references, registration time, narSize, ultimate, sigs, ca.
  WireWriter& path_info(const PathInfo& info, std::string_view nar_hash);

  const std::string& bytes() const { return buffer_; }
  std::string take() { return std::move(buffer_); }
  void clear() { buffer_.clear(); }

 private:
  std::string buffer_;
};

// Pulls wire items from a source; a short source is EPROTO, malformed input EINVAL. `protocol`
// names the protocol in messages ("serve protocol: unexpected end of stream").
class WireReader {
 public:
  explicit WireReader(NarSource source, std::string_view protocol = "serve protocol")
      : source_(std::move(source)), protocol_(protocol) {}

  Status read_exact(std::span<std::byte> out);
  Result<uint64_t> u64();
  Result<std::string> str(size_t max_length = kMaxStringLength);
  Result<std::vector<std::string>> strings(uint64_t max_count = kMaxListLength);
  const std::string& protocol() const { return protocol_; }

 private:
  NarSource source_;
  std::string protocol_;
};

}  // namespace lazystore::wire
