#include "data_directory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <tuple>

#include "io.h"
#include "log.h"

namespace lazystore {

Result<DataDirectory> DataDirectory::open(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return make_error(ec.value(), "cache directory " + path + ": " + ec.message());
  return DataDirectory(path);
}

bool DataDirectory::is_id(std::string_view name) {
  return name.size() == 32 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string DataDirectory::path_of(const std::string& id) const {
  return path_ + "/" + id.substr(0, 2) + "/" + id;
}

Result<Fd> DataDirectory::open_file(const std::string& id, bool create) const {
  std::string path = path_of(id);
  if (create) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  }
  Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600));
  if (!fd) return errno_error("cache file " + path);
  return fd;
}

Status DataDirectory::remove(const std::string& id) const {
  if (::unlink(path_of(id).c_str()) != 0 && errno != ENOENT) return errno_error("removing " + path_of(id));
  return {};
}

Result<std::vector<DataDirectory::Found>> DataDirectory::scan() const {
  std::vector<Found> found;
  std::error_code ec;
  for (const auto& sub : std::filesystem::directory_iterator(path_, ec)) {
    if (!sub.is_directory(ec)) continue;
    for (const auto& file : std::filesystem::directory_iterator(sub.path(), ec)) {
      std::string name = file.path().filename().string();
      struct stat st {};
      if (lstat(file.path().c_str(), &st) != 0) continue;
      if (!S_ISREG(st.st_mode) || !is_id(name) || name.substr(0, 2) != sub.path().filename()) {
        LOG_WARNING("removing stray file %s from the cache", file.path().c_str());
        std::filesystem::remove_all(file.path(), ec);
        continue;
      }
      found.push_back({name, static_cast<uint64_t>(st.st_blocks) * 512, st.st_mtim});
    }
  }
  if (ec) return make_error(ec.value(), "scanning cache " + path_ + ": " + ec.message());
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return std::tie(a.mtime.tv_sec, a.mtime.tv_nsec) < std::tie(b.mtime.tv_sec, b.mtime.tv_nsec);
  });
  return found;
}

uint64_t DataDirectory::free_bytes() const {
  struct statvfs st {};
  if (::statvfs(path_.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace lazystore
