#include "buffered_reader.h"

#include <algorithm>
#include <cstring>

namespace lazystore {

BufferedReader::BufferedReader(ByteStream& stream)
    : stream_(stream), buffer_(std::make_unique_for_overwrite<std::byte[]>(kBufferSize)) {}

Result<size_t> BufferedReader::read_some(std::span<std::byte> out) {
  if (begin_ == end_) {
    // Large reads go straight to the caller; small ones are buffered.
    if (out.size() >= kBufferSize) {
      auto n = stream_.read_some(out);
      if (n) bytes_read_ += *n;
      return n;
    }
    auto n = stream_.read_some(std::span(buffer_.get(), kBufferSize));
    if (!n) return n.error();
    if (*n == 0) return size_t{0};
    bytes_read_ += *n;
    begin_ = 0;
    end_ = *n;
  }
  size_t n = std::min(out.size(), end_ - begin_);
  std::memcpy(out.data(), buffer_.get() + begin_, n);
  begin_ += n;
  return n;
}

Status BufferedReader::read_raw(uint64_t size, const std::function<Status(std::span<const std::byte>)>& sink) {
  if (!chunk_) chunk_ = std::make_unique_for_overwrite<std::byte[]>(kBufferSize);
  while (size > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(size, kBufferSize));
    auto n = read_some(std::span(chunk_.get(), want));
    if (!n) return n.error();
    if (*n == 0) return make_error(EPROTO, "unexpected end of stream in a NAR");
    if (auto s = sink(std::span<const std::byte>(chunk_.get(), *n)); !s) return s;
    size -= *n;
  }
  return {};
}

}  // namespace lazystore
