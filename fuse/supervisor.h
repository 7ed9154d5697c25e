// The supervisor of a mount: the process that mounts and holds /dev/fuse for the mount's whole
// life, and runs the server (serve()) in a child process that it restarts when it dies.
//
// A `kill -9` or a crash of the server therefore does not end the mount: requests wait in the
// kernel's queue, the next server takes the session over (session_takeover.h) with the same
// inode numbers (inode_journal.h), file handles (handle_table.h) and cache, and answers them.
// The mount ends when it is unmounted, when the supervisor gets SIGTERM/SIGINT/SIGHUP, or when
// a server exits by itself with status 0.
#pragma once

#include <string>
#include <vector>

#include "options.h"

namespace lazystore {

// Returns the exit status of the `lazystore` command (in the foreground: when the mount ended;
// daemonized: once the first server serves, or failed to start).
int supervise(const MountOptions& options, const std::vector<std::string>& fuse_argv);

}  // namespace lazystore
