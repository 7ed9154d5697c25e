// What operators read about a mount: one table of counters, gauges and latency histograms
// (LAZYSTORE_COUNTERS / LAZYSTORE_HISTOGRAMS below) drives the Stats members the daemon counts
// with (`stats.chunk_hits++`), the JSON of `user.lazystore.stats` and `lazystore-ctl stats
// --json`, the Prometheus text (# HELP lines) and the list of counters in docs/operating.md.
//
// Stats holds only lock-free atomics, so a supervised mount keeps it in memory shared with the
// supervisor (SharedStats): counters, histograms, the upstream's health and the last error
// survive a restart of the server process.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "lazystore_version.h"

namespace lazystore {

// X(name, help): a counter, `lazystore_<name>_total` in Prometheus. A new counter is one line
// here; names are stable (operators' dashboards use them).
#define LAZYSTORE_COUNTERS(X)                                                                     \
  X(lookups, "lookups of names")                                                                  \
  X(invalid_names, "names refused before any upstream access")                                    \
  X(upstream_requests, "calls into the upstream backend")                                         \
  X(upstream_bytes, "file bytes fetched from the upstream")                                       \
  X(upstream_errors, "upstream calls that failed")                                                \
  X(upstream_timeouts, "upstream calls past their deadline")                                      \
  X(upstream_disconnects, "upstream connections dropped after an error")                          \
  X(upstream_connects, "upstream connections made")                                               \
  X(upstream_connect_failures, "upstream connections that failed")                                \
  X(served_bytes, "bytes answered to read requests")                                              \
  X(chunk_hits, "reads served from the content cache, nothing fetched")                           \
  X(chunk_misses, "fetches from the upstream, each a run of missing 4 KiB blocks")                \
  X(merged_misses, "reads that waited for another fetch of the same blocks")                      \
  X(readahead_chunks, "chunks fetched ahead of sequential reads")                                 \
  X(verify_failures, "cached blocks whose xxh3 did not match")                                    \
  X(evictions, "files evicted from the content cache")                                            \
  X(cache_write_errors, "writes to the content cache that failed")                                \
  X(uncached_chunks, "fetches served without being cached (no room in the cache or on its disk)") \
  X(metadata_hits, "store path trees found in the metadata cache")                                \
  X(metadata_misses, "store path trees fetched from the upstream")                                \
  X(errors, "operations answered with an error other than ENOENT")                                \
  X(http_requests, "HTTP transfers started (retries included)")                                   \
  X(http_bytes, "body bytes received over HTTP")                                                  \
  X(http_retries, "HTTP transfers repeated after a failed one")                                   \
  X(http_failovers, "switches to another HTTP base URL")                                          \
  X(nar_hash_failures, "whole NARs whose size or sha256 was wrong")                               \
  X(signature_failures, "narinfos refused: unsigned or bad signature")                            \
  X(nar_downloads, "whole NARs downloaded (no manifest, or compressed)")                          \
  X(manifest_paths, "store paths listed from a verified manifest")                                \
  X(manifest_failures, "manifests refused: signature, path, NarHash or body")                     \
  X(block_hash_failures, "Range-read blocks that did not match their manifest")                   \
  X(leaf_failures, "leaves files missing or not matching their manifest (whole blocks read)")     \
  X(task_failures, "background tasks (read-ahead) that threw")                                    \
  X(cache_reopens, "data files reopened: their descriptor was closed to stay within the bound")   \
  X(server_restarts, "servers started after the one before died (supervised mounts)")             \
  X(replayed_requests, "requests a crashed server had read, answered by its successor")           \
  X(refused_replies, "replies the kernel refused (answered before a crash, or resent)")           \
  X(forgotten_inodes, "inode numbers dropped after the kernel forgot them")                       \
  X(metadata_partial_answers, "lookups answered from a tree still being listed")                  \
  X(opendir_requests, "directories the kernel asked to open (none once it opens them itself)")    \
  X(readdir_requests, "directory listings the kernel asked for (none for a listing it keeps)")    \
  X(open_requests, "files the kernel asked to open (none once it opens them itself)")            \
  X(ioctl_requests, "ioctls the kernel forwarded (isatty of an open file is one; it sends each)")

// X(name, help): a latency histogram, `lazystore_<name>_seconds` (a summary) in Prometheus.
#define LAZYSTORE_HISTOGRAMS(X)                     \
  X(upstream_latency, "duration of upstream calls") \
  X(read_latency, "duration of FUSE reads, cached or not")

// X(name, help, unit): a gauge the snapshot takes from outside Stats, `lazystore_<name>` (with
// `_<unit>` added unless the name ends in it) in Prometheus.
#define LAZYSTORE_GAUGES(X)                                  \
  X(cache_bytes, "disk bytes of the content cache", "bytes") \
  X(cache_limit, "bound of the content cache", "bytes")      \
  X(upstream_reachable, "1 unless the last upstream call failed to reach the upstream", "")

enum class Counter : size_t {
#define LAZYSTORE_ENUM(name, help) name,
  LAZYSTORE_COUNTERS(LAZYSTORE_ENUM)
#undef LAZYSTORE_ENUM
};
enum class Histogram : size_t {
#define LAZYSTORE_ENUM(name, help) name,
  LAZYSTORE_HISTOGRAMS(LAZYSTORE_ENUM)
#undef LAZYSTORE_ENUM
};
enum class Gauge : size_t {
#define LAZYSTORE_ENUM(name, help, unit) name,
  LAZYSTORE_GAUGES(LAZYSTORE_ENUM)
#undef LAZYSTORE_ENUM
};

enum class MetricKind { Counter, Gauge, Histogram };

// One row of the table: what every output is made from.
struct MetricInfo {
  std::string_view name;
  std::string_view help;
  MetricKind kind;
  std::string_view unit;  // "bytes", "seconds" or none

