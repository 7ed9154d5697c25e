#include "serve_connection.h"

#include <algorithm>

namespace lazystore {

ServeConnection::ServeConnection(ByteStream& stream, std::string peer)
    : WireConnection(stream, std::move(peer), "serve protocol") {}

Status ServeConnection::send_hello() { return write(serve::encode_client_hello()); }

Status ServeConnection::read_hello() {
  auto version = serve::decode_server_hello(reader_);
  if (!version) return explain(version.error());
  server_version_ = *version;
  version_ = std::min(*version, serve::kClientVersion);
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

Status ServeConnection::read_raw(uint64_t size, const std::function<Status(std::span<const std::byte>)>& sink) {
  // The peer's failures are explained with its stderr; the sink's are its own.
  bool sink_failed = false;
  auto status = buffered_.read_raw(size, [&](std::span<const std::byte> data) {
    auto s = sink(data);
    sink_failed = !s;
    return s;
  });
  if (!status && !sink_failed) return explain(status.error());
  return status;
}

}  // namespace lazystore
