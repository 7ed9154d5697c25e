#include "metadata_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

#include "fd.h"
#include "io.h"
#include "log.h"

namespace lazystore {

std::string StoreTree::key_of(uint32_t node) const {
  std::string key = path.base_name();
  if (node != Tree::kRoot) key += "/" + tree.path_of(node);
  return key;
}

std::optional<NodeKey> parse_node_key(std::string_view key) {
  size_t slash = key.find('/');
  auto path = StorePath::parse(key.substr(0, slash));
  if (!path) return std::nullopt;
  return NodeKey{std::move(*path),
                 slash == std::string_view::npos ? std::string() : std::string(key.substr(slash + 1))};
}
bool StoreTree::settled(uint32_t node) const {
  if (complete) return node < tree.nodes.size();
  if (node >= tree.nodes.size()) return false;
  return tree.nodes[node].type != NodeType::Directory || (node < listed.size() && listed[node]);
}

namespace {

constexpr size_t kMaxAbsentEntries = 100'000;
constexpr std::string_view kTreeSuffix = ".tree";
// Snapshots of a growing tree are copies: the nodes copied into them stay below a few times the
// tree's size (plus this many for small trees), so that answering early costs O(nodes) in all.
constexpr size_t kFreeSnapshotNodes = size_t{1} << 18;
constexpr size_t kSnapshotCopiesPerNode = 3;

std::chrono::steady_clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace

// One store path being listed. Guarded by MetadataCache::mutex_.
struct MetadataCache::Walk {
  Walk(uint64_t walk_id, StorePath store_path) : id(walk_id), path(std::move(store_path)) {}

  uint64_t id = 0;
  StorePath path;
  Tree tree;                 // grows; node numbers never change
  std::vector<bool> listed;  // by node
  size_t directories = 0;    // directory nodes in `tree`
  size_t listed_directories = 0;
  bool rooted = false;    // the store path itself is known
  uint64_t version = 0;   // bumped by every change of `tree`
  uint64_t progress = 0;  // answers the walk got (restarts waiters' deadlines)
  StoreTreePtr snapshot;  // the latest published, of `snapshot_version`
  uint64_t snapshot_version = 0;
  size_t copied = 0;             // nodes copied into snapshots so far
  std::vector<uint32_t> wanted;  // for take_wanted, most urgent first
  std::vector<bool> asked;       // by node: already in `wanted` once
  bool finished = false;         // run() is over: `result` or `error`
  StoreTreePtr result;           // the complete tree
  std::optional<Error> error;
  std::condition_variable changed;
  std::thread thread;
};

// What the upstream's walk calls, on the walk's thread.
class MetadataCache::WalkBuilder final : public TreeBuilder {
 public:
  WalkBuilder(MetadataCache& cache, Walk& walk) : cache_(cache), walk_(walk) {}

  Status set_root(Entry root) override {
    std::string where = walk_.path.base_name();
    if (auto valid = check(root, where); !valid) return valid;
    Tree tree = Tree::with_root(root.type);
    fill(tree.nodes[Tree::kRoot], std::move(root));
    std::lock_guard lock(cache_.mutex_);
    if (cache_.stopping_) return stopped();
    if (walk_.rooted) return make_error(EIO, where + ": the store path was described twice");
    walk_.tree = std::move(tree);
    walk_.listed.assign(1, false);
    walk_.asked.assign(1, false);
    walk_.directories = walk_.tree.nodes[Tree::kRoot].type == NodeType::Directory ? 1 : 0;
    walk_.rooted = true;
    changed_locked();
    return {};
  }

