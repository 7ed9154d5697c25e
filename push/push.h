// What lazystore-push does: copy the closure of store paths to the server, only what it lacks,
// and set a GC root there (run_push, or a Pusher that keeps its connections open).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "destination.h"
#include "exit_code.h"
#include "progress.h"
#include "ssh_session.h"

namespace lazystore {

// Which protocol the server is spoken to in: the daemon's (ssh-ng://) where the server runs
// `nix-daemon --stdio` for us, else the serve protocol (Auto); or only one of them.
enum class Protocol { Auto, Daemon, Serve };

struct PushOptions {
  std::vector<std::string> paths;  // store paths or symlinks to them
  SshOptions ssh;
  std::string nix_store = "nix-store";  // local program
  std::string from_store;               // local store URI ("" = nix's default)
  Protocol protocol = Protocol::Auto;
  std::string daemon_command = "nix-daemon --stdio";
  std::string remote_command = "nix-store --serve --write";  // the serve protocol's
  std::string roots_command = "lazystore-roots";
  std::optional<std::string> root;
  bool dry_run = false;
  bool import_paths = false;  // the serve protocol's older ImportPaths instead of AddToStoreNar
  Progress::Mode progress = Progress::Mode::Lines;
};

struct PushSummary {
  std::string destination;
  std::vector<std::string> requested;  // resolved store paths
  uint64_t closure_paths = 0;
  uint64_t closure_bytes = 0;        // NAR bytes of the whole closure
  std::vector<std::string> missing;  // paths the server lacked, in sending order
  uint64_t missing_bytes = 0;
  uint64_t copied_paths = 0;  // acknowledged by the server
  uint64_t bytes_sent = 0;
  double seconds = 0;
  std::string protocol;            // "daemon" (nix-daemon --stdio) or "serve" (nix-store --serve)
  std::string server_version;      // the protocol version the server answered ("1.34", "2.7")
  std::string server_nix_version;  // Nix's version, where the protocol says it ("2.8.0")
  std::optional<std::string> root;
  bool dry_run = false;
  bool persistent = false;         // went through a persistent connection
  bool connection_reused = false;  // on a connection to the server that was already open
};

struct PushOutcome {
  ExitCode code = ExitCode::Ok;
  std::string message;  // one line when code != Ok
  PushSummary summary;
};

// What one push asks for (paths already resolved to store paths).
struct PushRequest {
  std::vector<std::string> paths;
  std::optional<std::string> root;
  bool dry_run = false;
};

// Resolves PATH arguments (store paths or symlinks to them) and checks the root name.
Result<PushRequest> make_push_request(const PushOptions& options);

// Holds the connections to the local store (nix-store --serve, a pipe) and to the server (one
// SSH session; nix-daemon --stdio or nix-store --serve --write on a channel of it). They are
// opened by the first push and kept, so a long-lived Pusher (the persistent connection) answers
// a no-op push with one round trip on connections that are already open.
class Pusher {
 public:
  explicit Pusher(PushOptions options);
  ~Pusher();
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  PushOutcome push(const PushRequest& request, Progress& progress);

 private:
  PushOutcome attempt(const PushRequest& request, Progress& progress, bool& retry);
  Result<std::unique_ptr<Destination>> open_destination(SshSession& session, Protocol protocol);
  void drop_local();
  void drop_remote();

  PushOptions options_;
  struct Local;
  struct Remote;
  std::unique_ptr<Local> local_;
  std::unique_ptr<Remote> remote_;
};

// One push on fresh connections (what lazystore-push does without --persist).
PushOutcome run_push(const PushOptions& options);

}  // namespace lazystore
