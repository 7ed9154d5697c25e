// A bidirectional byte stream to a serve-protocol peer: a local child process or an SSH channel.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "result.h"

namespace lazystore {

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Reads at least one byte, or returns 0 at the end of the stream.
  virtual Result<size_t> read_some(std::span<std::byte> buffer) = 0;
  virtual Status write_all(std::span<const std::byte> data) = 0;
  // Tells the peer no more input is coming (EOF on its stdin).
  virtual Status close_write() = 0;
  // The last line(s) the peer wrote to its stderr, for error messages; "" if none.
  virtual std::string stderr_tail() = 0;

  Status write_all(std::string_view data) { return write_all(std::as_bytes(std::span(data))); }
};

// Keeps the last `limit` bytes appended: a peer's stderr, bounded.
class TailBuffer {
 public:
  explicit TailBuffer(size_t limit = 4096) : limit_(limit) {}
  void append(std::string_view data);
  // The last non-empty line, trimmed ("" if none).
  std::string last_line() const;
  const std::string& text() const { return text_; }

 private:
  size_t limit_;
  std::string text_;
};

}  // namespace lazystore
