// The table of metrics, the Stats it generates, the latency histogram, the upstream's health,
// the last error, and Stats shared across processes (what survives a server restart).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "stats.h"

namespace lazystore {
namespace {

// Operators' dashboards use these names: renaming one breaks them.
const std::vector<std::string> kStableCounters = {
    "lookups",
    "invalid_names",
    "upstream_requests",
    "upstream_bytes",
    "upstream_errors",
    "upstream_timeouts",
    "upstream_disconnects",
    "upstream_connects",
    "upstream_connect_failures",
    "served_bytes",
    "chunk_hits",
    "chunk_misses",
    "merged_misses",
    "readahead_chunks",
    "verify_failures",
    "evictions",
    "cache_write_errors",
    "uncached_chunks",
    "metadata_hits",
    "metadata_misses",
    "errors",
    "http_requests",
    "http_bytes",
    "http_retries",
    "http_failovers",
    "nar_hash_failures",
    "signature_failures",
};

TEST(MetricTable, HoldsEveryStableNameOnceWithHelpAndKind) {
  std::set<std::string> names;
  for (const auto& m : metric_table()) {
    EXPECT_TRUE(names.insert(std::string(m.name)).second) << "twice: " << m.name;
    EXPECT_FALSE(m.help.empty()) << m.name;
    EXPECT_EQ(m.help.find('\n'), std::string_view::npos) << m.name;
  }
  for (const auto& name : kStableCounters) {
    ASSERT_TRUE(names.count(name)) << name << " left the table";
  }
  for (const char* name : {"cache_bytes", "cache_limit", "upstream_latency", "read_latency"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
  EXPECT_EQ(metric_table().size(), kCounterCount + kGaugeCount + kHistogramCount);
  // Counters first, in the table's order, then gauges, then histograms.
  for (size_t i = 0; i < kStableCounters.size(); ++i) {
    EXPECT_EQ(metric_table()[i].name, kStableCounters[i]);
    EXPECT_EQ(metric_table()[i].kind, MetricKind::Counter);
  }
  EXPECT_EQ(info(Gauge::cache_bytes).kind, MetricKind::Gauge);
  EXPECT_EQ(info(Histogram::read_latency).name, "read_latency");
}

TEST(MetricTable, PrometheusNamesKeepTheirShape) {
  EXPECT_EQ(info(Counter::chunk_hits).prometheus_name(), "lazystore_chunk_hits_total");
  EXPECT_EQ(info(Counter::upstream_bytes).prometheus_name(), "lazystore_upstream_bytes_total");
  EXPECT_EQ(info(Gauge::cache_bytes).prometheus_name(), "lazystore_cache_bytes");
  EXPECT_EQ(info(Gauge::cache_limit).prometheus_name(), "lazystore_cache_limit_bytes");
  EXPECT_EQ(info(Gauge::upstream_reachable).prometheus_name(), "lazystore_upstream_reachable");
  EXPECT_EQ(info(Histogram::upstream_latency).prometheus_name(), "lazystore_upstream_latency_seconds");
}

TEST(Stats, MembersAndTheTableAreTheSameCounters) {
  Stats stats;
  stats.chunk_hits++;
  stats.http_retries += 5;
  std::atomic<uint64_t> Stats::*field = &Stats::signature_failures;  // as the HTTP upstream counts
  (stats.*field) += 2;
  stats[Counter::evictions] += 3;
  EXPECT_EQ(stats.evictions, 3u);
  EXPECT_EQ(&stats[Counter::lookups], &stats.lookups);
  EXPECT_EQ(&stats[Histogram::read_latency], &stats.read_latency);
  stats.read_latency.record(std::chrono::microseconds(10));
  auto snapshot = stats.snapshot(100, 200);
  EXPECT_EQ(snapshot[Counter::chunk_hits], 1u);
  EXPECT_EQ(snapshot[Counter::http_retries], 5u);
  EXPECT_EQ(snapshot[Counter::signature_failures], 2u);
  EXPECT_EQ(snapshot[Counter::evictions], 3u);
  EXPECT_EQ(snapshot[Counter::lookups], 0u);
  EXPECT_EQ(snapshot[Gauge::cache_bytes], 100u);
  EXPECT_EQ(snapshot[Gauge::cache_limit], 200u);
  EXPECT_EQ(snapshot[Gauge::upstream_reachable], 1u);
  EXPECT_EQ(snapshot[Histogram::read_latency].count, 1u);
  EXPECT_EQ(snapshot[Histogram::upstream_latency].count, 0u);
}

TEST(LatencyHistogram, PercentilesAreBucketUpperBounds) {
  LatencyHistogram h;
  EXPECT_EQ(h.percentile(0.5), 0.0);
  for (int i = 0; i < 90; ++i) h.record(std::chrono::microseconds(3));  // bucket [2, 4) µs
  for (int i = 0; i < 9; ++i) h.record(std::chrono::milliseconds(1));   // [512, 1024) µs → 1024
  h.record(std::chrono::seconds(1));
  EXPECT_EQ(h.count(), 100u);
  EXPECT_DOUBLE_EQ(h.percentile(0.5), 4e-6);
  EXPECT_DOUBLE_EQ(h.percentile(0.9), 4e-6);
  EXPECT_DOUBLE_EQ(h.percentile(0.99), 1024e-6);
  EXPECT_GE(h.percentile(1.0), 1.0);
  EXPECT_NEAR(h.sum_seconds(), 90 * 3e-6 + 9e-3 + 1.0, 1e-9);
  h.record(std::chrono::hours(10));  // past the last bucket: counted there
  EXPECT_EQ(h.count(), 101u);
  auto snapshot = h.snapshot();
  EXPECT_EQ(snapshot.buckets[2], 90u);
  EXPECT_EQ(snapshot.buckets[LatencyHistogram::kBuckets - 1], 1u);
  EXPECT_DOUBLE_EQ(snapshot.percentile(0.99), h.percentile(0.99));
}

TEST(UpstreamHealth, AnswersAreReachableTransportErrorsAreNotBadDataIsNoNews) {
  UpstreamHealth health;
  EXPECT_EQ(health.snapshot().state, UpstreamState::Unknown);
  health.record(ENOENT, 100);  // "no such path" is an answer
  EXPECT_EQ(health.snapshot(), (UpstreamHealthSnapshot{UpstreamState::Reachable, 100, 100, 0}));
  health.record(0, 110);
  EXPECT_EQ(health.snapshot(), (UpstreamHealthSnapshot{UpstreamState::Reachable, 100, 110, 0}));
  health.record(ETIMEDOUT, 120);
  EXPECT_EQ(health.snapshot(), (UpstreamHealthSnapshot{UpstreamState::Unreachable, 120, 110, 120}));
  health.record(EIO, 130);  // still down: since stays
  EXPECT_EQ(health.snapshot(), (UpstreamHealthSnapshot{UpstreamState::Unreachable, 120, 110, 130}));
  health.record(EINVAL, 140);  // a malformed narinfo: the upstream answered, but no news
  EXPECT_EQ(health.snapshot().state, UpstreamState::Unreachable);
  health.record(0, 150);
  EXPECT_EQ(health.snapshot(), (UpstreamHealthSnapshot{UpstreamState::Reachable, 150, 150, 130}));
  for (int e : {ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH, EPIPE}) {
    EXPECT_TRUE(UpstreamHealth::is_unreachable_error(e)) << e;
  }
  for (int e : {0, ENOENT, EACCES, EINVAL, EFBIG}) EXPECT_FALSE(UpstreamHealth::is_unreachable_error(e)) << e;
}

TEST(UpstreamHealth, ReachabilityIsAGaugeOfTheSnapshot) {
  Stats stats;
  stats.upstream_health.record(ECONNREFUSED);
  EXPECT_EQ(stats.snapshot(0, 0)[Gauge::upstream_reachable], 0u);
  stats.upstream_health.record(0);
  EXPECT_EQ(stats.snapshot(0, 0)[Gauge::upstream_reachable], 1u);
}

TEST(LastError, KeepsTheLastMessageCutToItsBound) {
  LastError last;
  EXPECT_FALSE(last.snapshot());
  last.record("warning", "cache disk full", 1000);
  EXPECT_EQ(last.snapshot(), (LastErrorSnapshot{1000, "warning", "cache disk full"}));
  std::string long_message(LastError::kMaxMessage + 50, 'x');
  long_message.replace(0, 5, "start");
  last.record("error", long_message, 2000);
  auto snapshot = last.snapshot();
  ASSERT_TRUE(snapshot);
  EXPECT_EQ(snapshot->level, "error");
  EXPECT_EQ(snapshot->time, 2000);
  EXPECT_EQ(snapshot->message, long_message.substr(0, LastError::kMaxMessage));
  last.record("warning", std::string("bytes \0\xff kept", 13), 3000);
  EXPECT_EQ(last.snapshot()->message, std::string("bytes \0\xff kept", 13));
}

TEST(LastError, ConcurrentWritersNeverTearAReading) {
  LastError last;
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      std::string message(static_cast<size_t>(20 + 40 * t), static_cast<char>('a' + t));
      while (!stop) last.record("warning", message, t);
    });
  }
  for (int i = 0; i < 20000; ++i) {
    auto snapshot = last.snapshot();
    if (!snapshot) continue;  // a writer was mid-way every time it looked: allowed, rare
    ASSERT_FALSE(snapshot->message.empty());
    char c = snapshot->message[0];
    EXPECT_EQ(snapshot->message, std::string(static_cast<size_t>(20 + 40 * (c - 'a')), c));
    EXPECT_EQ(snapshot->time, c - 'a');
  }
  stop = true;
  for (auto& w : writers) w.join();
}

TEST(SharedStats, WhatAChildCountsOutlivesIt) {
  auto shared = SharedStats::create();
  ASSERT_TRUE(shared);
  Stats& stats = *shared->get();
  int64_t started = stats.started;
  EXPECT_LE(started, unix_now());
  for (int child = 0; child < 2; ++child) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      stats.chunk_hits += 10;
      stats.read_latency.record(std::chrono::milliseconds(3));
      stats.upstream_health.record(ETIMEDOUT, 500 + child);
      stats.last_error.record("error", "child " + std::to_string(child), 600);
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(stats.chunk_hits, 20u);
  EXPECT_EQ(stats.read_latency.count(), 2u);
  EXPECT_EQ(stats.upstream_health.snapshot().state, UpstreamState::Unreachable);
  EXPECT_EQ(stats.upstream_health.snapshot().since, 500);
  EXPECT_EQ(stats.last_error.snapshot()->message, "child 1");
  EXPECT_EQ(stats.started, started);
  SharedStats moved = std::move(*shared);
  EXPECT_EQ(moved.get(), &stats);
  EXPECT_EQ(shared->get(), nullptr);
}

}  // namespace
}  // namespace lazystore