  std::string prometheus_name() const;  // lazystore_chunk_hits_total, lazystore_cache_limit_bytes
};

// Every metric in output order: counters, gauges, histograms.
std::span<const MetricInfo> metric_table();
const MetricInfo& info(Counter counter);
const MetricInfo& info(Gauge gauge);
const MetricInfo& info(Histogram histogram);

inline constexpr size_t kCounterCount = 0
#define LAZYSTORE_COUNT(...) +1
    LAZYSTORE_COUNTERS(LAZYSTORE_COUNT);
inline constexpr size_t kHistogramCount = 0 LAZYSTORE_HISTOGRAMS(LAZYSTORE_COUNT);
inline constexpr size_t kGaugeCount = 0 LAZYSTORE_GAUGES(LAZYSTORE_COUNT);
#undef LAZYSTORE_COUNT

// A histogram's values at one moment: bucket i counts durations below 2^i µs.
struct HistogramSnapshot {
  static constexpr size_t kBuckets = 32;  // up to 2^31 µs, about 36 min
  std::array<uint64_t, kBuckets> buckets{};
  uint64_t count = 0;
  double sum_seconds = 0;
  // The q-quantile (0 < q <= 1) in seconds, a bucket's upper bound (within 2x); 0 when empty.
  double percentile(double q) const;
  bool operator==(const HistogramSnapshot&) const = default;
};

// Durations in power-of-two microsecond buckets, lock-free.
class LatencyHistogram {
 public:
  static constexpr size_t kBuckets = HistogramSnapshot::kBuckets;

  void record(std::chrono::nanoseconds duration);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum_seconds() const { return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) * 1e-9; }
  double percentile(double q) const { return snapshot().percentile(q); }
  std::array<uint64_t, kBuckets> buckets() const { return snapshot().buckets; }
  HistogramSnapshot snapshot() const;

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

// Wall-clock seconds since the epoch: what `status` shows and compares across processes.
int64_t unix_now();

// Whether the upstream answers, from the outcome of every upstream call.
enum class UpstreamState : uint32_t { Unknown = 0, Reachable = 1, Unreachable = 2 };

struct UpstreamHealthSnapshot {
  UpstreamState state = UpstreamState::Unknown;
  int64_t since = 0;         // when it entered this state (unix seconds; 0: never)
  int64_t last_success = 0;  // the last call that got an answer
  int64_t last_failure = 0;  // the last call that could not reach the upstream
  bool operator==(const UpstreamHealthSnapshot&) const = default;
};

class UpstreamHealth {
 public:
  // `error`: 0 for success, else the call's errno. An answer (ENOENT, EACCES, …) is success;
  // a timeout or transport error (ETIMEDOUT, EIO, ECONN…) makes the upstream unreachable; other
  // errors (bad data) say nothing about reachability.
  void record(int error, int64_t now = unix_now());
  UpstreamHealthSnapshot snapshot() const;
  static bool is_unreachable_error(int error);

