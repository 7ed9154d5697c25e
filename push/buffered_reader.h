// Buffered reading from a ByteStream, shared by the protocol clients: small reads come from a
// 256 KiB buffer, large ones (NARs) go straight to the caller's memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "byte_stream.h"
#include "nar.h"
#include "result.h"

namespace lazystore {

class BufferedReader {
 public:
  explicit BufferedReader(ByteStream& stream);
  BufferedReader(const BufferedReader&) = delete;
  BufferedReader& operator=(const BufferedReader&) = delete;

  // At least one byte, or 0 at the end of the stream.
  Result<size_t> read_some(std::span<std::byte> out);
  // A source over read_some, for a WireReader.
  NarSource source() {
    return [this](std::span<std::byte> out) { return read_some(out); };
  }
  // Reads exactly `size` raw bytes (a NAR) and hands them to `sink` in pieces of up to 256 KiB.
  Status read_raw(uint64_t size, const std::function<Status(std::span<const std::byte>)>& sink);
  // How many bytes the stream has given so far.
  uint64_t bytes_read() const { return bytes_read_; }

  static constexpr size_t kBufferSize = 256 * 1024;

 private:
  ByteStream& stream_;
  // Not zero-filled: a session that reads little touches (and faults in) little of them.
  std::unique_ptr<std::byte[]> buffer_;
  std::unique_ptr<std::byte[]> chunk_;  // read_raw's piece, kept across paths
  size_t begin_ = 0;
  size_t end_ = 0;
  uint64_t bytes_read_ = 0;
};

}  // namespace lazystore