  Result<std::vector<uint32_t>> add_listing(uint32_t dir, std::vector<Entry> entries) override {
    // Checked before anything is added: a listing goes in whole or not at all.
    std::vector<uint32_t> order(entries.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&entries](uint32_t a, uint32_t b) { return entries[a].name < entries[b].name; });
    for (size_t k = 0; k < order.size(); ++k) {
      const Entry& e = entries[order[k]];
      if (!Tree::valid_name(e.name)) return make_error(EIO, walk_.path.base_name() + ": an entry has an invalid name");
      if (k > 0 && entries[order[k - 1]].name == e.name) {
        return make_error(EIO, walk_.path.base_name() + ": duplicate entry " + e.name);
      }
      if (auto valid = check(e, walk_.path.base_name() + "/.../" + e.name); !valid) return valid.error();
    }
    std::lock_guard lock(cache_.mutex_);
    if (cache_.stopping_) return stopped();
    Tree& tree = walk_.tree;
    std::string where = walk_.path.base_name() + (dir == Tree::kRoot ? "" : "/" + tree.path_of(dir));
    if (!walk_.rooted || dir >= tree.nodes.size() || tree.nodes[dir].type != NodeType::Directory) {
      return make_error(EIO, where + ": listing of something that is no directory of the walk");
    }
    if (walk_.listed[dir]) return make_error(EIO, where + ": listed twice");
    if (tree.nodes.size() + entries.size() > Tree::kMaxNodes) {
      return make_error(EFBIG, where + ": more than " + std::to_string(Tree::kMaxNodes) + " entries in the store path");
    }
    std::vector<uint32_t> nodes(entries.size());
    for (uint32_t i : order) {
      NodeType type = entries[i].type;
      auto child = tree.append_child(dir, entries[i].name, type);
      if (!child) return make_error(child.error().code == ELOOP ? ELOOP : EIO, where + ": " + child.error().message);
      fill(tree.nodes[*child], std::move(entries[i]));
      if (type == NodeType::Directory) walk_.directories++;
      nodes[i] = *child;
    }
    walk_.listed.resize(tree.nodes.size(), false);
    walk_.asked.resize(tree.nodes.size(), false);
    walk_.listed[dir] = true;
    walk_.listed_directories++;
    changed_locked();
    return nodes;
  }

  std::vector<uint32_t> take_wanted() override {
    std::lock_guard lock(cache_.mutex_);
    return std::exchange(walk_.wanted, {});
  }

  void progressed() override {
    std::lock_guard lock(cache_.mutex_);
    walk_.progress++;
    walk_.changed.notify_all();
  }

 private:
  static Status check(const Entry& e, const std::string& where) {
    if (e.type == NodeType::Symlink &&
        (e.target.empty() || e.target.size() > Tree::kMaxTargetLength || e.target.find('\0') != std::string::npos)) {
      return make_error(EIO, where + ": symlink target empty, too long or with a NUL byte");
    }
    return {};
  }
  static void fill(TreeNode& node, Entry e) {
    if (node.type == NodeType::Regular) {
      node.size = e.size;
      node.executable = e.executable;
      node.nar_offset = e.nar_offset;
    } else if (node.type == NodeType::Symlink) {
      node.size = e.target.size();
      node.target = std::move(e.target);
    }
  }
  static Error stopped() { return make_error(ECANCELED, "the metadata cache is closing"); }
  void changed_locked() {
    walk_.version++;
    walk_.progress++;
    walk_.changed.notify_all();
  }

  MetadataCache& cache_;
  Walk& walk_;
};

MetadataCache::MetadataCache(Upstream& upstream, std::string directory, Stats& stats, Options options)
    : upstream_(upstream),
      directory_(std::move(directory)),
      stats_(stats),
      options_(std::move(options)),
      negative_timeout_(to_duration(options_.negative_timeout_seconds)),
      wait_timeout_(to_duration(options_.wait_timeout_seconds)) {}

Result<std::unique_ptr<MetadataCache>> MetadataCache::open(Upstream& upstream, std::string directory,
                                                           double negative_timeout_seconds, Stats& stats,
                                                           size_t max_nodes) {
  Options options;
  options.negative_timeout_seconds = negative_timeout_seconds;
  options.max_nodes = max_nodes;
  return open(upstream, std::move(directory), stats, std::move(options));
}

Result<std::unique_ptr<MetadataCache>> MetadataCache::open(Upstream& upstream, std::string directory, Stats& stats,
                                                           Options options) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return make_error(ec.value(), "metadata cache " + directory + ": " + ec.message());
  // Left over from a write cut short by a crash.
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    if (entry.path().filename().string().starts_with(".tmp-")) std::filesystem::remove(entry.path(), ec);
  }
  return std::unique_ptr<MetadataCache>(new MetadataCache(upstream, std::move(directory), stats, std::move(options)));
}

