#include "prefetch.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "log.h"

namespace lazystore {

Status Prefetcher::collect(std::string_view path, std::vector<Item>& items) {
  std::string_view rest = path;
  std::string mount_prefix = mountpoint_ + "/";
  if (!mountpoint_.empty() && rest.starts_with(mount_prefix)) {
    rest.remove_prefix(mount_prefix.size());
  } else if (rest.starts_with("/nix/store/")) {
    rest.remove_prefix(std::strlen("/nix/store/"));
  } else if (rest.starts_with("/")) {
    return make_error(EINVAL, std::string(path) + " is not under /nix/store or the mount point");
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  size_t slash = rest.find('/');
  auto store_path = StorePath::parse(rest.substr(0, slash));
  if (!store_path) return make_error(EINVAL, std::string(path) + ": " + store_path.error().message);
  if (slash != std::string_view::npos) {
    // A file needs only the directories on its way listed, not the whole tree: a profile's files
    // start while the walk of a large store path goes on.
    auto settled = metadata_.settle(*store_path, rest.substr(slash + 1));
    if (!settled && settled.error().code == ENOENT) {
      return make_error(ENOENT, std::string(path) + ": no such file or directory");
    }
    if (!settled) return make_error(settled.error().code, std::string(path) + ": " + settled.error().message);
    const TreeNode& node = settled->tree->tree.nodes[settled->node];
    if (node.type == NodeType::Regular) {
      if (node.size > 0) items.push_back({settled->tree, settled->node, node.size});
      return {};
    }
    if (node.type != NodeType::Directory) return {};
  }
  auto tree = metadata_.get(*store_path);
  if (!tree) return make_error(tree.error().code, std::string(path) + ": " + tree.error().message);
  uint32_t top = Tree::kRoot;
  if (slash != std::string_view::npos) {
    auto node = (*tree)->tree.resolve(rest.substr(slash + 1));
    if (!node) return make_error(ENOENT, std::string(path) + ": no such file or directory");
    top = *node;
  }
  std::vector<uint32_t> stack{top};
  const auto& nodes = (*tree)->tree.nodes;
  while (!stack.empty()) {
    uint32_t n = stack.back();
    stack.pop_back();
    if (nodes[n].type == NodeType::Directory) {
      stack.insert(stack.end(), nodes[n].children.begin(), nodes[n].children.end());
    } else if (nodes[n].type == NodeType::Regular && nodes[n].size > 0) {
      items.push_back({*tree, n, nodes[n].size});
    }
  }
  return {};
}

Status Prefetcher::collect_all(const std::vector<std::string>& paths, std::vector<Item>& items, uint64_t& missing) {
  std::vector<std::vector<Item>> found(paths.size());
  std::vector<Status> status(paths.size());
  std::atomic<size_t> next{0};
  auto resolve = [&]() noexcept {
    for (size_t i; (i = next.fetch_add(1)) < paths.size();) {
      try {
        status[i] = collect(paths[i], found[i]);
      } catch (const std::exception& e) {
        status[i] = make_error(ENOMEM, paths[i] + ": " + e.what());
      }
    }
  };
  std::vector<std::thread> helpers;
  size_t wanted = std::min(kResolvers, paths.size()) - (paths.empty() ? 0 : 1);
  try {
    while (helpers.size() < wanted) helpers.emplace_back(resolve);
  } catch (const std::system_error&) {
    // Fewer helpers: this thread resolves what they do not.
  }
  resolve();
  for (auto& helper : helpers) helper.join();
  std::optional<Error> first_missing;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (!status[i] && status[i].error().code == ENOENT) {
      // A stale line of a profile: the others are still worth fetching.
      LOG_WARNING("prefetch %s", status[i].error().message.c_str());
      if (!first_missing) first_missing = status[i].error();
      missing++;
      continue;
    }
    if (!status[i]) return status[i].error();
    items.insert(items.end(), found[i].begin(), found[i].end());
  }
  if (first_missing && missing == paths.size()) return *first_missing;
  return {};
}

void Prefetcher::work(Job& job) {
  for (;;) {
    size_t i = job.next.fetch_add(1);
    if (i >= job.items.size() || stopping_) break;
    const Item& item = job.items[i];
    auto pinned = cache_.pin(item.tree->key_of(item.node), item.size);
    Status filled = pinned ? Status() : Status(pinned.error());
    if (pinned) {
      StoreTreePtr tree = item.tree;
      uint32_t node = item.node;
      FetchFn fetch = [this, tree, node](uint64_t offset, std::span<std::byte> buf) {
        return upstream_.read(tree->path, tree->tree, node, offset, buf);
      };
      filled = cache_.fill(**pinned, fetch);
      cache_.release(*pinned);
    }
    if (filled) {
      job.bytes_done += item.size;
      job.files_done++;
    } else {
      job.failed++;
      LOG_WARNING("prefetch %s: %s", item.tree->key_of(item.node).c_str(), filled.error().message.c_str());
    }
  }
  std::lock_guard lock(job.mutex);
  if (--job.running == 0) job.finished.notify_all();
}

void Prefetcher::reap_finished() {
  std::list<std::shared_ptr<Job>> done;
  {
    std::lock_guard lock(mutex_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      bool finished;
      {
        std::lock_guard job_lock((*it)->mutex);
        finished = (*it)->running == 0;
      }
      if (finished)
        done.splice(done.end(), jobs_, it++);
      else
        ++it;
    }
  }
  for (auto& job : done) {
    for (auto& t : job->threads) t.join();
  }
}

Result<std::shared_ptr<Prefetcher::Job>> Prefetcher::start(const std::vector<std::string>& paths) {
  reap_finished();
  auto job = std::make_shared<Job>();
  uint64_t missing = 0;
  if (auto collected = collect_all(paths, job->items, missing); !collected) return collected.error();
  job->failed = missing;
  for (const auto& item : job->items) job->total_bytes += item.size;
  std::lock_guard lock(mutex_);
  if (stopping_) return make_error(ESHUTDOWN, "the daemon is stopping");
  if (jobs_.size() >= kMaxJobs) {
    return make_error(EBUSY, "too many prefetches running (" + std::to_string(jobs_.size()) + "); try again later");
  }
  auto threads = static_cast<unsigned>(std::min<size_t>(kThreadsPerJob, job->items.size()));
  Job* raw = job.get();
  std::lock_guard job_lock(raw->mutex);
  raw->running = threads;
  for (unsigned i = 0; i < threads; ++i) raw->threads.emplace_back([this, raw] { work(*raw); });
  jobs_.push_back(job);
  return job;
}

PrefetchQueued Prefetcher::queued(const Job& job) { return {job.items.size(), job.total_bytes}; }

PrefetchProgress Prefetcher::progress(const Job& job) {
  PrefetchProgress p;
  p.files = job.files_done;
  p.bytes = job.bytes_done;
  p.failed = job.failed;
  p.total_files = job.items.size();
  p.total_bytes = job.total_bytes;
  return p;
}

PrefetchResult Prefetcher::wait(Job& job, std::chrono::milliseconds interval,
                                const std::function<bool(const PrefetchProgress&)>& report) {
  bool reporting = static_cast<bool>(report);
  if (reporting) reporting = report(progress(job));
  {
    std::unique_lock lock(job.mutex);
    while (job.running > 0 && !stopping_) {
      if (!reporting) {
        job.finished.wait(lock, [&] { return job.running == 0 || stopping_; });
        break;
      }
      if (job.finished.wait_for(lock, interval, [&] { return job.running == 0 || stopping_; })) break;
      lock.unlock();
      reporting = report(progress(job));
      lock.lock();
    }
  }
  if (reporting) report(progress(job));
  PrefetchResult result;
  result.files = job.files_done;
  result.bytes = job.bytes_done;
  result.failed = job.failed;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - job.started).count();
  return result;
}

void Prefetcher::stop() {
  if (stopping_.exchange(true)) return;
  std::list<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard lock(mutex_);
    jobs.swap(jobs_);
  }
  for (auto& job : jobs) {
    std::lock_guard lock(job->mutex);
    job->finished.notify_all();
  }
  for (auto& job : jobs) {
    for (auto& t : job->threads) t.join();
  }
}

}  // namespace lazystore
