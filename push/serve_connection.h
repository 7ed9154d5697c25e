// A serve-protocol client over a ByteStream: the local `nix-store --serve` (a pipe) or the
// server's `nix-store --serve --write` (an SSH channel). Requests may be pipelined: write several,
// then read the answers in order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "buffered_reader.h"
#include "byte_stream.h"
#include "result.h"
#include "serve_protocol.h"

namespace lazystore {

class ServeConnection {
 public:
  // `peer` names the other side in messages ("local nix-store", "server").
  ServeConnection(ByteStream& stream, std::string peer);
  ServeConnection(const ServeConnection&) = delete;
  ServeConnection& operator=(const ServeConnection&) = delete;

  // Sends the client hello (does not wait: a request may follow at once).
  Status send_hello();
  // Reads the server hello; after this, version() is the negotiated version.
  Status read_hello();
  uint64_t version() const { return version_; }                 // negotiated (the lower)
  uint64_t server_version() const { return server_version_; }  // what the server said

  Status write(std::string_view bytes);
  Status write(std::span<const std::byte> bytes);

  Result<std::vector<std::string>> read_path_set();
  Result<std::vector<serve::PathInfo>> read_path_infos();
  Status read_success();
  // Reads exactly `size` raw bytes (a NAR) and hands them to `sink` in pieces.
  Status read_raw(uint64_t size, const std::function<Status(std::span<const std::byte>)>& sink);

  // Adds what the peer said on stderr to a failed read or write.
  Error explain(const Error& error);

 private:
  ByteStream& stream_;
  std::string peer_;
  BufferedReader buffered_;
  serve::WireReader reader_;
  uint64_t version_ = 0;
  uint64_t server_version_ = 0;
};

}  // namespace lazystore
