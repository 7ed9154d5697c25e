// The one interface every upstream backend implements (directory, NFS, HTTP binary cache).
// Everything above it (FUSE ops, caches, metrics) is backend-agnostic. Implementations must be
// safe to call from many threads at once and must answer every call within their deadline.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"
#include "store_path.h"
#include "tree.h"

namespace lazystore {

struct UpstreamStatfs {
  uint64_t block_size = 4096;
  uint64_t blocks = 0;
  uint64_t blocks_free = 0;
  uint64_t files = 0;
  uint64_t files_free = 0;
};

struct Stats;

struct UpstreamOptions {
  double timeout_seconds = 10;  // deadline of one upstream call
  int nfs_version = 0;          // -o nfsvers=3|4; 0: the SOURCE's, else 3
  unsigned connections = 8;     // parallel connections of a network backend
  Stats* stats = nullptr;       // where a backend counts its error classes
  // HTTP binary cache: keys "name:base64" that may sign narinfos; unsigned or badly signed
  // paths are refused unless require_sigs is false (Nix's default is to require them).
  std::vector<std::string> trusted_public_keys;
  bool require_sigs = true;
  std::string spool_dir;        // where whole NARs are decompressed, verified and kept (cache dir)
  uint64_t spool_max_bytes = 8ull << 30;  // bound on the whole NARs kept there
};

class Upstream {
 public:
  virtual ~Upstream() = default;

  // For logs and `fsname`, e.g. "file:///srv/nix/store".
  virtual std::string describe() const = 0;

  // Starts what the backend runs in the background (the HTTP upstream's curl worker thread).
  // Called once, after the last fork of the process (a fork keeps only the calling thread),
  // before any other call. Opening a backend (make_upstream) starts no thread.
  virtual Status start() { return {}; }

  // Is the store path present and complete (e.g. no "<name>.lock" sibling on NFS, a .narinfo on
  // HTTP)? false = absent; an Error = could not tell (EIO, ETIMEDOUT, ...).
  virtual Result<bool> exists(const StorePath& path) = 0;

  // The complete store paths at the top level (invalid names, .links and *.lock left out).
  virtual Result<std::vector<StorePath>> list_store() = 0;

  // The whole tree of a complete store path, in as few round trips as the backend allows.
  // ENOENT when absent.
  virtual Result<Tree> list_tree(const StorePath& path) = 0;

  // Reads up to buf.size() bytes of regular file `node` of `tree` (the tree of `path`) at
  // `offset`; returns the byte count, short only at end of file.
  virtual Result<size_t> read(const StorePath& path, const Tree& tree, uint32_t node,
                              uint64_t offset, std::span<std::byte> buf) = 0;

  virtual Result<UpstreamStatfs> statfs() = 0;
};

// Picks the backend from SOURCE's form: "file:///dir" or "/dir" → directory upstream;
// "host:/path" or "nfs://host/path?..." → NFS; "http(s)://a[,http(s)://b...]" → binary cache.
Result<std::unique_ptr<Upstream>> make_upstream(std::string_view source,
                                                const UpstreamOptions& options);

}  // namespace lazystore
