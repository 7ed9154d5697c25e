// The cache directory: its layout, the lock that keeps a second daemon out of it, and its safety
// rules: DIR must be owned by the daemon's user and writable by nobody else (it is then made
// 0700), and v1, v1/data, v1/meta must be real directories of that user, not links.
//   DIR/lock        flock()ed by the daemon using DIR
//   DIR/v1/data/    content (ChunkCache)
//   DIR/v1/meta/    store path trees (MetadataCache)
#pragma once

#include <string>

#include "fd.h"
#include "result.h"

namespace lazystore {

class CacheDirectory {
 public:
  // Creates what is missing (DIR with mode 0700); EPERM or ENOTDIR, with a message saying what
  // to do, for a directory that breaks the rules above.
  static Result<CacheDirectory> open(const std::string& directory);

  std::string data_dir() const { return root_ + "/v1/data"; }
  std::string meta_dir() const { return meta_dir_of(root_); }
  // Where the metadata of a cache directory lives, without opening (locking) it.
  static std::string meta_dir_of(const std::string& root) { return root + "/v1/meta"; }

 private:
  CacheDirectory(std::string root, Fd lock) : root_(std::move(root)), lock_(std::move(lock)) {}
  std::string root_;
  Fd lock_;  // holds the flock for the daemon's lifetime
};

}  // namespace lazystore
