// The content cache: files fetched as read, kept on local disk under a bound.
//
// Three parts: the data file format (chunk_file.h: content at its own offsets, then a slot per
// 4 KiB block with its xxh3), the budget (cache_budget.h: LRU, pins, reservations, eviction),
// and here the per-block state machine: a block is Absent, Unverified (a slot from an earlier
// run), Verified, or Busy (one thread fetches or verifies it; the others wait for that). Each
// block is verified against its slot on first use after start; a mismatch is a miss and is
// refetched, never served.
//
// Blocks are the unit of caching and verification; chunks (chunk_size, 1 MiB by default) the
// unit of fetching for streams and read-ahead. A stream read (ReadShape; the caller tells one:
// the start of a file, the previous read's continuation, a large read) fetches the missing
// blocks of the whole chunks it touches, each run of them in one request; a random read fetches
// only its own blocks, rounded out to the upstream's unit, so random small reads move about
// what they read, not whole chunks.
//
// Eviction is least recently used first, whole files, never a file that is pinned.
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

// How a read fetches what it misses: a stream read fetches whole chunks, a random read only its
// own blocks, rounded out to `alignment()` bytes (the upstream's unit; 0 or less than a block: a
// block). alignment is asked only when a random read has something to fetch: finding it out may
// cost the upstream a request (an HTTP manifest), which a cached read must not make.
struct ReadShape {
  bool stream = true;
  std::function<uint32_t()> alignment;
};

class CachedFile;
struct ChunkLayout;

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
  // The data file id of `key` ("<store path base name>/<relative path>"): its xxh3-128, whose
  // first two digits (the directory DIR/XX) are those of its store path's. The files of one
  // store path share a directory, as they do on the server: reading many of them after a restart
  // reads few directory and inode blocks, not one directory per file.
  static std::string id_of(std::string_view key);
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

  // The unit of caching and verification: the data file's slots are per block.
  static constexpr uint32_t kBlockSize = 4096;

  // Makes [offset, offset + length) cached and verified, fetching what is missing as `shape`
  // says (a miss of a block another thread is fetching waits for that fetch), and says where to
  // answer from.
  Result<ReadReply> read(CachedFile& file, uint64_t offset, size_t length, const FetchFn& fetch, ReadShape shape = {});
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
    uint64_t blocks = 0;         // blocks with a slot, checked against their xxh3
    uint64_t bytes = 0;          // bytes of those blocks
    uint64_t bad_blocks = 0;     // mismatches: their slots were cleared (a later read refetches)
    uint64_t dropped_files = 0;  // data files without a usable slot, removed
  };
  // Rechecks every cached block against its slot's xxh3.
  VerifyReport verify_all();

  uint64_t used_bytes() const { return budget_.used(); }
  uint64_t limit() const { return budget_.limit(); }
  uint32_t chunk_size() const { return options_.chunk_size; }

 private:
  // Cached: in the data file. Uncached: the bytes are in memory only (no room in the cache).
  // Skipped: background work that found no room and fetched nothing.
  enum class Fill { Cached, Uncached, Skipped };
  // Bytes of blocks from `first` on that a read got without caching them.
  struct Spill {
    uint64_t first = 0;
    std::vector<std::byte> bytes;
  };

  ChunkCache(ChunkCacheOptions options, DataDirectory directory, Stats& stats);
  Result<std::shared_ptr<CachedFile>> load(const std::string& id, uint64_t size);
  // One more pin on a file that is already pinned (for background work on it).
  bool pin_existing(const std::shared_ptr<CachedFile>& file);
  void release_id(const std::string& id);
  // The data file's descriptor (reopened when the pool closed it; created with `create`).
  // Never called with file.mutex held.
  Result<DescriptorPool::Lease> descriptor(CachedFile& file, bool create);
  // Blocks [first, end).
  struct BlockSpan {
    uint64_t first = 0, end = 0;
  };
  // Makes the blocks `need` verified, or, where the cache has no room, adds their bytes to
  // `uncached`. Each run of missing blocks is one fetch, which takes in the missing blocks
  // around it up to `reach` (which holds `need`). Background work skips what has no room.
  Result<Fill> ensure(CachedFile& file, BlockSpan need, BlockSpan reach, const FetchFn& fetch,
                      std::vector<Spill>& uncached, bool background);
  // Fetches blocks [first, end) into `data` and writes them and their slots to the data file.
  Result<Fill> fetch_run(CachedFile& file, uint64_t first, uint64_t end, const FetchFn& fetch,
                         std::vector<std::byte>& data, std::vector<uint64_t>& hashes, bool background);
  // Checks blocks [first, end) against their slots' hashes (`lock` is released meanwhile); a
  // mismatch clears the slot on disk and leaves the block absent, a good block becomes Verified
  // if `promote`, else stays as it was. One answer per block.
  std::vector<bool> check_run(CachedFile& file, std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t end,
                              bool promote);
  // check_run of Unverified blocks a read needs; mismatches are counted and logged.
  void verify_run(CachedFile& file, std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t end);
  // The blocks [first, end) of chunk `index`.
  std::pair<uint64_t, uint64_t> blocks_of_chunk(const CachedFile& file, uint64_t index) const;
  // Counts a run of blocks served without being cached; logs why, at most every
  // kNoRoomLogInterval.
  void note_uncached(const std::string& why);
  // verify_all() of one file: through its loaded state when pinned, else from the data file.
  void verify_loaded(CachedFile& file, VerifyReport& report);
  bool verify_on_disk(const std::string& id, VerifyReport& report);
  // Adds a checked run of blocks from `first` on (one answer each) to the report; counts and
  // logs the bad ones.
  void count_checked(const std::string& id, const ChunkLayout& layout, uint64_t first, const std::vector<bool>& good,
                     VerifyReport& report);

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
