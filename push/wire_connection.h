// What the two protocol clients (DaemonConnection, ServeConnection) share: a ByteStream read
// through one BufferedReader into a WireReader, the peer's name in messages, the versions of the
// hello, and writes whose failures are explained with the peer's stderr.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "buffered_reader.h"
#include "byte_stream.h"
#include "nix_wire.h"
#include "result.h"

namespace lazystore {

class WireConnection {
 public:
  WireConnection(const WireConnection&) = delete;
  WireConnection& operator=(const WireConnection&) = delete;

  uint64_t version() const { return version_; }                // negotiated (the lower)
  uint64_t server_version() const { return server_version_; }  // what the server said

  Status write(std::string_view bytes);
  Status write(std::span<const std::byte> bytes);

  // Adds what the peer said on stderr to a failed read or write.
  virtual Error explain(const Error& error);

 protected:
  // `peer` names the other side in messages ("server"); `protocol` names the protocol in the
  // reader's.
  WireConnection(ByteStream& stream, std::string peer, std::string_view protocol);
  virtual ~WireConnection() = default;

  ByteStream& stream_;
  std::string peer_;
  BufferedReader buffered_;
  wire::WireReader reader_;
  uint64_t version_ = 0;
  uint64_t server_version_ = 0;
};

}  // namespace lazystore
