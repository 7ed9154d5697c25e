// Upstream over a local directory laid out like /nix/store (a kernel NFS mount elsewhere, tests).
// Every path is resolved beneath the store directory without following any symlink.
#pragma once

#include <string>

#include "fd.h"
#include "upstream.h"

namespace lazystore {

class DirUpstream final : public Upstream {
 public:
  // The directory may be missing now (offline start): every call opens it afresh, so a
  // directory that comes back, or is remounted, is picked up.
  static Result<std::unique_ptr<DirUpstream>> open(const std::string& directory);

  std::string describe() const override { return "file://" + directory_; }
  Result<bool> exists(const StorePath& path) override;
  Result<std::vector<StorePath>> list_store() override;
  Result<Tree> list_tree(const StorePath& path) override;
  Result<size_t> read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                      std::span<std::byte> buf) override;
  Result<UpstreamStatfs> statfs() override;

 private:
  explicit DirUpstream(std::string directory) : directory_(std::move(directory)) {}
  Result<Fd> open_root() const;
  // openat2 beneath the store directory with RESOLVE_NO_SYMLINKS.
  Result<Fd> open_beneath(const Fd& root, const std::string& relative, int flags) const;
  // "<path>.lock" that Nix holds while writing <path> (an empty file), not a store path.
  static bool is_lock_file(int root, const std::string& name);

  std::string directory_;
};

}  // namespace lazystore
