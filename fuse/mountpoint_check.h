// Before mounting: is MOUNTPOINT a place the store can go? It must be a directory (FUSE would
// mount on a regular file too) and not a lazystore mount already; otherwise the mount is refused
// with one line that says why, instead of libfuse's "cannot mount on …". A dead FUSE mount there
// ("Transport endpoint is not connected": its daemon is gone) is unmounted when it is a
// lazystore mount (its daemon and its unmount guard were killed); any other is refused with the
// command that clears it.
#pragma once

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

Status check_mountpoint(const std::string& mountpoint);

}  // namespace lazystore
