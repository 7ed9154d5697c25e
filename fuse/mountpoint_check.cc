#include "mountpoint_check.h"

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

namespace lazystore {
namespace {

// A FUSE mount answers stat through its daemon, which may hang: the check does not wait longer.
constexpr auto kStatDeadline = std::chrono::seconds(5);

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

struct StatAnswer {
  int error = 0;  // errno of stat(2), 0 on success
  struct stat st {};
};

// stat(2) on its own thread, waited for at most `deadline`; nullopt when it did not answer
// (the thread is then left behind: the caller refuses the mount and the process exits).
std::optional<StatAnswer> stat_within(const std::string& path, std::chrono::seconds deadline) {
  auto answer = std::make_shared<std::promise<StatAnswer>>();
  std::future<StatAnswer> future = answer->get_future();
  std::thread worker([answer, path] {
    StatAnswer out;
    if (::stat(path.c_str(), &out.st) != 0) out.error = errno;
    answer->set_value(out);
  });
  if (future.wait_for(deadline) != std::future_status::ready) {
    worker.detach();
    return std::nullopt;
  }
  worker.join();
  return future.get();
}

}  // namespace

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
    found = MountEntry{parts[separator + 1], unescape(parts[separator + 2])};  // the last is on top
  }
  return found;
}

Status check_mountpoint(const std::string& mountpoint) {
  auto entry = mount_at(mountpoint);
  StatAnswer answer;
  if (entry && entry->fstype.starts_with("fuse")) {
    auto answered = stat_within(mountpoint, kStatDeadline);
    if (!answered) {
      return make_error(EBUSY, mountpoint + " is a FUSE mount (" + entry->fstype + " of " + entry->source +
                                   ") that does not answer: not mounting over it");
    }
    answer = *answered;
  } else if (::stat(mountpoint.c_str(), &answer.st) != 0) {
    answer.error = errno;
  }
  if (answer.error == ENOENT) return make_error(ENOENT, "mount point " + mountpoint + " does not exist");
  if (answer.error != 0) {
    return make_error(answer.error, "mount point " + mountpoint + ": " + std::strerror(answer.error));
  }
  if (S_ISREG(answer.st.st_mode)) {
    return make_error(ENOTDIR, "mount point " + mountpoint + " is a regular file: the store mounts on a directory");
  }
  if (!S_ISDIR(answer.st.st_mode)) {
    return make_error(ENOTDIR, "mount point " + mountpoint + " is not a directory");
  }
  if (entry && entry->fstype == "fuse.lazystore") {
    return make_error(EBUSY, mountpoint + " is already a lazystore mount (of " + entry->source +
                                 "); unmount it first: fusermount3 -u " + mountpoint);
  }
  return {};
}

}  // namespace lazystore
