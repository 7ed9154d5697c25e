#include "serve_connection.h"

#include <algorithm>
#include <cstring>

namespace lazystore {

ServeConnection::ServeConnection(ByteStream& stream, std::string peer)
    : stream_(stream),
      peer_(std::move(peer)),
      reader_([this](std::span<std::byte> out) { return fill(out); }),
      buffer_(std::make_unique_for_overwrite<std::byte[]>(kBufferSize)) {}

Result<size_t> ServeConnection::fill(std::span<std::byte> out) {
  if (begin_ == end_) {
    // Large reads go straight to the caller; small ones are buffered.
    if (out.size() >= kBufferSize) return stream_.read_some(out);
    auto n = stream_.read_some(std::span(buffer_.get(), kBufferSize));
    if (!n) return n.error();
    if (*n == 0) return size_t{0};
    begin_ = 0;
    end_ = *n;
  }
  size_t n = std::min(out.size(), end_ - begin_);
  std::memcpy(out.data(), buffer_.get() + begin_, n);
  begin_ += n;
  return n;
}

Error ServeConnection::explain(const Error& error) {
  std::string tail = stream_.stderr_tail();
  std::string message = peer_ + ": " + error.message;
  if (!tail.empty()) message = peer_ + ": " + tail + " (" + error.message + ")";
  return make_error(error.code, message);
}

Status ServeConnection::send_hello() { return write(serve::encode_client_hello()); }

Status ServeConnection::read_hello() {
  auto version = serve::decode_server_hello(reader_);
  if (!version) return explain(version.error());
  server_version_ = *version;
  version_ = std::min(*version, serve::kClientVersion);
  return {};
}

Status ServeConnection::write(std::string_view bytes) {
  return write(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

Status ServeConnection::write(std::span<const std::byte> bytes) {
  if (auto s = stream_.write_all(bytes); !s) return explain(s.error());
  return {};
}

Result<std::vector<std::string>> ServeConnection::read_path_set() {
  auto paths = serve::decode_path_set(reader_);
  if (!paths) return explain(paths.error());
  return paths;
}

Result<std::vector<serve::PathInfo>> ServeConnection::read_path_infos() {
  auto infos = serve::decode_path_infos(reader_, version_);
  if (!infos) return explain(infos.error());
  return infos;
}

Status ServeConnection::read_success() {
  if (auto s = serve::decode_success(reader_); !s) return explain(s.error());
  return {};
}

Status ServeConnection::read_raw(uint64_t size,
                                 const std::function<Status(std::span<const std::byte>)>& sink) {
  if (!chunk_) chunk_ = std::make_unique_for_overwrite<std::byte[]>(kBufferSize);
  while (size > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(size, kBufferSize));
    auto n = fill(std::span(chunk_.get(), want));
    if (!n) return explain(n.error());
    if (*n == 0) return explain(make_error(EPROTO, "unexpected end of stream in a NAR"));
    if (auto s = sink(std::span<const std::byte>(chunk_.get(), *n)); !s) return s;
    size -= *n;
  }
  return {};
}

}  // namespace lazystore
