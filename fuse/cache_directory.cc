#include "cache_directory.h"

#include <fcntl.h>
#include <sys/file.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

namespace lazystore {
namespace {

constexpr auto kLockWait = std::chrono::seconds(3);

}  // namespace

Result<CacheDirectory> CacheDirectory::open(const std::string& directory) {
  std::error_code ec;
  std::filesystem::create_directories(directory + "/v1", ec);
  if (ec) return make_error(ec.value(), "cache directory " + directory + ": " + ec.message());
  // Cached store contents are readable through the mount only as the mount allows; the cache
  // itself (and the control socket in it) is root's alone.
  std::filesystem::permissions(directory, std::filesystem::perms::owner_all, ec);
  if (ec) return make_error(ec.value(), "cache directory " + directory + ": " + ec.message());
  std::string lock_path = directory + "/lock";
  Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) return make_error(errno, lock_path + ": " + std::strerror(errno));
  // A server that was just killed (a crash, or its supervisor's end) lets go of the lock a
  // moment later, when the kernel has closed its files: wait that long, not longer.
  auto deadline = std::chrono::steady_clock::now() + kLockWait;
  while (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return make_error(errno, "locking " + lock_path + ": " + std::strerror(errno));
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(EBUSY, "cache directory " + directory + " is in use by another lazystore");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return CacheDirectory(directory, std::move(lock));
}

}  // namespace lazystore
