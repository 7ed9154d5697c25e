// Before mounting: is MOUNTPOINT a place the store can go? It must be a directory (FUSE would
// mount on a regular file too) and not a lazystore mount already; otherwise the mount is refused
// with one line that says why, instead of libfuse's "cannot mount on …". A dead FUSE mount there
// ("Transport endpoint is not connected": its daemon is gone) is unmounted when it is a
// lazystore mount (its daemon and its unmount guard were killed); any other is refused with the
// command that clears it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "result.h"

namespace lazystore {

// The mount on top at `path` (as /proc/self/mountinfo lists it), if any.
struct MountEntry {
  std::string fstype;  // "fuse.lazystore", "tmpfs", ...
  std::string source;  // the fsname, e.g. lazystore's SOURCE
  std::string id;      // the mount ID and the device ("0:44"): together, this mount and no
  std::string device;  // other, while it is mounted
};
std::optional<MountEntry> mount_at(const std::string& path);

// statx(2) of `path` with AT_STATX_FORCE_SYNC, so that a FUSE mount's daemon is asked (the kernel
// would answer from cached attributes even for a dead mount), on its own thread, waited for at
// most `deadline`. nullopt: no answer in time (the thread is left behind; the caller gives up).
struct PathAnswer {
  int error = 0;  // errno, 0 on success; ENOTCONN: a FUSE mount whose daemon is gone
  mode_t mode = 0;
};
std::optional<PathAnswer> ask_path(const std::string& path, std::chrono::milliseconds deadline);

Status check_mountpoint(const std::string& mountpoint);

}  // namespace lazystore
