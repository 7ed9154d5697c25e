// A worker-protocol client over a ByteStream: the server's `nix-daemon --stdio` on an SSH channel
// (what an ssh-ng:// store talks to). Requests may be pipelined: write several, then read the
// answers in order; each answer comes after the daemon's log messages up to STDERR_LAST.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "byte_stream.h"
#include "result.h"
#include "wire_connection.h"
#include "worker_protocol.h"

namespace lazystore {

// read_hello's error when the stream ended before its first byte: the server refused the
// command (an older forced command) or has no nix-daemon. The serve protocol may still work.
inline constexpr int kNoDaemon = ENOPROTOOPT;
// An error the daemon reported (STDERR_ERROR): the request failed, the connection is usable.
inline constexpr int kDaemonError = EREMOTEIO;

class DaemonConnection final : public WireConnection {
 public:
  // `peer` names the other side in messages ("server").
  DaemonConnection(ByteStream& stream, std::string peer);

  // Reads the daemon's hello (after the client's, worker::encode_client_hello) and the log
  // messages after it. kNoDaemon if nothing came at all; EPROTO for a daemon older than
  // worker::kMinServerVersion.
  Status read_hello();
  const std::string& nix_version() const { return nix_version_; }

  // Reads the log messages of one request up to STDERR_LAST; STDERR_ERROR becomes a
  // kDaemonError with the daemon's message.
  Status read_until_last();
  Result<std::vector<std::string>> read_path_set();  // read_until_last, then a path set
  Status read_one();                                 // read_until_last, then the u64 1

  // What the daemon reported (kDaemonError) stands as it is; other errors get the peer's stderr.
  Error explain(const Error& error) override;

 private:
  std::string nix_version_;
};

}  // namespace lazystore