 private:
  std::atomic<uint32_t> state_{0};
  std::atomic<int64_t> since_{0};
  std::atomic<int64_t> last_success_{0};
  std::atomic<int64_t> last_failure_{0};
};

struct LastErrorSnapshot {
  int64_t time = 0;   // unix seconds
  std::string level;  // "error" or "warning"
  std::string message;
  bool operator==(const LastErrorSnapshot&) const = default;
};

// The last warning or error the server logged, in a fixed buffer of atomic words behind a
// sequence number (readers retry a torn read; a writer killed mid-way leaves it odd, which the
// next writer repairs): safe in shared memory and across a crash of the process writing it.
class LastError {
 public:
  static constexpr size_t kMaxMessage = 400;
  void record(std::string_view level, std::string_view message, int64_t now = unix_now());
  std::optional<LastErrorSnapshot> snapshot() const;

 private:
  static constexpr size_t kWords = (kMaxMessage + 8 + 7) / 8;  // level byte, length, message
  std::atomic<uint64_t> sequence_{0};
  std::atomic<int64_t> time_{0};
  std::array<std::atomic<uint64_t>, kWords> words_{};
};

// Which mount the numbers are of (for Prometheus' mount label, and for lazystore-ctl -m to
// learn the control socket from user.lazystore.stats).
struct MountIdentity {
  std::string source;
  std::string mountpoint;
  std::string control_socket;
  std::string version = kLazystoreVersion;
  bool operator==(const MountIdentity&) const = default;
};

// Every metric's value at one moment: what `stats` answers and every output is rendered from.
struct StatsSnapshot {
  MountIdentity mount;
  std::array<uint64_t, kCounterCount> counters{};
  std::array<uint64_t, kGaugeCount> gauges{};
  std::array<HistogramSnapshot, kHistogramCount> histograms{};

  uint64_t& operator[](Counter c) { return counters[static_cast<size_t>(c)]; }
  uint64_t operator[](Counter c) const { return counters[static_cast<size_t>(c)]; }
  uint64_t& operator[](Gauge g) { return gauges[static_cast<size_t>(g)]; }
  uint64_t operator[](Gauge g) const { return gauges[static_cast<size_t>(g)]; }
  HistogramSnapshot& operator[](Histogram h) { return histograms[static_cast<size_t>(h)]; }
  const HistogramSnapshot& operator[](Histogram h) const { return histograms[static_cast<size_t>(h)]; }
  bool operator==(const StatsSnapshot&) const = default;
};

struct Stats {
#define LAZYSTORE_MEMBER(name, help) std::atomic<uint64_t> name{0};
  LAZYSTORE_COUNTERS(LAZYSTORE_MEMBER)
#undef LAZYSTORE_MEMBER
#define LAZYSTORE_MEMBER(name, help) LatencyHistogram name;
  LAZYSTORE_HISTOGRAMS(LAZYSTORE_MEMBER)
#undef LAZYSTORE_MEMBER
  UpstreamHealth upstream_health;
  LastError last_error;
  const int64_t started = unix_now();  // the mount's start when shared with the supervisor

  std::atomic<uint64_t>& operator[](Counter c);
  const std::atomic<uint64_t>& operator[](Counter c) const;
  LatencyHistogram& operator[](Histogram h);
  const LatencyHistogram& operator[](Histogram h) const;

  // The values now; cache_bytes/cache_limit come from the content cache.
  StatsSnapshot snapshot(uint64_t cache_bytes, uint64_t cache_limit) const;
};

static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "Stats lives in memory shared between processes: its atomics must be lock-free");

// A Stats in an anonymous MAP_SHARED mapping: made by the supervisor before its first server,
// inherited by every server it forks (Takeover::stats).
class SharedStats {
 public:
  static std::optional<SharedStats> create();  // nullopt when mmap fails (errno set)
  SharedStats(SharedStats&& other) noexcept;
  SharedStats(const SharedStats&) = delete;
  SharedStats& operator=(const SharedStats&) = delete;
  SharedStats& operator=(SharedStats&& other) noexcept;
  ~SharedStats();
  Stats* get() const { return stats_; }

 private:
  explicit SharedStats(Stats* stats) : stats_(stats) {}
  Stats* stats_;
};

}  // namespace lazystore