MetadataCache::~MetadataCache() {
  std::vector<std::shared_ptr<Walk>> walks;
  {
    std::unique_lock lock(mutex_);
    // A tree is persisted only whole, and what was read from a store path must be served after a
    // restart, offline too: walks still going get a moment to finish (bounded) before they stop.
    auto deadline = std::chrono::steady_clock::now() + std::min<Clock::duration>(wait_timeout_, kFinishOnClose);
    std::vector<std::shared_ptr<Walk>> going;
    for (auto& [key, walk] : walks_) going.push_back(walk);
    for (auto& walk : going) walk->changed.wait_until(lock, deadline, [&walk] { return walk->finished; });
    stopping_ = true;
    for (auto& [key, walk] : walks_) {
      walk->changed.notify_all();
      walks.push_back(walk);
    }
    for (auto& walk : finished_) walks.push_back(walk);
    finished_.clear();
  }
  // A walk stops at its next answer (the builder refuses more), each bounded by the deadline.
  for (auto& walk : walks) {
    if (walk->thread.joinable()) walk->thread.join();
  }
}

Result<StoreTreePtr> MetadataCache::find_or_walk(const StorePath& path, std::shared_ptr<Walk>* walk) {
  const std::string& key = path.base_name();
  auto known = [&]() -> std::optional<Result<StoreTreePtr>> {
    if (auto it = trees_.find(key); it != trees_.end()) {
      stats_.metadata_hits++;
      recent_.splice(recent_.begin(), recent_, it->second.recent);
      return Result<StoreTreePtr>(it->second.tree);
    }
    if (auto it = walks_.find(key); it != walks_.end()) {
      *walk = it->second;
      return Result<StoreTreePtr>(StoreTreePtr());
    }
    return std::nullopt;
  };
  {
    std::lock_guard lock(mutex_);
    if (auto it = absent_until_.find(key); it != absent_until_.end()) {
      if (now() < it->second) return make_error(ENOENT, key + ": no such store path");
      absent_until_.erase(it);
    }
    if (auto answer = known()) return std::move(*answer);
  }
  StoreTreePtr from_disk = load_from_disk(path);
  std::vector<std::shared_ptr<Walk>> reaped;
  Result<StoreTreePtr> answer = StoreTreePtr();
  {
    std::lock_guard lock(mutex_);
    if (auto found = known()) {
      answer = std::move(*found);
    } else if (from_disk) {
      remember_locked(key, from_disk);
      answer = from_disk;
    } else if (stopping_) {
      answer = make_error(ECANCELED, key + ": the metadata cache is closing");
    } else {
      reaped = take_finished_locked();
      auto started = std::make_shared<Walk>(next_walk_++, path);
      walks_.emplace(key, started);
      try {
        // Assigned under the lock: finish() (which needs it) cannot run before.
        started->thread = std::thread([this, started] { run(started); });
        stats_.metadata_misses++;
        *walk = started;
      } catch (const std::system_error& e) {
        walks_.erase(key);
        answer = make_error(EAGAIN, key + ": cannot start listing it: " + e.what());
      }
    }
  }
  for (auto& done : reaped) {
    if (done->thread.joinable()) done->thread.join();
  }
  return answer;
}

