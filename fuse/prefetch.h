// `lazystore-ctl prefetch`: whole trees of store paths (or directories and files inside them)
// fetched into the content cache by a few threads per request, through the caches like a reader
// but never through the FUSE ops.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "chunk_cache.h"
#include "control_protocol.h"
#include "metadata_cache.h"
#include "result.h"
#include "upstream/upstream.h"

namespace lazystore {

class Prefetcher {
 public:
  // Files fetched at once per request: a profile's small files wait for round trips, not the
  // link (239 headers at 0.5 ms RTT: 143 ms over NFS and 51 ms over HTTP with 8, 222 / 65 with 4).
  static constexpr unsigned kThreadsPerJob = 8;
  static constexpr size_t kMaxJobs = 8;  // prefetch requests running at once

  class Job;

  // `mountpoint`: paths under it are accepted as well as /nix/store/… and HASH-NAME/….
  Prefetcher(ChunkCache& cache, MetadataCache& metadata, Upstream& upstream, std::string mountpoint)
      : cache_(cache), metadata_(metadata), upstream_(upstream), mountpoint_(std::move(mountpoint)) {}
  ~Prefetcher() { stop(); }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Lists the files under `paths` and starts fetching them; an Error for a path that is not
  // valid, when none of them exists, or when kMaxJobs run already (paths that do not exist while
  // others do count as failed files). A path to a file waits only for the directories on its
  // way (MetadataCache::settle), a directory or a store path for its whole tree.
  Result<std::shared_ptr<Job>> start(const std::vector<std::string>& paths);

  // Until the job is done or the prefetcher stops; `report` gets the progress at once, every
  // `interval` and at the end, and returns false to stop reporting (its reader is gone).
  PrefetchResult wait(Job& job, std::chrono::milliseconds interval,
                      const std::function<bool(const PrefetchProgress&)>& report);

  static PrefetchQueued queued(const Job& job);
  static PrefetchProgress progress(const Job& job);

  void stop();  // cancels every job and joins its threads

 private:
  struct Item {
    StoreTreePtr tree;
    uint32_t node;
    uint64_t size;
  };

  Status collect(std::string_view path, std::vector<Item>& items);
  // collect() of every path, kResolvers at once: the files of a profile wait together for the
  // directories on their way, not one after another. Items in the order of `paths`. A path that
  // does not exist is logged and counted in `missing`; an error only when all are missing.
  Status collect_all(const std::vector<std::string>& paths, std::vector<Item>& items, uint64_t& missing);
  static constexpr size_t kResolvers = 16;
  void work(Job& job);
  void reap_finished();

  ChunkCache& cache_;
  MetadataCache& metadata_;
  Upstream& upstream_;
  const std::string mountpoint_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;                      // guards jobs_
  std::list<std::shared_ptr<Job>> jobs_;  // joined when finished (reaped) or at stop
};

class Prefetcher::Job {
 public:
  std::vector<Item> items;
  uint64_t total_bytes = 0;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> files_done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<uint64_t> failed{0};
  std::mutex mutex;
  std::condition_variable finished;
  unsigned running = 0;  // threads still working; guarded by mutex
  std::vector<std::thread> threads;
};

}  // namespace lazystore
