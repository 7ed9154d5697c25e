// The directory of the content cache's data files: DIR/XX/<id>, where <id> is 32 lowercase hex
// digits (ChunkCache::id_of: a file's key hashed, XX from its store path) and XX its first two.
// Anything else found there is a stray and is removed at start. No link in it is ever followed:
// every path is opened beneath the directory's descriptor with openat2(RESOLVE_NO_SYMLINKS), a
// link is removed as a link.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#include "fd.h"
#include "result.h"

namespace lazystore {

class DataDirectory {
 public:
  // Creates the directory when it is missing; refuses one that is a symlink.
  static Result<DataDirectory> open(const std::string& path);

  const std::string& path() const { return path_; }
  std::string path_of(const std::string& id) const;

  // The data file of `id`, read-write; ENOENT when it does not exist and `create` is false.
  Result<Fd> open_file(const std::string& id, bool create) const;
  // Unlinks the data file of `id` (a missing file is no error).
  Status remove(const std::string& id) const;

  struct Found {
    std::string id;
    uint64_t bytes = 0;  // disk blocks
    struct timespec mtime {};
  };
  // Every data file, least recently used (oldest mtime) first; strays are removed on the way.
  Result<std::vector<Found>> scan() const;

  // Free bytes of the disk under the directory (UINT64_MAX when unknown).
  uint64_t free_bytes() const;

  static bool is_id(std::string_view name);

 private:
  DataDirectory(std::string path, Fd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  Fd fd_;
};

}  // namespace lazystore
