// Per-store-path trees, fetched whole from the upstream on first lookup and kept in memory and
// on disk (so they are served after a restart, also offline). Store paths are immutable once
// complete, so a tree never goes stale. Absent top-level names are remembered only for the
// negative timeout, so a path pushed a moment ago shows up. Memory is bounded: past
// `max_nodes` tree nodes in all, the least recently used trees leave memory (not the disk) and
// are read back from disk when next looked up.
#pragma once

#include <chrono>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "result.h"
#include "stats.h"
#include "store_path.h"
#include "tree.h"
#include "upstream/upstream.h"

namespace lazystore {

struct StoreTree {
  StorePath path;
  Tree tree;

  // The daemon-wide key of a node (inode numbers, cache files, logs):
  // "<store path base name>" for the root, else "<base name>/<relative path>".
  std::string key_of(uint32_t node) const;
};

// The two parts of a node key: the store path and the relative path ("" for the root);
// nullopt when `key` does not start with a valid store path name.
struct NodeKey {
  StorePath path;
  std::string relative;
};
std::optional<NodeKey> parse_node_key(std::string_view key);
using StoreTreePtr = std::shared_ptr<const StoreTree>;

class MetadataCache {
 public:
  static constexpr size_t kDefaultMaxNodes = size_t{1} << 21;  // ~2 M nodes, ~300 MB

  static Result<std::unique_ptr<MetadataCache>> open(Upstream& upstream, std::string directory,
                                                     double negative_timeout_seconds, Stats& stats,
                                                     size_t max_nodes = kDefaultMaxNodes);

  // The tree of `path`: ENOENT when absent upstream, another error when the upstream cannot tell
  // and nothing is cached. Concurrent first lookups of one path make one upstream listing.
  Result<StoreTreePtr> get(const StorePath& path);
  // The store paths at the top level: the upstream's, or, when it cannot answer, those cached.
  Result<std::vector<StorePath>> list_top();
  // The store paths whose trees are stored in `directory` (a metadata cache's, on disk).
  static std::vector<StorePath> stored_paths(const std::string& directory);
  // Tree nodes held in memory now (bounded by max_nodes, but a single bigger tree is kept).
  size_t nodes_in_memory() const;

 private:
  using Clock = std::chrono::steady_clock;
  MetadataCache(Upstream& upstream, std::string directory, double negative_timeout, Stats& stats,
                size_t max_nodes)
      : upstream_(upstream), directory_(std::move(directory)),
        negative_timeout_(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(negative_timeout))),
        stats_(stats), max_nodes_(max_nodes) {}
  struct Cached {
    StoreTreePtr tree;
    std::list<std::string>::iterator recent;  // its place in recent_
  };
  void remember_locked(const std::string& key, StoreTreePtr tree);
  Result<StoreTreePtr> fetch(const StorePath& path);
  StoreTreePtr load_from_disk(const StorePath& path);
  void save_to_disk(const StoreTree& tree);
  std::string file_of(const StorePath& path) const { return directory_ + "/" + path.base_name() + ".tree"; }

  Upstream& upstream_;
  const std::string directory_;
  const Clock::duration negative_timeout_;
  Stats& stats_;
  const size_t max_nodes_;

  mutable std::mutex mutex_;  // guards the maps and the list
  std::unordered_map<std::string, Cached> trees_;
  std::list<std::string> recent_;  // keys of trees_, most recently used first
  size_t nodes_ = 0;               // nodes of the trees in trees_
  std::unordered_map<std::string, Clock::time_point> absent_until_;
  std::unordered_map<std::string, std::shared_future<Result<StoreTreePtr>>> in_flight_;
};

}  // namespace lazystore
