// Nix's serve protocol ("nix-store --serve") on the wire: u64 little-endian integers, strings as a
// u64 length then the bytes zero-padded to a multiple of 8. Pure encoding and decoding, no I/O:
// encoders append to a buffer, decoders pull from a ByteSource (the same shape as NarSource).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nar.h"
#include "result.h"

namespace lazystore::serve {

inline constexpr uint64_t kMagicClient = 0x390c9deb;  // client hello
inline constexpr uint64_t kMagicServer = 0x5452eecb;  // server answer
inline constexpr uint64_t kExportMagic = 0x4558494e;  // "NIXE", after each NAR of ImportPaths
// 2.6: QueryPathInfos answers carry narHash, ca and sigs (≥ 2.4); AddToStoreNar needs ≥ 2.5.
inline constexpr uint64_t kClientVersion = 0x206;

constexpr unsigned version_major(uint64_t version) { return (version >> 8) & 0xff; }
constexpr unsigned version_minor(uint64_t version) { return version & 0xff; }

enum class Command : uint64_t {
  QueryValidPaths = 1,
  QueryPathInfos = 2,
  DumpStorePath = 3,
  ImportPaths = 4,
  ExportPaths = 5,
  BuildPaths = 6,
  QueryClosure = 7,
  BuildDerivation = 8,
  AddToStoreNar = 9,
};

// What the serve protocol says about a valid store path. Paths are absolute ("/nix/store/…").
struct PathInfo {
  std::string path;
  std::string deriver;                  // "" when unknown
  std::vector<std::string> references;  // may include the path itself
  uint64_t download_size = 0;
  uint64_t nar_size = 0;
  std::string nar_hash;  // "sha256:<nix32>" as Nix prints it; "" from servers older than 2.4
  std::string ca;        // content address, "" when input-addressed
  std::vector<std::string> sigs;
  uint64_t registration_time = 0;
  bool ultimate = false;
};

// Limits a decoder enforces so hostile input cannot make it allocate without bound.
inline constexpr size_t kMaxStringLength = 64 * 1024;
inline constexpr uint64_t kMaxListLength = 10'000'000;

// Appends wire items to a byte buffer.
class WireWriter {
 public:
  WireWriter& u64(uint64_t value);
  WireWriter& boolean(bool value) { return u64(value ? 1 : 0); }
  WireWriter& str(std::string_view value);
  WireWriter& strings(std::span<const std::string> values);
  WireWriter& command(Command command) { return u64(static_cast<uint64_t>(command)); }

  const std::string& bytes() const { return buffer_; }
  std::string take() { return std::move(buffer_); }
  void clear() { buffer_.clear(); }

 private:
  std::string buffer_;
};

// Pulls wire items from a source; a short source is EPROTO, malformed input EINVAL.
class WireReader {
 public:
  explicit WireReader(NarSource source) : source_(std::move(source)) {}

  Status read_exact(std::span<std::byte> out);
  Result<uint64_t> u64();
  Result<std::string> str(size_t max_length = kMaxStringLength);
  Result<std::vector<std::string>> strings(uint64_t max_count = kMaxListLength);

 private:
  NarSource source_;
};

// Client hello: magic then our version.
std::string encode_client_hello(uint64_t client_version = kClientVersion);
// The server's answer: its magic then its version. Returns the server version.
Result<uint64_t> decode_server_hello(WireReader& reader);

std::string encode_query_valid_paths(bool lock, bool substitute,
                                     std::span<const std::string> paths);
std::string encode_query_path_infos(std::span<const std::string> paths);
std::string encode_query_closure(bool include_outputs, std::span<const std::string> paths);
std::string encode_dump_store_path(std::string_view path);
// Command and path info of AddToStoreNar; exactly info.nar_size bytes of NAR must follow.
std::string encode_add_to_store_nar(const PathInfo& info);

// ImportPaths framing: the command, then per path "1" + NAR + trailer, then "0".
std::string encode_import_paths_begin();
std::string encode_import_path_begin();
std::string encode_import_path_trailer(const PathInfo& info);
std::string encode_import_paths_end();

// A set of paths (QueryValidPaths, QueryClosure answers).
Result<std::vector<std::string>> decode_path_set(WireReader& reader);
// QueryPathInfos answer: entries until an empty path. `version` (the lower of the two sides'
// versions) decides whether narHash, ca and sigs are present (≥ 2.4).
Result<std::vector<PathInfo>> decode_path_infos(WireReader& reader, uint64_t version);
// The "1" that ImportPaths and AddToStoreNar answer on success.
Status decode_success(WireReader& reader);

}  // namespace lazystore::serve
