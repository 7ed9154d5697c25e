#include "ctl_mounts.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "control_protocol.h"
#include "io.h"

namespace lazystore {

std::string unescape_mountinfo(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      bool octal = true;
      int value = 0;
      for (size_t k = 1; k <= 3; ++k) {
        char c = field[i + k];
        if (c < '0' || c > '7') octal = false;
        value = value * 8 + (c - '0');
      }
      if (octal && value < 256) {
        out += static_cast<char>(value);
        i += 3;
        continue;
      }
    }
    out += field[i];
  }
  return out;
}

std::vector<MountEntry> parse_mountinfo(std::string_view text) {
  std::vector<MountEntry> out;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTIONS
    std::vector<std::string_view> fields;
    while (!line.empty()) {
      size_t space = line.find(' ');
      if (space != 0) fields.push_back(line.substr(0, space));
      line.remove_prefix(space == std::string_view::npos ? line.size() : space + 1);
    }
    size_t separator = 6;
    while (separator < fields.size() && fields[separator] != "-") ++separator;
    if (fields.size() < 5 || separator + 2 >= fields.size()) continue;
    out.push_back({unescape_mountinfo(fields[4]), unescape_mountinfo(fields[separator + 1]),
                   unescape_mountinfo(fields[separator + 2])});
  }
  return out;
}

Result<std::vector<MountEntry>> read_mountinfo() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return errno_error("/proc/self/mountinfo");
  std::stringstream text;
  text << in.rdbuf();
  return parse_mountinfo(text.str());
}

Result<std::string> mountpoint_path(const std::string& path) {
  if (path.empty()) return make_error(EINVAL, "an empty mount point");
  std::filesystem::path p(path);
  if (p.is_relative()) {
    std::error_code error;
    auto cwd = std::filesystem::current_path(error);
    if (error) return make_error(error.value(), "the current directory: " + error.message());
    p = cwd / p;
  }
  p = p.lexically_normal();
  std::string normal = p.string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  if (normal == "/") return normal;
  // The parent is not in the mount: resolving its symlinks touches only the file system above.
  std::filesystem::path parent = std::filesystem::path(normal).parent_path();
  char resolved[PATH_MAX];
  if (::realpath(parent.c_str(), resolved) == nullptr) return errno_error(parent.string());
  std::string out = resolved;
  if (out != "/") out += "/";
  return out + std::filesystem::path(normal).filename().string();
}

Result<MountEntry> find_lazystore_mount(const std::vector<MountEntry>& mounts, const std::string& mountpoint) {
  const MountEntry* top = nullptr;
  for (const auto& m : mounts) {
    if (m.mountpoint == mountpoint) top = &m;  // later lines are mounted on top
  }
  if (top == nullptr) return make_error(ENOENT, "nothing is mounted at " + mountpoint);
  if (top->fstype != kLazystoreFsType) {
    return make_error(ENOENT, mountpoint + " is a " + top->fstype + " mount (" + top->source + "), not lazystore");
  }
  return *top;
}

std::vector<MountEntry> lazystore_mounts(const std::vector<MountEntry>& mounts) {
  std::vector<MountEntry> out;
  for (const auto& m : mounts) {
    if (m.fstype == kLazystoreFsType) out.push_back(m);
  }
  return out;
}

namespace {

Result<std::string> stats_xattr(const std::string& mountpoint) {
  constexpr const char* kName = "user.lazystore.stats";
  for (int attempt = 0; attempt < 4; ++attempt) {
    ssize_t size = ::getxattr(mountpoint.c_str(), kName, nullptr, 0);
    if (size < 0) return errno_error("reading " + std::string(kName) + " of " + mountpoint);
    std::string value(static_cast<size_t>(size) + 4096, '\0');  // it may grow in between
    ssize_t got = ::getxattr(mountpoint.c_str(), kName, value.data(), value.size());
    if (got >= 0) {
      value.resize(static_cast<size_t>(got));
      return value;
    }
    if (errno != ERANGE) return errno_error("reading " + std::string(kName) + " of " + mountpoint);
  }
  return make_error(ERANGE, "user.lazystore.stats of " + mountpoint + " keeps growing");
}

}  // namespace

Result<std::string> control_socket_of(const std::string& mountpoint, std::chrono::milliseconds timeout) {
  // getxattr is a FUSE request: a stuck server would hold it for ever. It runs on a thread of
  // its own; past the deadline that thread is left behind (and ends with the process).
  struct Shared {
    std::mutex mutex;
    std::condition_variable done;
    std::optional<Result<std::string>> result;
  };
  auto shared = std::make_shared<Shared>();
  std::thread([shared, mountpoint] {
    auto value = stats_xattr(mountpoint);
    std::lock_guard lock(shared->mutex);
    shared->result = std::move(value);
    shared->done.notify_all();
  }).detach();
  std::unique_lock lock(shared->mutex);
  if (!shared->done.wait_for(lock, timeout, [&] { return shared->result.has_value(); })) {
    return make_error(ETIMEDOUT, "the mount at " + mountpoint + " does not answer (within " +
                                     std::to_string(timeout.count() / 1000.0).substr(0, 4) + " s)");
  }
  auto value = std::move(*shared->result);
  lock.unlock();
  if (!value) return value.error();
  auto parsed = parse_json_line(*value);
  if (!parsed) return make_error(EPROTO, "user.lazystore.stats of " + mountpoint + ": " + parsed.error().message);
  auto stats = result_as<StatsSnapshot>(*parsed);
  if (!stats) return stats.error();
  if (stats->mount.control_socket.empty()) {
    return make_error(EPROTO, "the mount at " + mountpoint + " names no control socket (an older lazystore?)");
  }
  return stats->mount.control_socket;
}

}  // namespace lazystore