StoreTreePtr MetadataCache::snapshot_locked(Walk& walk) {
  if (walk.result) return walk.result;
  if (walk.snapshot && walk.snapshot_version == walk.version) return walk.snapshot;
  size_t nodes = walk.tree.nodes.size();
  if (walk.copied > kSnapshotCopiesPerNode * nodes + kFreeSnapshotNodes) return nullptr;  // wait for growth
  auto snapshot = std::make_shared<StoreTree>(StoreTree{walk.path, walk.tree, false, walk.listed, walk.id});
  walk.copied += nodes;
  walk.snapshot = snapshot;
  walk.snapshot_version = walk.version;
  return snapshot;
}

namespace {

// Resolves `relative` in a tree being listed as far as its listed directories go. Returns the
// node, or the directory to wait for in *need, or nullopt with *missing set (no such entry).
std::optional<uint32_t> resolve_listed(const Tree& tree, const std::vector<bool>& listed, std::string_view relative,
                                       std::optional<uint32_t>* need, bool* missing) {
  uint32_t node = Tree::kRoot;
  while (!relative.empty()) {
    if (tree.nodes[node].type != NodeType::Directory) {
      *missing = true;
      return std::nullopt;
    }
    if (!listed[node]) {
      *need = node;
      return std::nullopt;
    }
    size_t slash = relative.find('/');
    auto child = tree.child(node, relative.substr(0, slash));
    if (!child) {
      *missing = true;
      return std::nullopt;
    }
    node = *child;
    relative = slash == std::string_view::npos ? std::string_view() : relative.substr(slash + 1);
  }
  return node;
}

}  // namespace

Result<SettledNode> MetadataCache::wait(std::shared_ptr<Walk> walk, Want want) {
  std::string what = walk->path.base_name() + (want.relative.empty() ? "" : "/" + std::string(want.relative));
  std::unique_lock lock(mutex_);
  // Progress is what the walk reports, and any byte arriving over HTTP: there a walk is one whole
  // download (a NAR or a manifest) that lists nothing until it ends, bounded by the upstream
  // itself (upstream-timeout plus NarSize at a minimum rate).
  auto progress = [this, &walk] { return walk->progress + stats_.http_bytes.load(std::memory_order_relaxed); };
  auto deadline = Clock::now() + wait_timeout_;
  uint64_t seen = progress();
  for (;;) {
    if (walk->result) {
      auto node = walk->result->tree.resolve(want.relative);
      if (!node) return make_error(ENOENT, what + ": no such file or directory");
      return SettledNode{walk->result, *node};
    }
    std::vector<uint32_t> need;  // directories to wait for, the one on the way first
    if (walk->rooted && !want.whole) {
      std::optional<uint32_t> on_the_way;
      bool missing = false;
      auto node = resolve_listed(walk->tree, walk->listed, want.relative, &on_the_way, &missing);
      if (missing) return make_error(ENOENT, what + ": no such file or directory");
      if (on_the_way) {
        need.push_back(*on_the_way);
      } else {
        const TreeNode& n = walk->tree.nodes[*node];
        if (n.type == NodeType::Directory && !walk->listed[*node]) {
          need.push_back(*node);
        } else if (n.type == NodeType::Directory && want.subdirectories) {
          for (uint32_t child : n.children) {
            if (walk->tree.nodes[child].type == NodeType::Directory && !walk->listed[child]) need.push_back(child);
          }
        }
        if (need.empty()) {
          if (StoreTreePtr snapshot = snapshot_locked(*walk)) {
            stats_.metadata_partial_answers++;
            return SettledNode{snapshot, *node};
          }
        }
      }
    }
    if (walk->finished) {
      if (walk->error) return *walk->error;
      return make_error(EIO, what + ": the listing ended without it");
    }
    if (stopping_) return make_error(ECANCELED, what + ": the metadata cache is closing");
    for (uint32_t dir : need) {
      if (!walk->asked[dir]) {
        walk->asked[dir] = true;
        walk->wanted.push_back(dir);
      }
    }
    if (progress() != seen) {
      seen = progress();
      deadline = Clock::now() + wait_timeout_;
    }
    if (walk->changed.wait_until(lock, deadline) == std::cv_status::timeout && progress() == seen && !walk->finished) {
      stats_.upstream_timeouts++;
      return make_error(ETIMEDOUT, what + ": the listing made no progress within the deadline (upstream-timeout)");
    }
  }
}

