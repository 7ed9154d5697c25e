#include "metadata_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "fd.h"
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
  return NodeKey{std::move(*path), slash == std::string_view::npos ? std::string() : std::string(key.substr(slash + 1))};
}
namespace {

constexpr size_t kMaxAbsentEntries = 100'000;
constexpr std::string_view kTreeSuffix = ".tree";

}  // namespace

Result<std::unique_ptr<MetadataCache>> MetadataCache::open(Upstream& upstream, std::string directory,
                                                           double negative_timeout_seconds, Stats& stats,
                                                           size_t max_nodes) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return make_error(ec.value(), "metadata cache " + directory + ": " + ec.message());
  // Left over from a write cut short by a crash.
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    if (entry.path().filename().string().starts_with(".tmp-")) std::filesystem::remove(entry.path(), ec);
  }
  return std::unique_ptr<MetadataCache>(
      new MetadataCache(upstream, std::move(directory), negative_timeout_seconds, stats, max_nodes));
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

void MetadataCache::save_to_disk(const StoreTree& tree) {
  std::string data = tree.tree.serialize();
  std::ostringstream tmp;
  tmp << directory_ << "/.tmp-" << tree.path.base_name() << "-" << std::this_thread::get_id();
  std::string tmp_name = tmp.str();
  Fd fd(::open(tmp_name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  bool ok = fd.valid();
  for (size_t done = 0; ok && done < data.size();) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n <= 0) ok = false; else done += static_cast<size_t>(n);
  }
  fd.reset();
  // Written whole under a temporary name, then renamed: a crash leaves the old state or the new.
  if (!ok || ::rename(tmp_name.c_str(), file_of(tree.path).c_str()) != 0) {
    LOG_WARNING("cannot save metadata of %s: %s", tree.path.base_name().c_str(), std::strerror(errno));
    ::unlink(tmp_name.c_str());
  }
}

Result<StoreTreePtr> MetadataCache::fetch(const StorePath& path) {
  if (StoreTreePtr cached = load_from_disk(path)) return cached;
  stats_.metadata_misses++;
  auto exists = upstream_.exists(path);
  if (!exists) return exists.error();
  if (!*exists) return make_error(ENOENT, path.base_name() + ": no such store path");
  auto tree = upstream_.list_tree(path);
  if (!tree) return tree.error();
  auto made = std::make_shared<const StoreTree>(StoreTree{path, std::move(*tree)});
  save_to_disk(*made);
  return StoreTreePtr(made);
}

Result<StoreTreePtr> MetadataCache::get(const StorePath& path) {
  const std::string& key = path.base_name();
  std::promise<Result<StoreTreePtr>> promise;
  {
    std::unique_lock lock(mutex_);
    if (auto it = trees_.find(key); it != trees_.end()) {
      stats_.metadata_hits++;
      recent_.splice(recent_.begin(), recent_, it->second.recent);
      return it->second.tree;
    }
    if (auto it = absent_until_.find(key); it != absent_until_.end()) {
      if (Clock::now() < it->second) return make_error(ENOENT, key + ": no such store path");
      absent_until_.erase(it);
    }
    if (auto it = in_flight_.find(key); it != in_flight_.end()) {
      auto waiting = it->second;
      lock.unlock();
      return waiting.get();
    }
    in_flight_.emplace(key, promise.get_future().share());
  }
  auto result = fetch(path);
  {
    std::lock_guard lock(mutex_);
    if (result) {
      remember_locked(key, *result);
    } else if (result.error().code == ENOENT) {
      if (absent_until_.size() >= kMaxAbsentEntries) absent_until_.clear();
      absent_until_[key] = Clock::now() + negative_timeout_;
    }
    in_flight_.erase(key);
  }
  promise.set_value(result);
  return result;
}

void MetadataCache::remember_locked(const std::string& key, StoreTreePtr tree) {
  if (trees_.contains(key)) return;
  recent_.push_front(key);
  nodes_ += tree->tree.nodes.size();
  trees_.emplace(key, Cached{std::move(tree), recent_.begin()});
  // Inodes the kernel holds keep their own reference: only this map's copy goes.
  while (nodes_ > max_nodes_ && recent_.size() > 1) {
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
  LOG_WARNING("listing the upstream store failed (%s): listing cached paths",
              listed.error().message.c_str());
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
