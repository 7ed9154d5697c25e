// Before mounting: is MOUNTPOINT a place the store can go? It must be a directory (FUSE would
// mount on a regular file too) and not a lazystore mount already; otherwise the mount is refused
// with one line that says why, instead of libfuse's "cannot mount on …".
#pragma once

#include <optional>
#include <string>

#include "result.h"

namespace lazystore {

// The mount on top at `path` (as /proc/self/mountinfo lists it), if any.
struct MountEntry {
  std::string fstype;  // "fuse.lazystore", "tmpfs", ...
  std::string source;  // the fsname, e.g. lazystore's SOURCE
};
std::optional<MountEntry> mount_at(const std::string& path);

Status check_mountpoint(const std::string& mountpoint);

}  // namespace lazystore