void MetadataCache::run(std::shared_ptr<Walk> walk) noexcept {
  Status status;
  try {
    auto exists = upstream_.exists(walk->path);
    if (!exists) {
      status = exists.error();
    } else if (!*exists) {
      status = make_error(ENOENT, walk->path.base_name() + ": no such store path");
    } else {
      WalkBuilder builder(*this, *walk);
      status = upstream_.walk_tree(walk->path, builder);
      std::lock_guard lock(mutex_);
      if (status && (!walk->rooted || walk->listed_directories != walk->directories)) {
        status = make_error(EIO, walk->path.base_name() + ": the listing ended before every directory was listed");
      }
    }
  } catch (const std::bad_alloc&) {
    status = make_error(ENOMEM, walk->path.base_name() + ": out of memory while listing it");
  } catch (...) {
    status = make_error(EIO, walk->path.base_name() + ": listing it failed");
  }
  finish(*walk, std::move(status));
}

void MetadataCache::finish(Walk& walk, Status status) noexcept {
  const std::string& key = walk.path.base_name();
  std::shared_ptr<StoreTree> complete;
  if (status) {
    // Persisted before it is answered as complete. Nothing changes the tree any more (the walk
    // is over; waiters only read it), so it is read here without the lock.
    save_to_disk(walk.path, walk.tree);
    try {
      complete = std::make_shared<StoreTree>(StoreTree{walk.path, Tree(), true, {}, walk.id});
    } catch (...) {
      status = make_error(ENOMEM, key + ": out of memory after listing it");
    }
  }
  {
    std::lock_guard lock(mutex_);
    if (complete) {
      complete->tree = std::move(walk.tree);  // with the result, in one step: waiters see either
      walk.result = complete;
      walk.snapshot.reset();
    } else {
      walk.error = status.error();
    }
    walk.finished = true;
    try {
      if (complete) {
        remember_locked(key, complete);
      } else if (status.error().code == ENOENT) {
        if (absent_until_.size() >= kMaxAbsentEntries) absent_until_.clear();
        absent_until_[key] = now() + negative_timeout_;
      }
      if (auto it = walks_.find(key); it != walks_.end() && it->second.get() == &walk) {
        finished_.push_back(it->second);
        walks_.erase(it);
      }
    } catch (...) {
      // Out of memory: this walk stays in walks_, answering its result (or error) to later lookups.
    }
    walk.changed.notify_all();
  }
}

Result<SettledNode> MetadataCache::settle(const StorePath& path, std::string_view relative, bool subdirectories) {
  std::shared_ptr<Walk> walk;
  auto found = find_or_walk(path, &walk);
  if (!found) return found.error();
  if (*found) {
    auto node = (*found)->tree.resolve(relative);
    if (!node)
      return make_error(ENOENT, path.base_name() + "/" + std::string(relative) + ": no such file or directory");
    return SettledNode{*found, *node};
  }
  return wait(std::move(walk), Want{relative, subdirectories, false});
}

Result<SettledNode> MetadataCache::settle(const StoreTreePtr& tree, uint32_t node, bool subdirectories) {
  if (tree->settled(node)) {
    bool ready = true;
    if (subdirectories && !tree->complete) {
      for (uint32_t child : tree->tree.nodes[node].children) ready = ready && tree->settled(child);
    }
    if (ready) return SettledNode{tree, node};
  }
  std::string relative = node < tree->tree.nodes.size() ? tree->tree.path_of(node) : std::string();
  return settle(tree->path, relative, subdirectories);
}

