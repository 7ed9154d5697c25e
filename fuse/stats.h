// Counters operators read (user.lazystore.stats on the mount root; lazystore-ctl later).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace lazystore {

// Durations in power-of-two microsecond buckets, lock-free: bucket i counts durations below
// 2^i µs (the last one everything longer). Percentiles are bucket upper bounds, so within 2x.
class LatencyHistogram {
 public:
  static constexpr size_t kBuckets = 32;  // up to 2^31 µs, about 36 min

  void record(std::chrono::nanoseconds duration);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum_seconds() const { return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) * 1e-9; }
  // The q-quantile (0 < q <= 1) in seconds; 0 when nothing was recorded.
  double percentile(double q) const;
  std::array<uint64_t, kBuckets> buckets() const;

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

// Measures from construction to destruction into a histogram.
class LatencyTimer {
 public:
  explicit LatencyTimer(LatencyHistogram& histogram)
      : histogram_(histogram), started_(std::chrono::steady_clock::now()) {}
  ~LatencyTimer() { histogram_.record(std::chrono::steady_clock::now() - started_); }
  LatencyTimer(const LatencyTimer&) = delete;
  LatencyTimer& operator=(const LatencyTimer&) = delete;

 private:
  LatencyHistogram& histogram_;
  std::chrono::steady_clock::time_point started_;
};

// One counter as operators see it (lazystore-ctl stats, Prometheus).
struct StatsCounter {
  const char* name;
  const char* help;
  uint64_t value;
};

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
  std::atomic<uint64_t> uncached_chunks{0};  // answered from memory: no room in the cache or on its disk
  std::atomic<uint64_t> metadata_hits{0};
  std::atomic<uint64_t> metadata_misses{0};
  std::atomic<uint64_t> errors{0};             // operations answered with an error other than ENOENT
  // HTTP binary cache upstream.
  std::atomic<uint64_t> http_requests{0};      // HTTP transfers started (retries included)
  std::atomic<uint64_t> http_bytes{0};         // body bytes received over HTTP
  std::atomic<uint64_t> http_retries{0};       // transfers repeated after a failed one
  std::atomic<uint64_t> http_failovers{0};     // switches to another base URL
  std::atomic<uint64_t> nar_hash_failures{0};  // whole NARs whose size or sha256 was wrong
  std::atomic<uint64_t> signature_failures{0};  // narinfos refused: unsigned or bad signature
  // Crash recovery (supervised mounts).
  std::atomic<uint64_t> replayed_requests{0};  // requests a dead server had read, answered by this one
  std::atomic<uint64_t> refused_replies{0};    // replies the kernel refused: answered before, or resent
  std::atomic<uint64_t> forgotten_inodes{0};   // inode numbers dropped: the kernel forgot them
  LatencyHistogram upstream_latency;           // every upstream call
  LatencyHistogram read_latency;               // every FUSE read, cached or not

  // Every counter above, in to_json's order (lazystore-ctl, Prometheus); a new counter goes in
  // both (a unit test compares them).
  std::vector<StatsCounter> counters() const;

  // One JSON object; cache_bytes/cache_limit come from the cache.
  std::string to_json(uint64_t cache_bytes, uint64_t cache_limit) const;
};

}  // namespace lazystore
