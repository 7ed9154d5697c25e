#include "wire_connection.h"

namespace lazystore {

WireConnection::WireConnection(ByteStream& stream, std::string peer, std::string_view protocol)
    : stream_(stream), peer_(std::move(peer)), buffered_(stream), reader_(buffered_.source(), protocol) {}

Error WireConnection::explain(const Error& error) {
  std::string tail = stream_.stderr_tail();
  std::string message = peer_ + ": " + error.message;
  if (!tail.empty()) message = peer_ + ": " + tail + " (" + error.message + ")";
  return make_error(error.code, message);
}

Status WireConnection::write(std::string_view bytes) {
  return write(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

Status WireConnection::write(std::span<const std::byte> bytes) {
  if (auto s = stream_.write_all(bytes); !s) return explain(s.error());
  return {};
}

}  // namespace lazystore
