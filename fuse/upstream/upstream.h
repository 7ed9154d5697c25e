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

  // The counts of a statvfs answer (struct statvfs, libnfs's nfs_statvfs_64).
  template <class Statvfs>
  static UpstreamStatfs of(const Statvfs& st) {
    UpstreamStatfs out;
    out.block_size = st.f_frsize ? st.f_frsize : st.f_bsize;  // an NFS server may leave f_frsize 0
    out.blocks = st.f_blocks;
    out.blocks_free = st.f_bfree;
    out.files = st.f_files;
    out.files_free = st.f_ffree;
    return out;
  }
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
  std::string spool_dir;                  // where whole NARs are decompressed, verified and kept (cache dir)
  uint64_t spool_max_bytes = 8ull << 30;  // bound on the whole NARs kept there
};

// Receives the tree of one store path while an upstream lists it (Upstream::walk_tree): the
// store path itself first, then each directory's entries once all of them are known, in any
// order of directories. The tree fills in while the walk goes on, so lookups are answered before
// it ends; `take_wanted` tells the walk which directories someone is waiting for.
class TreeBuilder {
 public:
  struct Entry {
    std::string name;  // "" for the store path itself
    NodeType type = NodeType::Regular;
    uint64_t size = 0;        // Regular: bytes
    bool executable = false;  // Regular only
    std::string target;       // Symlink only
    uint64_t nar_offset = 0;  // Regular: where its contents are in the NAR (HTTP), 0 unknown
  };
  virtual ~TreeBuilder() = default;
  // The store path itself, once, before anything else. A directory is then node Tree::kRoot.
  virtual Status set_root(Entry root) = 0;
  // Every entry of directory `dir` (Tree::kRoot or a directory node returned earlier), once, in
  // any order, each complete (a symlink with its target). Returns each entry's node, in the
  // order given. An error (bad names, too many entries, nobody wants the tree any more) ends
  // the walk with it.
  virtual Result<std::vector<uint32_t>> add_listing(uint32_t dir, std::vector<Entry> entries) = 0;
  // Directories someone waits for (nodes returned earlier, not listed yet), most urgent first;
  // each is given once. A walk lists them before the others.
  virtual std::vector<uint32_t> take_wanted() { return {}; }
  // The walk got an answer: a waiter's deadline restarts (a listing may take many answers).
  virtual void progressed() {}
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

  // The same tree, handed to `builder` directory by directory while it is listed. The default
  // lists the whole tree first (a backend whose listing comes in one piece: HTTP, a directory).
  virtual Status walk_tree(const StorePath& path, TreeBuilder& builder) {
    auto tree = list_tree(path);
    if (!tree) return tree.error();
    return feed(*tree, builder);
  }

  // Hands a whole tree to a builder, breadth-first.
  static Status feed(const Tree& tree, TreeBuilder& builder) {
    auto entry_of = [&tree](uint32_t node) {
      const TreeNode& n = tree.nodes[node];
      return TreeBuilder::Entry{n.name, n.type, n.size, n.executable, n.target, n.nar_offset};
    };
    if (auto set = builder.set_root(entry_of(Tree::kRoot)); !set) return set;
    if (tree.nodes[Tree::kRoot].type != NodeType::Directory) return {};
    std::vector<std::pair<uint32_t, uint32_t>> queue{{Tree::kRoot, Tree::kRoot}};  // ours, theirs
    for (size_t head = 0; head < queue.size(); ++head) {
      auto [ours, theirs] = queue[head];
      std::vector<TreeBuilder::Entry> entries;
      for (uint32_t child : tree.nodes[ours].children) entries.push_back(entry_of(child));
      auto added = builder.add_listing(theirs, std::move(entries));
      if (!added) return added.error();
      const auto& children = tree.nodes[ours].children;
      for (size_t i = 0; i < children.size() && i < added->size(); ++i) {
        if (tree.nodes[children[i]].type == NodeType::Directory) queue.emplace_back(children[i], (*added)[i]);
      }
    }
    return {};
  }

  // Bytes a reader should keep in flight to fill the link (bandwidth x round trip as measured),
  // for read-ahead: a read() of that many bytes is split into parallel requests. 0: unknown.
  virtual uint64_t read_window_bytes() { return 0; }

  // The unit the upstream reads `path`'s files in (a read of less moves that much anyway), so
  // that a random read fetches and keeps all of it. 0: any size.
  virtual uint32_t read_alignment(const StorePath& /*path*/) { return 0; }

  // Reads up to buf.size() bytes of regular file `node` of `tree` (the tree of `path`) at
  // `offset`; returns the byte count, short only at end of file.
  virtual Result<size_t> read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                              std::span<std::byte> buf) = 0;

  virtual Result<UpstreamStatfs> statfs() = 0;
};

// Picks the backend from SOURCE's form: "file:///dir" or "/dir" → directory upstream;
// "host:/path" or "nfs://host/path?..." → NFS; "http(s)://a[,http(s)://b...]" → binary cache.
Result<std::unique_ptr<Upstream>> make_upstream(std::string_view source, const UpstreamOptions& options);

}  // namespace lazystore
