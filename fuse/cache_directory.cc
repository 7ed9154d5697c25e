#include "cache_directory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "io.h"

namespace lazystore {
namespace {

constexpr auto kLockWait = std::chrono::seconds(3);

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// `name` beneath `parent`: made (mode 0700) when missing, and a real directory of ours, never a
// link. An error says why not.
Status subdirectory(int parent, const std::string& name, const std::string& what) {
  if (mkdirat(parent, name.c_str(), 0700) != 0 && errno != EEXIST) return errno_error("cache directory " + what);
  struct stat st {};
  if (fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno_error("cache directory " + what);
  if (!S_ISDIR(st.st_mode)) {
    return make_error(ENOTDIR, "cache directory " + what + " is " +
                                   (S_ISLNK(st.st_mode) ? "a symlink" : "not a directory") +
                                   ": refusing to use it (remove it and lazystore makes it again)");
  }
  if (st.st_uid != geteuid()) {
    return make_error(EPERM, "cache directory " + what + " is owned by uid " + std::to_string(st.st_uid) +
                                 ", not by this daemon's user (uid " + std::to_string(geteuid()) + ")");
  }
  return {};
}

}  // namespace

Result<CacheDirectory> CacheDirectory::open(const std::string& directory) {
  std::error_code ec;
  std::filesystem::path root(directory);
  if (root.has_parent_path()) std::filesystem::create_directories(root.parent_path(), ec);
  if (ec) return make_error(ec.value(), "cache directory " + directory + ": " + ec.message());
  // A new cache directory is ours alone from the start.
  if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) return errno_error("cache directory " + directory);
  Fd dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return errno_error("cache directory " + directory);
  struct stat st {};
  if (fstat(dir.get(), &st) != 0) return errno_error("cache directory " + directory);
  // Whoever else can write here could plant links or files the daemon would trust.
  if (st.st_uid != geteuid()) {
    return make_error(EPERM, "cache directory " + directory + " is owned by uid " + std::to_string(st.st_uid) +
                                 ", not by this daemon's user (uid " + std::to_string(geteuid()) +
                                 "): refusing it (chown it, or choose another with -o cache=)");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return make_error(EPERM, "cache directory " + directory + " is writable by others (mode " + octal_mode(st.st_mode) +
                                 "): refusing it (chmod 700 it, or choose another with -o cache=)");
  }
  // Cached store contents are readable through the mount only as the mount allows; the cache
  // itself (and the control socket in it) is the daemon user's alone.
  if (fchmod(dir.get(), 0700) != 0) return errno_error("cache directory " + directory);
  if (auto made = subdirectory(dir.get(), "v1", directory + "/v1"); !made) return made.error();
  Fd v1(openat(dir.get(), "v1", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!v1) return errno_error("cache directory " + directory + "/v1");
  for (const char* name : {"data", "meta"}) {
    if (auto made = subdirectory(v1.get(), name, directory + "/v1/" + name); !made) return made.error();
  }

  std::string lock_path = directory + "/lock";
  Fd lock(openat(dir.get(), "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) return errno_error(lock_path);
  // A server that was just killed (a crash, or its supervisor's end) lets go of the lock a
  // moment later, when the kernel has closed its files: wait that long, not longer.
  auto deadline = std::chrono::steady_clock::now() + kLockWait;
  while (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return errno_error("locking " + lock_path);
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(EBUSY, "cache directory " + directory + " is in use by another lazystore");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return CacheDirectory(directory, std::move(lock));
}

}  // namespace lazystore
