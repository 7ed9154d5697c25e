// One server process: opens the upstream and the caches, then answers FUSE requests until the
// mount ends. Unsupervised it mounts (and daemonizes) by itself; under a supervisor it serves
// the session the supervisor mounted and holds (`takeover`), and may be one of several in turn.
#pragma once

#include <string>
#include <vector>

#include "options.h"
#include "session_takeover.h"

namespace lazystore {

// `fuse_argv`: what libfuse's session parses (argv[0], -o mount options, -d), see FuseArgs.
// Returns the process exit status: 0 when the mount ended normally.
int serve(const MountOptions& options, const std::vector<std::string>& fuse_argv, const Takeover* takeover);

}  // namespace lazystore
