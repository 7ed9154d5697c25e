// The content cache: files fetched in chunks as read, kept on local disk under a bound.
//
// One data file per cached upstream file, named by the xxh3-128 of its key. File bytes sit at
// their own offsets (sparse), so a read of cached data is spliced from the data file. After the
// content, at offset `size`, is one 24-byte slot per chunk: {index, xxh3 of the chunk, check}.
// A slot is written only after its chunk's bytes, and holds the hash of the bytes as fetched, so
// a kill -9 at any instant leaves either no slot (a miss) or a slot whose hash tells whether the
// bytes on disk are right. Each chunk is verified against its slot on first use after start; a
// mismatch is a miss and is refetched, never served.
//
// Eviction is least-recently-opened first, whole files, never a file that is open (pinned).
//
// The file's size is not stored: verify_all() recovers it from the data file's length, which is
// `size + 24 * (k + 1)` for the highest slot k written, by finding the k whose slot checks out
// (the check binds the size). A file with no such slot holds nothing usable and is dropped.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fd.h"
#include "result.h"
#include "stats.h"
#include "worker_pool.h"

namespace lazystore {

struct ChunkCacheOptions {
  std::string directory;               // the data files live in DIRECTORY/XX/<id>
  uint64_t max_bytes = 10ull << 30;    // bound on the disk blocks of all data files
  uint32_t chunk_size = 1u << 20;
};

// Fills buf with the upstream file's bytes at offset; returns how many (short only at EOF).
using FetchFn = std::function<Result<size_t>(uint64_t offset, std::span<std::byte> buf)>;

class CachedFile;

class ChunkCache {
 public:
  struct ReadReply {
    int fd = -1;            // splice `length` bytes from fd at fd_offset, or, when fd < 0,
    uint64_t fd_offset = 0;
    size_t length = 0;
    std::vector<std::byte> memory;  // answer these bytes (the cache could not keep them)
  };

  static Result<std::unique_ptr<ChunkCache>> open(const ChunkCacheOptions& options, Stats& stats);
  ~ChunkCache();
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  void start_workers(unsigned threads) { workers_.start(threads); }
  void stop_workers() { workers_.stop(); }

  // The cache entry of `key` (e.g. "<store path>/<relative path>") of a file of `size` bytes,
  // pinned (not evictable) until release().
  Result<std::shared_ptr<CachedFile>> pin(std::string_view key, uint64_t size);
  void release(const std::shared_ptr<CachedFile>& file);

  // Makes [offset, offset + length) cached and verified, fetching what is missing (a miss of a
  // chunk another thread is fetching waits for that fetch), and says where to answer from.
  Result<ReadReply> read(CachedFile& file, uint64_t offset, size_t length, const FetchFn& fetch);
  // Fetches up to `chunks` chunks from `offset` on in the background.
  void prefetch(const std::shared_ptr<CachedFile>& file, uint64_t offset, unsigned chunks,
                FetchFn fetch);
  // Bytes of the file present in the cache (verified or not yet verified).
  uint64_t cached_bytes(const CachedFile& file) const;

  // Fetches every chunk of the file not yet cached (prefetch): an error, or ENOSPC when the
  // cache has no room left for it.
  Status fill(CachedFile& file, const FetchFn& fetch);

  struct EvictReport {
    uint64_t files = 0;
    uint64_t bytes = 0;  // disk bytes freed
    uint64_t pinned_files = 0;  // kept because they are open
  };
  // Drops every cached file that is not open.
  EvictReport evict_all();

  struct VerifyReport {
    uint64_t files = 0;
    uint64_t chunks = 0;      // chunks with a slot, checked against their xxh3
    uint64_t bytes = 0;       // bytes of those chunks
    uint64_t bad_chunks = 0;  // mismatches: their slots were cleared (a later read refetches)
    uint64_t dropped_files = 0;  // data files without a usable slot, removed
  };
  // Rechecks every cached chunk against its slot's xxh3.
  VerifyReport verify_all();

  uint64_t used_bytes() const;
  uint64_t limit() const { return options_.max_bytes; }
  uint32_t chunk_size() const { return options_.chunk_size; }

 private:
  struct Entry {
    uint64_t disk_bytes = 0;     // blocks of the data file, as last measured
    uint64_t pending_bytes = 0;  // reserved for fills in progress
    int pins = 0;
    std::list<std::string>::iterator lru;
    std::shared_ptr<CachedFile> file;  // loaded while pinned
  };
  // Cached: in the data file. Uncached: the bytes are in memory only (no room in the cache).
  // Skipped: background work that found no room and fetched nothing.
  enum class Fill { Cached, Uncached, Skipped };

  ChunkCache(ChunkCacheOptions options, Stats& stats) : options_(std::move(options)), stats_(stats) {}
  Status scan();
  std::string data_path(const std::string& id) const;
  Result<std::shared_ptr<CachedFile>> load(const std::string& id, uint64_t size);
  // One more pin on a file that is already pinned (for background work on it).
  bool pin_existing(const std::shared_ptr<CachedFile>& file);
  Result<Fill> ensure_chunk(CachedFile& file, uint32_t index, const FetchFn& fetch,
                            std::vector<std::byte>& uncached, bool background);
  Result<Fill> fetch_chunk(CachedFile& file, uint32_t index, const FetchFn& fetch,
                           std::vector<std::byte>& data, bool background);
  bool verify_chunk(CachedFile& file, uint32_t index);
  // Reserves disk bytes for a fill, evicting unpinned files, least recently used first, until
  // the fill fits both the bound and the free space of the cache's disk; false (and why) if not.
  bool reserve(const std::string& id, uint64_t bytes, std::string& why);
  // Free bytes of the disk under the cache directory (UINT64_MAX when unknown).
  uint64_t disk_free() const;
  // Counts a chunk served without being cached; logs why, at most every kNoRoomLogInterval.
  void note_uncached(const std::string& why);
  void settle(const std::string& id, uint64_t reserved, int fd);
  void evict_locked(std::unordered_map<std::string, Entry>::iterator it);
  // verify_all() of one file: through its loaded state when pinned, else from the data file.
  void verify_loaded(CachedFile& file, VerifyReport& report);
  bool verify_on_disk(const std::string& id, VerifyReport& report);

  const ChunkCacheOptions options_;
  Stats& stats_;
  mutable std::mutex mutex_;  // guards entries_, lru_, used_
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // front = least recently used
  uint64_t used_ = 0;
  uint64_t pending_ = 0;  // the sum of the entries' pending_bytes: reserved, maybe not yet on disk
  std::mutex log_mutex_;  // guards the two below
  std::chrono::steady_clock::time_point next_no_room_log_{};
  uint64_t uncached_since_log_ = 0;
  WorkerPool workers_;
};

}  // namespace lazystore
