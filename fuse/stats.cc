#include "stats.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>

namespace lazystore {
namespace {

constexpr MetricInfo kTable[] = {
#define LAZYSTORE_ROW(name, help) {#name, help, MetricKind::Counter, ""},
    LAZYSTORE_COUNTERS(LAZYSTORE_ROW)
#undef LAZYSTORE_ROW
#define LAZYSTORE_ROW(name, help, unit) {#name, help, MetricKind::Gauge, unit},
        LAZYSTORE_GAUGES(LAZYSTORE_ROW)
#undef LAZYSTORE_ROW
#define LAZYSTORE_ROW(name, help) {#name, help, MetricKind::Histogram, "seconds"},
            LAZYSTORE_HISTOGRAMS(LAZYSTORE_ROW)
#undef LAZYSTORE_ROW
};
static_assert(std::size(kTable) == kCounterCount + kGaugeCount + kHistogramCount);

constexpr std::atomic<uint64_t> Stats::*kCounterMembers[] = {
#define LAZYSTORE_MEMBER(name, help) &Stats::name,
    LAZYSTORE_COUNTERS(LAZYSTORE_MEMBER)
#undef LAZYSTORE_MEMBER
};
constexpr LatencyHistogram Stats::*kHistogramMembers[] = {
#define LAZYSTORE_MEMBER(name, help) &Stats::name,
    LAZYSTORE_HISTOGRAMS(LAZYSTORE_MEMBER)
#undef LAZYSTORE_MEMBER
};

// Writers of LastError in this process; never in shared memory, so a writer that died with
// another process cannot hold it.
std::mutex g_last_error_writers;

}  // namespace

std::string MetricInfo::prometheus_name() const {
  std::string out = "lazystore_" + std::string(name);
  if (kind == MetricKind::Counter) return out + "_total";
  if (!unit.empty() && !name.ends_with("_" + std::string(unit))) out += "_" + std::string(unit);
  return out;
}

std::span<const MetricInfo> metric_table() { return kTable; }
const MetricInfo& info(Counter counter) { return kTable[static_cast<size_t>(counter)]; }
const MetricInfo& info(Gauge gauge) { return kTable[kCounterCount + static_cast<size_t>(gauge)]; }
const MetricInfo& info(Histogram histogram) {
  return kTable[kCounterCount + kGaugeCount + static_cast<size_t>(histogram)];
}

double HistogramSnapshot::percentile(double q) const {
  uint64_t total = 0;
  for (uint64_t c : buckets) total += c;
  if (total == 0) return 0;
  auto rank = static_cast<uint64_t>(q * static_cast<double>(total) + 0.999999);
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += buckets[i];
    if (seen >= rank) return static_cast<double>(uint64_t{1} << i) * 1e-6;
  }
  return static_cast<double>(uint64_t{1} << (kBuckets - 1)) * 1e-6;
}

