// The root commands of lazystore-push, over the server's roots command (roots.h): a push's
// `--root NAME`, and `lazystore-push roots` (list, expire and delete the server's roots,
// lazystore's own and rules_nixpkgs').
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "exit_code.h"
#include "roots.h"
#include "ssh_session.h"

namespace lazystore {

// Points root NAME at exactly `paths` (one `lazystore-roots add` on a new channel of `session`).
Status set_root(SshSession& session, const std::string& roots_command, const std::string& root,
                const std::vector<std::string>& paths);

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
  std::vector<RootEntry> roots;      // listed (matching the filters)
  std::vector<std::string> deleted;  // what the server deleted (it re-checks the age itself)
};

RootsOutcome run_roots(const RootsOptions& options);

}  // namespace lazystore
