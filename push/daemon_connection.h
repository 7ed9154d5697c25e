// A worker-protocol client over a ByteStream: the server's `nix-daemon --stdio` on an SSH channel
// (what an ssh-ng:// store talks to). Requests may be pipelined: write several, then read the
// answers in order; each answer comes after the daemon's log messages up to STDERR_LAST.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "buffered_reader.h"
#include "byte_stream.h"
#include "result.h"
#include "worker_protocol.h"

namespace lazystore {

// read_hello's error when the stream ended before its first byte: the server refused the
// command (an older forced command) or has no nix-daemon. The serve protocol may still work.
inline constexpr int kNoDaemon = ENOPROTOOPT;
// An error the daemon reported (STDERR_ERROR): the request failed, the connection is usable.
inline constexpr int kDaemonError = EREMOTEIO;

class DaemonConnection {
 public:
  // `peer` names the other side in messages ("server").
  DaemonConnection(ByteStream& stream, std::string peer);
  DaemonConnection(const DaemonConnection&) = delete;
  DaemonConnection& operator=(const DaemonConnection&) = delete;

  // Sends the client hello (does not wait: requests may follow at once).
  Status send_hello();
  // Reads the daemon's hello and the log messages after it. kNoDaemon if nothing came at all;
  // EPROTO for a daemon older than worker::kMinServerVersion.
  Status read_hello();
  uint64_t version() const { return version_; }  // negotiated (the lower)
  uint64_t server_version() const { return server_version_; }
  const std::string& nix_version() const { return nix_version_; }

  Status write(std::string_view bytes);
  Status write(std::span<const std::byte> bytes);

  // Reads the log messages of one request up to STDERR_LAST; STDERR_ERROR becomes a
  // kDaemonError with the daemon's message.
  Status read_until_last();
  Result<std::vector<std::string>> read_path_set();  // read_until_last, then a path set
  Status read_one();                                 // read_until_last, then the u64 1

  // Adds what the peer said on stderr to a failed read or write.
  Error explain(const Error& error);

 private:
  ByteStream& stream_;
  std::string peer_;
  BufferedReader buffered_;
  worker::WireReader reader_;
  uint64_t version_ = 0;
  uint64_t server_version_ = 0;
  std::string nix_version_;
};

}  // namespace lazystore