void LatencyHistogram::record(std::chrono::nanoseconds duration) {
  auto ns = static_cast<uint64_t>(std::max<int64_t>(0, duration.count()));
  uint64_t us = ns / 1000;
  // Bucket i holds [2^(i-1), 2^i) µs; bucket 0 holds below 1 µs.
  size_t index = std::min<size_t>(kBuckets - 1, static_cast<size_t>(std::bit_width(us)));
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

HistogramSnapshot LatencyHistogram::snapshot() const {
  HistogramSnapshot out;
  for (size_t i = 0; i < kBuckets; ++i) out.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  out.count = count();
  out.sum_seconds = sum_seconds();
  return out;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool UpstreamHealth::is_unreachable_error(int error) {
  switch (error) {
    case EIO:
    case ETIMEDOUT:
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENOTCONN:
    case EPIPE: return true;
    default: return false;
  }
}

void UpstreamHealth::record(int error, int64_t now) {
  UpstreamState state;
  if (is_unreachable_error(error)) {
    state = UpstreamState::Unreachable;
    last_failure_.store(now, std::memory_order_relaxed);
  } else if (error == 0 || error == ENOENT || error == ENOTDIR || error == ELOOP || error == EACCES || error == EPERM ||
             error == EISDIR || error == ENAMETOOLONG) {
    state = UpstreamState::Reachable;  // an answer, found or not
    last_success_.store(now, std::memory_order_relaxed);
  } else {
    return;  // bad data from an upstream that answered (EINVAL, EFBIG, …): no news about the link
  }
  auto wanted = static_cast<uint32_t>(state);
  uint32_t old = state_.load(std::memory_order_relaxed);
  // Of concurrent transitions one wins and sets `since`; the others see the state already set.
  while (old != wanted) {
    if (state_.compare_exchange_weak(old, wanted, std::memory_order_relaxed)) {
      since_.store(now, std::memory_order_relaxed);
      break;
    }
  }
}

UpstreamHealthSnapshot UpstreamHealth::snapshot() const {
  UpstreamHealthSnapshot out;
  uint32_t state = state_.load(std::memory_order_relaxed);
  out.state = state <= 2 ? static_cast<UpstreamState>(state) : UpstreamState::Unknown;
  out.since = since_.load(std::memory_order_relaxed);
  out.last_success = last_success_.load(std::memory_order_relaxed);
  out.last_failure = last_failure_.load(std::memory_order_relaxed);
  return out;
}

void LastError::record(std::string_view level, std::string_view message, int64_t now) {
  std::lock_guard lock(g_last_error_writers);
  message = message.substr(0, kMaxMessage);
  unsigned char bytes[kWords * 8] = {};
  bytes[0] = level == "error" ? 1 : 2;
  bytes[1] = static_cast<unsigned char>(message.size() & 0xff);
  bytes[2] = static_cast<unsigned char>(message.size() >> 8);
  std::memcpy(bytes + 8, message.data(), message.size());
  uint64_t sequence = sequence_.load(std::memory_order_relaxed);
  sequence += sequence & 1;  // a writer that died mid-way left it odd
  sequence_.store(sequence + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  time_.store(now, std::memory_order_relaxed);
  for (size_t i = 0; i < kWords; ++i) {
    uint64_t word;
    std::memcpy(&word, bytes + 8 * i, 8);
    words_[i].store(word, std::memory_order_relaxed);
  }
  sequence_.store(sequence + 2, std::memory_order_release);
}

std::optional<LastErrorSnapshot> LastError::snapshot() const {
  for (int attempt = 0; attempt < 100; ++attempt) {
    uint64_t before = sequence_.load(std::memory_order_acquire);
    if (before == 0) return std::nullopt;
    if (before & 1) continue;
    unsigned char bytes[kWords * 8];
    int64_t time = time_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < kWords; ++i) {
      uint64_t word = words_[i].load(std::memory_order_relaxed);
      std::memcpy(bytes + 8 * i, &word, 8);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (sequence_.load(std::memory_order_relaxed) != before) continue;
    size_t length = std::min<size_t>(kMaxMessage, bytes[1] | (size_t{bytes[2]} << 8));
    LastErrorSnapshot out;
    out.time = time;
    out.level = bytes[0] == 1 ? "error" : "warning";
    out.message.assign(reinterpret_cast<const char*>(bytes + 8), length);
    return out;
  }
  return std::nullopt;  // a writer died mid-way and none came since
}

std::atomic<uint64_t>& Stats::operator[](Counter c) { return this->*kCounterMembers[static_cast<size_t>(c)]; }
const std::atomic<uint64_t>& Stats::operator[](Counter c) const {
  return this->*kCounterMembers[static_cast<size_t>(c)];
}
LatencyHistogram& Stats::operator[](Histogram h) { return this->*kHistogramMembers[static_cast<size_t>(h)]; }
const LatencyHistogram& Stats::operator[](Histogram h) const {
  return this->*kHistogramMembers[static_cast<size_t>(h)];
}

StatsSnapshot Stats::snapshot(uint64_t cache_bytes, uint64_t cache_limit) const {
  StatsSnapshot out;
  for (size_t i = 0; i < kCounterCount; ++i) {
    out.counters[i] = (this->*kCounterMembers[i]).load(std::memory_order_relaxed);
  }
  for (size_t i = 0; i < kHistogramCount; ++i) out.histograms[i] = (this->*kHistogramMembers[i]).snapshot();
  out[Gauge::cache_bytes] = cache_bytes;
  out[Gauge::cache_limit] = cache_limit;
  out[Gauge::upstream_reachable] = upstream_health.snapshot().state == UpstreamState::Unreachable ? 0 : 1;
  return out;
}

std::optional<SharedStats> SharedStats::create() {
  void* p = ::mmap(nullptr, sizeof(Stats), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return std::nullopt;
  return SharedStats(new (p) Stats);
}

SharedStats::SharedStats(SharedStats&& other) noexcept : stats_(std::exchange(other.stats_, nullptr)) {}

SharedStats& SharedStats::operator=(SharedStats&& other) noexcept {
  if (this != &other) {
    this->~SharedStats();
    stats_ = std::exchange(other.stats_, nullptr);
  }
  return *this;
}

SharedStats::~SharedStats() {
  if (!stats_) return;
  stats_->~Stats();
  ::munmap(stats_, sizeof(Stats));
  stats_ = nullptr;
}

}  // namespace lazystore
