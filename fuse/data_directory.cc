#include "data_directory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <tuple>

#include "dir_names.h"
#include "io.h"
#include "log.h"
#include "open_beneath.h"

namespace lazystore {
namespace {

// A stray directory deeper than this is left for the operator (and logged).
constexpr int kMaxStrayDepth = 32;

bool is_hex(std::string_view name) {
  return std::all_of(name.begin(), name.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Removes `name` in `dir_fd` and, for a directory, all it holds; never follows a symlink (a
// link is removed itself, never what it points to).
void remove_stray(int dir_fd, const std::string& name, const std::string& what, int depth = 0) {
  struct stat st {};
  if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (depth > kMaxStrayDepth) {
      LOG_WARNING("stray directory %s in the cache is nested too deeply: left in place", what.c_str());
      return;
    }
    Fd sub(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return;
    int sub_fd = sub.get();
    Fd listing(dup(sub_fd));
    if (auto names = dir_names(std::move(listing), what)) {
      for (const std::string& child : *names) remove_stray(sub_fd, child, what + "/" + child, depth + 1);
    }
    if (unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      LOG_WARNING("removing stray directory %s from the cache: %s", what.c_str(), std::strerror(errno));
    }
    return;
  }
  if (unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
    LOG_WARNING("removing stray file %s from the cache: %s", what.c_str(), std::strerror(errno));
  }
}

}  // namespace

Result<DataDirectory> DataDirectory::open(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return make_error(ec.value(), "cache directory " + path + ": " + ec.message());
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP || errno == ENOTDIR) {
      return make_error(ENOTDIR, "cache directory " + path + " is a symlink or not a directory");
    }
    return errno_error("cache directory " + path);
  }
  return DataDirectory(path, std::move(fd));
}

bool DataDirectory::is_id(std::string_view name) { return name.size() == 32 && is_hex(name); }

std::string DataDirectory::path_of(const std::string& id) const { return path_ + "/" + id.substr(0, 2) + "/" + id; }

Result<Fd> DataDirectory::open_file(const std::string& id, bool create) const {
  std::string relative = id.substr(0, 2) + "/" + id;
  int flags = O_RDWR | (create ? O_CREAT : 0);
  auto fd = open_beneath(fd_.get(), relative, flags, 0600);
  if (!fd && create && fd.error().code == ENOENT) {
    if (mkdirat(fd_.get(), id.substr(0, 2).c_str(), 0700) != 0 && errno != EEXIST) {
      return errno_error("cache directory " + path_ + "/" + id.substr(0, 2));
    }
    fd = open_beneath(fd_.get(), relative, flags, 0600);
  }
  if (!fd) return make_error(fd.error().code, "cache file " + path_of(id) + ": " + std::strerror(fd.error().code));
  return fd;
}

Status DataDirectory::remove(const std::string& id) const {
  auto sub = open_beneath(fd_.get(), id.substr(0, 2), O_RDONLY | O_DIRECTORY);
  if (!sub) {
    if (sub.error().code == ENOENT) return {};
    return make_error(sub.error().code, "removing " + path_of(id) + ": " + std::strerror(sub.error().code));
  }
  if (unlinkat(sub->get(), id.c_str(), 0) != 0 && errno != ENOENT) return errno_error("removing " + path_of(id));
  return {};
}

Result<std::vector<DataDirectory::Found>> DataDirectory::scan() const {
  std::vector<Found> found;
  auto subs = dir_names(Fd(dup(fd_.get())), path_);
  if (!subs) return subs.error();
  for (const std::string& prefix : *subs) {
    std::string sub_path = path_ + "/" + prefix;
    struct stat st {};
    if (fstatat(fd_.get(), prefix.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISDIR(st.st_mode) || prefix.size() != 2 || !is_hex(prefix)) {
      // A link is removed as a link: whatever it points to, outside the cache, stays.
      LOG_WARNING("removing stray %s from the cache", sub_path.c_str());
      remove_stray(fd_.get(), prefix, sub_path);
      continue;
    }
    Fd sub(openat(fd_.get(), prefix.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return errno_error("scanning cache " + sub_path);
    int sub_fd = sub.get();
    auto names = dir_names(Fd(dup(sub_fd)), sub_path);
    if (!names) return names.error();
    for (const std::string& name : *names) {
      if (fstatat(sub_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (!S_ISREG(st.st_mode) || !is_id(name) || name.substr(0, 2) != prefix) {
        LOG_WARNING("removing stray file %s from the cache", (sub_path + "/" + name).c_str());
        remove_stray(sub_fd, name, sub_path + "/" + name);
        continue;
      }
      found.push_back({name, static_cast<uint64_t>(st.st_blocks) * 512, st.st_mtim});
    }
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return std::tie(a.mtime.tv_sec, a.mtime.tv_nsec) < std::tie(b.mtime.tv_sec, b.mtime.tv_nsec);
  });
  return found;
}

uint64_t DataDirectory::free_bytes() const {
  struct statvfs st {};
  if (fstatvfs(fd_.get(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace lazystore
