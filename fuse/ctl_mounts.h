// lazystore-ctl -m MOUNTPOINT: the mount is found in /proc/self/mountinfo (type fuse.lazystore,
// the top-most mount at that path), and its control socket is what the mount root's
// `user.lazystore.stats` names (mount.control_socket): the daemon says itself where it listens,
// whatever its -o cache= or -o control= were.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace lazystore {

struct MountEntry {
  std::string mountpoint;
  std::string fstype;
  std::string source;
  bool operator==(const MountEntry&) const = default;
};

inline constexpr std::string_view kLazystoreFsType = "fuse.lazystore";

// The lines of /proc/self/mountinfo (proc(5)), in order; malformed lines are skipped.
std::vector<MountEntry> parse_mountinfo(std::string_view text);
Result<std::vector<MountEntry>> read_mountinfo();
// Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134).
std::string unescape_mountinfo(std::string_view field);

// `path` as mountinfo names it — absolute, normalized, its parent's symlinks resolved — without
// touching the mount itself (a stuck daemon must not hang lazystore-ctl).
Result<std::string> mountpoint_path(const std::string& path);

// The top-most mount at `mountpoint` if it is a lazystore mount; ENOENT with what is there.
Result<MountEntry> find_lazystore_mount(const std::vector<MountEntry>& mounts, const std::string& mountpoint);
std::vector<MountEntry> lazystore_mounts(const std::vector<MountEntry>& mounts);

// The control socket the mount at `mountpoint` announces; ETIMEDOUT when the mount does not
// answer within `timeout`.
Result<std::string> control_socket_of(const std::string& mountpoint, std::chrono::milliseconds timeout);

}  // namespace lazystore
