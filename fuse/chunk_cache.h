// The content cache: files fetched in chunks as read, kept on local disk under a bound.
//
// Three parts: the data file format (chunk_file.h: content at its own offsets, then a slot per
// chunk with its xxh3), the budget (cache_budget.h: LRU, pins, reservations, eviction), and
// here the per-chunk state machine: a chunk is Absent, Unverified (a slot from an earlier run),
// Verified, or Busy (one thread fetches or verifies it; the others wait for that). Each chunk is
// verified against its slot on first use after start; a mismatch is a miss and is refetched,
// never served.
//
// Eviction is least-recently-opened first, whole files, never a file that is pinned (open).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache_budget.h"
#include "data_directory.h"
#include "descriptor_pool.h"
#include "fd.h"
#include "result.h"
#include "stats.h"
#include "worker_pool.h"

namespace lazystore {

struct ChunkCacheOptions {
  std::string directory;             // the data files live in DIRECTORY/XX/<id>
  uint64_t max_bytes = 10ull << 30;  // bound on the disk blocks of all data files
  uint32_t chunk_size = 1u << 20;
  // How long a reader waits for another thread's fetch or verification of the same chunk.
  std::chrono::milliseconds wait_timeout = std::chrono::minutes(5);
  // Data files kept open at most, besides those in use; 0: a quarter of RLIMIT_NOFILE.
  size_t descriptors = 0;
};

// Fills buf with the upstream file's bytes at offset; returns how many (short only at EOF).
using FetchFn = std::function<Result<size_t>(uint64_t offset, std::span<std::byte> buf)>;

class CachedFile;

class ChunkCache {
 public:
  struct ReadReply {
    int fd = -1;  // splice `length` bytes from fd at fd_offset, or, when fd < 0,
    uint64_t fd_offset = 0;
    size_t length = 0;
    std::vector<std::byte> memory;  // answer these bytes (the cache could not keep them)
    DescriptorPool::Lease lease;    // keeps fd open while the reply lives
  };

  static Result<std::unique_ptr<ChunkCache>> open(const ChunkCacheOptions& options, Stats& stats);
  ~ChunkCache();
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  void start_workers(unsigned threads) { workers_.start(threads); }
  void stop_workers() { workers_.stop(); }

  // The cache entry of `key` (e.g. "<store path>/<relative path>") of a file of `size` bytes,
  // pinned (not evictable) until release(); EFBIG past Tree::kMaxFileSize. Memory per pinned
  // file follows the chunks cached, not its size.
  Result<std::shared_ptr<CachedFile>> pin(std::string_view key, uint64_t size);
  void release(const std::shared_ptr<CachedFile>& file);

  // Makes [offset, offset + length) cached and verified, fetching what is missing (a miss of a
  // chunk another thread is fetching waits for that fetch), and says where to answer from.
  Result<ReadReply> read(CachedFile& file, uint64_t offset, size_t length, const FetchFn& fetch);
  // Fetches up to `chunks` chunks from `offset` on in the background.
  void prefetch(const std::shared_ptr<CachedFile>& file, uint64_t offset, unsigned chunks, FetchFn fetch);
  // Bytes of the file present in the cache (verified or not yet verified).
  uint64_t cached_bytes(const CachedFile& file) const;

  // Fetches every chunk of the file not yet cached (prefetch): an error, or ENOSPC when the
  // cache has no room left for it.
  Status fill(CachedFile& file, const FetchFn& fetch);

  using EvictReport = CacheBudget::EvictReport;
  // Drops every cached file that is not open.
  EvictReport evict_all() { return budget_.evict_all(); }

  struct VerifyReport {
    uint64_t files = 0;
    uint64_t chunks = 0;         // chunks with a slot, checked against their xxh3
    uint64_t bytes = 0;          // bytes of those chunks
    uint64_t bad_chunks = 0;     // mismatches: their slots were cleared (a later read refetches)
    uint64_t dropped_files = 0;  // data files without a usable slot, removed
  };
  // Rechecks every cached chunk against its slot's xxh3.
  VerifyReport verify_all();

  uint64_t used_bytes() const { return budget_.used(); }
  uint64_t limit() const { return budget_.limit(); }
  uint32_t chunk_size() const { return options_.chunk_size; }

 private:
  // Cached: in the data file. Uncached: the bytes are in memory only (no room in the cache).
  // Skipped: background work that found no room and fetched nothing.
  enum class Fill { Cached, Uncached, Skipped };

  ChunkCache(ChunkCacheOptions options, DataDirectory directory, Stats& stats);
  Result<std::shared_ptr<CachedFile>> load(const std::string& id, uint64_t size);
  // One more pin on a file that is already pinned (for background work on it).
  bool pin_existing(const std::shared_ptr<CachedFile>& file);
  void release_id(const std::string& id);
  // The data file's descriptor (reopened when the pool closed it; created with `create`).
  // Never called with file.mutex held.
  Result<DescriptorPool::Lease> descriptor(CachedFile& file, bool create);
  Result<Fill> ensure_chunk(CachedFile& file, uint64_t index, const FetchFn& fetch, std::vector<std::byte>& uncached,
                            bool background);
  Result<Fill> fetch_chunk(CachedFile& file, uint64_t index, const FetchFn& fetch, std::vector<std::byte>& data,
                           bool background);
  // Counts a chunk served without being cached; logs why, at most every kNoRoomLogInterval.
  void note_uncached(const std::string& why);
  // verify_all() of one file: through its loaded state when pinned, else from the data file.
  void verify_loaded(CachedFile& file, VerifyReport& report);
  bool verify_on_disk(const std::string& id, VerifyReport& report);

  const ChunkCacheOptions options_;
  const DataDirectory directory_;
  Stats& stats_;
  const std::shared_ptr<DescriptorPool> descriptors_;
  CacheBudget budget_;
  mutable std::mutex mutex_;  // guards loaded_
  // The state of every pinned file, shared by all who pin it.
  std::unordered_map<std::string, std::shared_ptr<CachedFile>> loaded_;
  std::mutex log_mutex_;  // guards the two below
  std::chrono::steady_clock::time_point next_no_room_log_{};
  uint64_t uncached_since_log_ = 0;
  WorkerPool workers_{1024, &stats_.task_failures};
};

}  // namespace lazystore
