// The mount goes with its daemon: after a kill -9 of the supervisor (or of every lazystore
// process), nothing is left behind as "Transport endpoint is not connected".
//
// Right after mounting, the mounting process starts a small guard process (`lazystore-unmount-
// guard`, the same binary) that holds the read end of a pipe whose write end only the mounting
// process (the supervisor, or an unsupervised server) keeps. When that process is gone in any
// way, the pipe ends, and the guard unmounts the mount it was started for — the mount at that
// place with its mount ID and device whose root answers ENOTCONN (the daemon is gone); a later
// mount that was given the same ID and device answers, and is left alone — unless it is gone
// already (a normal unmount). A crashed server does not end the mount: the supervisor holds
// the pipe.
//
// libfuse's auto_unmount (fusermount3's watchdog) is not used: it unmounts only when opening the
// mount point answers ENOTCONN, which races with the dying daemon's last close of /dev/fuse and
// never happens once the kernel stops asking for OPENDIR; and it needs fusermount3 to mount.
#pragma once

#include <string>
#include <string_view>

#include "fd.h"
#include "result.h"

namespace lazystore {

inline constexpr std::string_view kUnmountGuardFlag = "--unmount-guard";

// Starts the guard of the mount just made at `mountpoint` (single-threaded: it forks). Returns
// the pipe's write end, to keep open for as long as the mount lives and to let no other
// long-lived process inherit (a server closes it). `log_file`: -o log=FILE, or empty.
Result<Fd> start_unmount_guard(const std::string& mountpoint, const std::string& log_file);

// main() of the guard: `lazystore-unmount-guard --unmount-guard MOUNTPOINT ID DEVICE [LOGFILE]`
// with the pipe's read end at fd 3.
int run_unmount_guard(int argc, char* argv[]);

}  // namespace lazystore
