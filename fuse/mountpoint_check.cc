#include "mountpoint_check.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "log.h"

namespace lazystore {
namespace {

// A FUSE mount answers stat through its daemon, which may hang: the check does not wait longer.
constexpr auto kStatDeadline = std::chrono::milliseconds(5000);
// Dead lazystore mounts stacked at one mount point that are cleared before giving up.
constexpr int kMaxDeadMounts = 8;

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    auto octal = [&](size_t k) { return field[i + k] >= '0' && field[i + k] <= '7'; };
    if (field[i] == '\\' && i + 3 < field.size() && octal(1) && octal(2) && octal(3)) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// A FUSE mount's daemon answers (and may hang): asked with a deadline. Others: plain stat(2).
std::optional<PathAnswer> ask_mountpoint(const std::string& mountpoint, const std::optional<MountEntry>& entry) {
  if (entry && entry->fstype.starts_with("fuse")) return ask_path(mountpoint, kStatDeadline);
  PathAnswer answer;
  struct stat st {};
  if (::stat(mountpoint.c_str(), &st) != 0) answer.error = errno;
  answer.mode = st.st_mode;
  return answer;
}

// What a mount point that answered stat (other than ENOTCONN) allows.
Status judge(const std::string& mountpoint, const std::optional<MountEntry>& entry, const PathAnswer& answer) {
  if (answer.error == ENOENT) return make_error(ENOENT, "mount point " + mountpoint + " does not exist");
  if (answer.error != 0) {
    return make_error(answer.error, "mount point " + mountpoint + ": " + std::strerror(answer.error));
  }
  if (S_ISREG(answer.mode)) {
    return make_error(ENOTDIR, "mount point " + mountpoint + " is a regular file: the store mounts on a directory");
  }
  if (!S_ISDIR(answer.mode)) return make_error(ENOTDIR, "mount point " + mountpoint + " is not a directory");
  if (entry && entry->fstype == "fuse.lazystore") {
    return make_error(EBUSY, mountpoint + " is already a lazystore mount (of " + entry->source +
                                 "); unmount it first: fusermount3 -u " + mountpoint);
  }
  return {};
}

}  // namespace

std::optional<PathAnswer> ask_path(const std::string& path, std::chrono::milliseconds deadline) {
  auto answer = std::make_shared<std::promise<PathAnswer>>();
  std::future<PathAnswer> future = answer->get_future();
  std::thread worker([answer, path] {
    PathAnswer out;
    struct statx st {};
    if (::statx(AT_FDCWD, path.c_str(), AT_STATX_FORCE_SYNC, STATX_TYPE | STATX_MODE, &st) != 0) {
      out.error = errno;
    }
    out.mode = st.stx_mode;
    answer->set_value(out);
  });
  if (future.wait_for(deadline) != std::future_status::ready) {
    worker.detach();
    return std::nullopt;
  }
  worker.join();
  return future.get();
}

std::optional<MountEntry> mount_at(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::optional<MountEntry> found;
  std::string line;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::vector<std::string> parts;
    for (std::string field; fields >> field;) parts.push_back(field);
    if (parts.size() < 10 || unescape(parts[4]) != path) continue;
    size_t separator = 6;
    while (separator < parts.size() && parts[separator] != "-") ++separator;
    if (separator + 2 >= parts.size()) continue;
    found = MountEntry{parts[separator + 1], unescape(parts[separator + 2]), parts[0], parts[2]};  // last: on top
  }
  return found;
}

Status check_mountpoint(const std::string& mountpoint) {
  for (int cleared = 0;; ++cleared) {
    auto entry = mount_at(mountpoint);
    auto answer = ask_mountpoint(mountpoint, entry);
    if (!answer) {
      return make_error(EBUSY, mountpoint + " is a FUSE mount (" + entry->fstype + " of " + entry->source +
                                   ") that does not answer: not mounting over it");
    }
    if (answer->error != ENOTCONN) return judge(mountpoint, entry, *answer);
    // A dead FUSE mount: its daemon is gone and nothing can answer through it again.
    std::string what = entry ? entry->fstype + " of " + entry->source : "FUSE";
    if (!entry || entry->fstype != "fuse.lazystore" || cleared >= kMaxDeadMounts) {
      return make_error(ENOTCONN, mountpoint + " is a dead FUSE mount (" + what + ": " + std::strerror(ENOTCONN) +
                                      "): its daemon is gone; clear it with: fusermount3 -u " + mountpoint);
    }
    // One of ours whose unmount guard was killed too (or is just unmounting it: EINVAL).
    if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
      return make_error(errno, mountpoint + " is a dead lazystore mount (of " + entry->source +
                                   ") and unmounting it failed: " + std::strerror(errno));
    }
    LOG_WARNING("%s was a dead lazystore mount (of %s; its daemon was killed): unmounted it", mountpoint.c_str(),
                entry->source.c_str());
  }
}

}  // namespace lazystore
