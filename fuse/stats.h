// Counters operators read (user.lazystore.stats on the mount root; lazystore-ctl later).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace lazystore {

struct Stats {
  std::atomic<uint64_t> lookups{0};
  std::atomic<uint64_t> invalid_names{0};      // names refused before any upstream access
  std::atomic<uint64_t> upstream_requests{0};  // calls into the upstream backend
  std::atomic<uint64_t> upstream_bytes{0};     // file bytes fetched from upstream
  std::atomic<uint64_t> upstream_errors{0};
  std::atomic<uint64_t> upstream_timeouts{0};     // calls past their deadline
  std::atomic<uint64_t> upstream_disconnects{0};  // connections dropped after an error
  std::atomic<uint64_t> upstream_connects{0};     // connections made (the first, then reconnects)
  std::atomic<uint64_t> upstream_connect_failures{0};
  std::atomic<uint64_t> served_bytes{0};       // bytes answered to read requests
  std::atomic<uint64_t> chunk_hits{0};
  std::atomic<uint64_t> chunk_misses{0};
  std::atomic<uint64_t> merged_misses{0};      // misses that waited for another fetch of the chunk
  std::atomic<uint64_t> readahead_chunks{0};
  std::atomic<uint64_t> verify_failures{0};    // cached chunks whose xxh3 did not match
  std::atomic<uint64_t> evictions{0};          // files evicted from the content cache
  std::atomic<uint64_t> cache_write_errors{0};  // e.g. a full disk; data was served uncached
  std::atomic<uint64_t> metadata_hits{0};
  std::atomic<uint64_t> metadata_misses{0};
  std::atomic<uint64_t> errors{0};             // operations answered with an error other than ENOENT

  // One JSON object; cache_bytes/cache_limit come from the cache.
  std::string to_json(uint64_t cache_bytes, uint64_t cache_limit) const;
};

}  // namespace lazystore