Result<StoreTreePtr> MetadataCache::get(const StorePath& path) {
  std::shared_ptr<Walk> walk;
  auto found = find_or_walk(path, &walk);
  if (!found || *found) return found;
  auto whole = wait(std::move(walk), Want{"", false, true});
  if (!whole) return whole.error();
  return whole->tree;
}

size_t MetadataCache::walks_in_flight() const {
  std::lock_guard lock(mutex_);
  return walks_.size();
}

StoreTreePtr MetadataCache::load_from_disk(const StorePath& path) {
  std::string file = file_of(path);
  Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return nullptr;
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || st.st_size > (1ll << 31)) return nullptr;
  std::string data(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  auto tree = done == data.size() ? Tree::deserialize(data) : Result<Tree>(make_error(EIO, "short read"));
  if (!tree) {
    LOG_WARNING("discarding damaged metadata %s: %s", file.c_str(), tree.error().message.c_str());
    ::unlink(file.c_str());
    return nullptr;
  }
  return std::make_shared<const StoreTree>(StoreTree{path, std::move(*tree)});
}

void MetadataCache::save_to_disk(const StorePath& path, const Tree& tree) noexcept {
  try {
    save(path, tree);
  } catch (const std::exception& e) {
    LOG_WARNING("cannot save metadata of %s: %s", path.base_name().c_str(), e.what());
  }
}

void MetadataCache::save(const StorePath& path, const Tree& tree) {
  std::string data = tree.serialize();
  std::ostringstream tmp;
  tmp << directory_ << "/.tmp-" << path.base_name() << "-" << std::this_thread::get_id();
  std::string tmp_name = tmp.str();
  Fd fd(::open(tmp_name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  bool ok = fd.valid() && write_all(fd.get(), data).ok();
  fd.reset();
  // Written whole under a temporary name, then renamed: a crash leaves the old state or the new.
  if (!ok || ::rename(tmp_name.c_str(), file_of(path).c_str()) != 0) {
    LOG_WARNING("cannot save metadata of %s: %s", path.base_name().c_str(), std::strerror(errno));
    ::unlink(tmp_name.c_str());
  }
}

void MetadataCache::remember_locked(const std::string& key, StoreTreePtr tree) {
  if (trees_.contains(key)) return;
  recent_.push_front(key);
  nodes_ += tree->tree.nodes.size();
  trees_.emplace(key, Cached{std::move(tree), recent_.begin()});
  // Inodes the kernel holds keep their own reference: only this map's copy goes.
  while (nodes_ > options_.max_nodes && recent_.size() > 1) {
    auto oldest = trees_.find(recent_.back());
    nodes_ -= oldest->second.tree->tree.nodes.size();
    trees_.erase(oldest);
    recent_.pop_back();
  }
}

size_t MetadataCache::nodes_in_memory() const {
  std::lock_guard lock(mutex_);
  return nodes_;
}

Result<std::vector<StorePath>> MetadataCache::list_top() {
  auto listed = upstream_.list_store();
  if (listed) return listed;
  LOG_WARNING("listing the upstream store failed (%s): listing cached paths", listed.error().message.c_str());
  std::set<std::string> names;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [name, tree] : trees_) names.insert(name);
  }
  for (const StorePath& path : stored_paths(directory_)) names.insert(path.base_name());
  std::vector<StorePath> paths;
  for (const std::string& name : names) {
    if (auto path = StorePath::parse(name)) paths.push_back(std::move(*path));
  }
  return paths;
}

std::vector<StorePath> MetadataCache::stored_paths(const std::string& directory) {
  std::vector<StorePath> paths;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    std::string file = entry.path().filename().string();
    if (!file.ends_with(kTreeSuffix)) continue;
    if (auto path = StorePath::parse(std::string_view(file).substr(0, file.size() - kTreeSuffix.size()))) {
      paths.push_back(std::move(*path));
    }
  }
  return paths;
}

}  // namespace lazystore
