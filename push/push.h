// The two things lazystore-push does: copy a closure to the server (run_push) and list or expire
// the server's GC roots (run_roots). Both return an outcome with the exit code to use.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "progress.h"
#include "roots.h"
#include "ssh_session.h"

namespace lazystore {

// Exit codes of lazystore-push (also in --help and push/README.md).
enum class ExitCode : int {
  Ok = 0,
  Usage = 2,        // bad arguments, or an argument is not a store path
  LocalStore = 3,   // the local store could not be read (path not valid, nix-store failed)
  Connect = 4,      // alias/host unknown or unreachable, ssh config unreadable
  HostKey = 5,      // host key unknown (without --accept-new-host-key) or changed
  Auth = 6,         // no key was accepted
  Remote = 7,       // the remote command failed or does not speak the serve protocol
  Incomplete = 8,   // the transfer broke off: some paths are missing on the server; rerun
  Roots = 9,        // the paths were copied but the GC root could not be set / listed / deleted
};

struct PushOptions {
  std::vector<std::string> paths;  // store paths or symlinks to them
  SshOptions ssh;
  std::string nix_store = "nix-store";  // local program
  std::string from_store;               // local store URI ("" = nix's default)
  std::string remote_command = "nix-store --serve --write";
  std::string roots_command = "lazystore-roots";
  std::optional<std::string> root;
  bool dry_run = false;
  bool import_paths = false;  // use the older ImportPaths command instead of AddToStoreNar
  Progress::Mode progress = Progress::Mode::Lines;
};

struct PushSummary {
  std::string destination;
  std::vector<std::string> requested;  // resolved store paths
  uint64_t closure_paths = 0;
  uint64_t closure_bytes = 0;           // NAR bytes of the whole closure
  std::vector<std::string> missing;     // paths the server lacked, in sending order
  uint64_t missing_bytes = 0;
  uint64_t copied_paths = 0;            // acknowledged by the server
  uint64_t bytes_sent = 0;
  double seconds = 0;
  uint64_t server_version = 0;
  std::optional<std::string> root;
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
  bool import_paths = false;
};

// Resolves PATH arguments (store paths or symlinks to them) and checks the root name.
Result<PushRequest> make_push_request(const PushOptions& options);

// Holds the serve connections to the local store and to the server. They are opened by the
// first push and kept, so a long-lived Pusher (the --persist master) answers a no-op push with
// one round trip on connections that are already open.
class Pusher {
 public:
  explicit Pusher(PushOptions options);
  ~Pusher();
  Pusher(const Pusher&) = delete;
  Pusher& operator=(const Pusher&) = delete;

  PushOutcome push(const PushRequest& request, Progress& progress);

 private:
  PushOutcome attempt(const PushRequest& request, Progress& progress, bool& retry);
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

struct RootsOptions {
  SshOptions ssh;
  std::string roots_command = "lazystore-roots";
  std::optional<int64_t> older_than_seconds;
  bool remove = false;
  std::vector<std::string> names;  // only these roots (all if empty)
};

struct RootsOutcome {
  ExitCode code = ExitCode::Ok;
  std::string message;
  std::vector<RootEntry> roots;  // listed (matching the filters)
  bool removed = false;          // the listed roots were deleted
};

RootsOutcome run_roots(const RootsOptions& options);

}  // namespace lazystore
