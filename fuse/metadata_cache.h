// Per-store-path trees, listed from the upstream on first lookup and kept in memory and on disk
// (so they are served after a restart, also offline). Store paths are immutable once complete,
// so a tree never goes stale. Absent top-level names are remembered only for the negative
// timeout, so a path pushed a moment ago shows up. Memory is bounded: past `max_nodes` tree
// nodes in all, the least recently used trees leave memory (not the disk) and are read back
// from disk when next looked up.
//
// A store path's tree fills in while its walk goes on (breadth-first, the directories someone
// waits for first; Upstream::walk_tree): a lookup is answered as soon as the directories on its
// way are listed, from a snapshot of the tree so far. A snapshot never changes; what it holds is
// final (a directory it lists has all its entries), node numbers are the same in every snapshot
// of a walk and in its finished tree, so an answer stays true for ever. Only the finished tree
// is persisted; a walk that fails leaves nothing on disk, its listed directories stay answered,
// the others answer its error and start a new walk when asked again. Every wait for a directory
// has a deadline that restarts whenever the walk makes progress.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "result.h"
#include "stats.h"
#include "store_path.h"
#include "tree.h"
#include "upstream/upstream.h"

namespace lazystore {

struct StoreTree {
  StoreTree(StorePath store_path, Tree whole) : path(std::move(store_path)), tree(std::move(whole)) {}
  // A snapshot of walk `walk_id` (complete: every directory listed).
  StoreTree(StorePath store_path, Tree part, bool is_complete, std::vector<bool> listed_dirs, uint64_t walk_id)
      : path(std::move(store_path)),
        tree(std::move(part)),
        complete(is_complete),
        listed(std::move(listed_dirs)),
        walk(walk_id) {}

  StorePath path;
  Tree tree;
  // A snapshot of a tree still being listed is not complete: `listed` says (by node) which of
  // its directories are listed. A complete tree has every directory listed.
  bool complete = true;
  std::vector<bool> listed;
  uint64_t walk = 0;  // the walk whose node numbers these are; 0 for a tree read from disk

  // The daemon-wide key of a node (inode numbers, cache files, logs):
  // "<store path base name>" for the root, else "<base name>/<relative path>".
  std::string key_of(uint32_t node) const;
  // Everything about `node` is known: it exists here and, if a directory, it is listed.
  bool settled(uint32_t node) const;
};

// The two parts of a node key: the store path and the relative path ("" for the root);
// nullopt when `key` does not start with a valid store path name.
struct NodeKey {
  StorePath path;
  std::string relative;
};
std::optional<NodeKey> parse_node_key(std::string_view key);
using StoreTreePtr = std::shared_ptr<const StoreTree>;

// A node of a tree in which it is settled.
struct SettledNode {
  StoreTreePtr tree;
  uint32_t node = Tree::kRoot;
};

class MetadataCache {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kDefaultMaxNodes = size_t{1} << 21;  // ~2 M nodes, ~300 MB

  struct Options {
    double negative_timeout_seconds = 1.0;
    // A wait for a directory of a walk: this long without progress of the walk is an error.
    double wait_timeout_seconds = 10.0;
    size_t max_nodes = kDefaultMaxNodes;
    // The clock of negative entries (tests move their own); the steady clock when empty.
    std::function<Clock::time_point()> now;
  };

  static Result<std::unique_ptr<MetadataCache>> open(Upstream& upstream, std::string directory, Stats& stats,
                                                     Options options);
  static Result<std::unique_ptr<MetadataCache>> open(Upstream& upstream, std::string directory,
                                                     double negative_timeout_seconds, Stats& stats,
                                                     size_t max_nodes = kDefaultMaxNodes);
  // Lets the walks still going finish (and be persisted) for up to kFinishOnClose, then ends
  // them (they stop at their next answer) and waits for them.
  ~MetadataCache();
  static constexpr std::chrono::seconds kFinishOnClose{5};
  MetadataCache(const MetadataCache&) = delete;
  MetadataCache& operator=(const MetadataCache&) = delete;

  // The whole tree of `path`: ENOENT when absent upstream, another error when the upstream
  // cannot tell and nothing is cached. Concurrent lookups of one path share one walk.
  Result<StoreTreePtr> get(const StorePath& path);
  // A tree of `path` in which the node at `relative` ("" the store path itself) is settled, and
  // with `subdirectories` its subdirectories are listed too (readdirplus gives their
  // attributes). Answers as soon as the walk has listed what is needed. ENOENT when the store
  // path or the node does not exist.
  Result<SettledNode> settle(const StorePath& path, std::string_view relative, bool subdirectories = false);
  // The same for a node of a tree answered earlier (at once when it is settled there already).
  Result<SettledNode> settle(const StoreTreePtr& tree, uint32_t node, bool subdirectories = false);
  // The store paths at the top level: the upstream's, or, when it cannot answer, those cached.
  Result<std::vector<StorePath>> list_top();
  // The store paths whose trees are stored in `directory` (a metadata cache's, on disk).
  static std::vector<StorePath> stored_paths(const std::string& directory);
  // Tree nodes held in memory now (bounded by max_nodes, but a single bigger tree is kept).
  size_t nodes_in_memory() const;
  // Walks going on now.
  size_t walks_in_flight() const;

 private:
  struct Walk;
  class WalkBuilder;
  struct Cached {
    StoreTreePtr tree;
    std::list<std::string>::iterator recent;  // its place in recent_
  };
  // What a waiter needs of a walk.
  struct Want {
    std::string_view relative;
    bool subdirectories = false;
    bool whole = false;  // the complete tree
  };

  MetadataCache(Upstream& upstream, std::string directory, Stats& stats, Options options);
  Clock::time_point now() const { return options_.now ? options_.now() : Clock::now(); }
  // The complete tree in memory or on disk, or the walk of `path` (started when there is none);
  // an error for a path believed absent.
  Result<StoreTreePtr> find_or_walk(const StorePath& path, std::shared_ptr<Walk>* walk);
  Result<SettledNode> wait(std::shared_ptr<Walk> walk, Want want);
  void run(std::shared_ptr<Walk> walk) noexcept;
  void finish(Walk& walk, Status status) noexcept;
  StoreTreePtr snapshot_locked(Walk& walk);
  std::vector<std::shared_ptr<Walk>> take_finished_locked() { return std::exchange(finished_, {}); }
  void remember_locked(const std::string& key, StoreTreePtr tree);
  StoreTreePtr load_from_disk(const StorePath& path);
  void save_to_disk(const StorePath& path, const Tree& tree) noexcept;
  void save(const StorePath& path, const Tree& tree);
  std::string file_of(const StorePath& path) const { return directory_ + "/" + path.base_name() + ".tree"; }

  Upstream& upstream_;
  const std::string directory_;
  Stats& stats_;
  const Options options_;
  const Clock::duration negative_timeout_;
  const Clock::duration wait_timeout_;

  mutable std::mutex mutex_;  // guards everything below and every Walk
  std::unordered_map<std::string, Cached> trees_;
  std::list<std::string> recent_;  // keys of trees_, most recently used first
  size_t nodes_ = 0;               // nodes of the trees in trees_
  std::unordered_map<std::string, Clock::time_point> absent_until_;
  std::unordered_map<std::string, std::shared_ptr<Walk>> walks_;  // in flight, by base name
  std::vector<std::shared_ptr<Walk>> finished_;                   // their threads are joined at the next start
  uint64_t next_walk_ = 1;
  bool stopping_ = false;
};

}  // namespace lazystore
