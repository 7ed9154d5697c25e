// The server's side of a push, over one channel of the SSH session: Nix's daemon protocol
// (`nix-daemon --stdio`, DaemonDestination) or its serve protocol (`nix-store --serve --write`,
// ServeDestination). The local store is always read through `nix-store --serve` (a pipe).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "path_info.h"
#include "progress.h"
#include "result.h"
#include "serve_connection.h"
#include "ssh_session.h"

namespace lazystore {

class Destination {
 public:
  virtual ~Destination() = default;

  virtual const char* protocol() const = 0;  // "daemon" or "serve"
  // Sends the hello; does not wait, so a request may follow at once.
  virtual Status start() = 0;
  // Asks which of `paths` the server has. With `lock`, the server first holds temporary roots
  // on them for the rest of the session, so its GC cannot take them before the push's root is
  // set.
  virtual Status send_query(const std::vector<std::string>& paths, bool lock) = 0;
  // Reads the hello (the first time) and the answer to send_query.
  virtual Result<std::vector<std::string>> read_valid() = 0;
  // After the hello: the protocol version ("1.34") and Nix's own, where the protocol says it.
  virtual std::string version() const = 0;
  virtual std::string nix_version() const { return ""; }
  // Sends `missing` in this order, their NARs streamed from `local`; counts what the server
  // confirmed and what was sent.
  virtual Status send(ServeConnection& local, const std::vector<PathInfo>& missing, Progress& progress,
                      uint64_t& confirmed_paths, uint64_t& bytes_sent) = 0;
  // EOF on the server process's stdin: it exits.
  virtual void close() = 0;
};

}  // namespace lazystore
