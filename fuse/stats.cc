#include "stats.h"

#include <algorithm>
#include <bit>

namespace lazystore {

void LatencyHistogram::record(std::chrono::nanoseconds duration) {
  auto ns = static_cast<uint64_t>(std::max<int64_t>(0, duration.count()));
  uint64_t us = ns / 1000;
  // Bucket i holds [2^(i-1), 2^i) µs; bucket 0 holds below 1 µs.
  size_t index = std::min<size_t>(kBuckets - 1, static_cast<size_t>(std::bit_width(us)));
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

std::array<uint64_t, LatencyHistogram::kBuckets> LatencyHistogram::buckets() const {
  std::array<uint64_t, kBuckets> out{};
  for (size_t i = 0; i < kBuckets; ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

double LatencyHistogram::percentile(double q) const {
  auto counts = buckets();
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  auto rank = static_cast<uint64_t>(q * static_cast<double>(total) + 0.999999);
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += counts[i];
    if (seen >= rank) return static_cast<double>(uint64_t{1} << i) * 1e-6;
  }
  return static_cast<double>(uint64_t{1} << (kBuckets - 1)) * 1e-6;
}

std::vector<StatsCounter> Stats::counters() const {
  return {
      {"lookups", "lookups of names", lookups},
      {"invalid_names", "names refused before any upstream access", invalid_names},
      {"upstream_requests", "calls into the upstream backend", upstream_requests},
      {"upstream_bytes", "file bytes fetched from the upstream", upstream_bytes},
      {"upstream_errors", "upstream calls that failed", upstream_errors},
      {"upstream_timeouts", "upstream calls past their deadline", upstream_timeouts},
      {"upstream_disconnects", "upstream connections dropped after an error", upstream_disconnects},
      {"upstream_connects", "upstream connections made", upstream_connects},
      {"upstream_connect_failures", "upstream connections that failed", upstream_connect_failures},
      {"served_bytes", "bytes answered to read requests", served_bytes},
      {"chunk_hits", "chunks read from the content cache", chunk_hits},
      {"chunk_misses", "chunks fetched from the upstream", chunk_misses},
      {"merged_misses", "misses that waited for another fetch of the same chunk", merged_misses},
      {"readahead_chunks", "chunks fetched ahead of sequential reads", readahead_chunks},
      {"verify_failures", "cached chunks whose xxh3 did not match", verify_failures},
      {"evictions", "files evicted from the content cache", evictions},
      {"cache_write_errors", "writes to the content cache that failed", cache_write_errors},
      {"uncached_chunks", "chunks served without being cached (no room in the cache or on its disk)", uncached_chunks},
      {"metadata_hits", "store path trees found in the metadata cache", metadata_hits},
      {"metadata_misses", "store path trees fetched from the upstream", metadata_misses},
      {"errors", "operations answered with an error other than ENOENT", errors},
      {"http_requests", "HTTP transfers started (retries included)", http_requests},
      {"http_bytes", "body bytes received over HTTP", http_bytes},
      {"http_retries", "HTTP transfers repeated after a failed one", http_retries},
      {"http_failovers", "switches to another HTTP base URL", http_failovers},
      {"nar_hash_failures", "whole NARs whose size or sha256 was wrong", nar_hash_failures},
      {"signature_failures", "narinfos refused: unsigned or bad signature", signature_failures},
      {"replayed_requests", "requests a crashed server had read, answered by its successor", replayed_requests},
      {"refused_replies", "replies the kernel refused (answered before a crash, or resent)", refused_replies},
      {"forgotten_inodes", "inode numbers dropped after the kernel forgot them", forgotten_inodes},
  };
}

std::string Stats::to_json(uint64_t cache_bytes, uint64_t cache_limit) const {
  std::string out = "{";
  auto field = [&out](const char* name, uint64_t value) {
    if (out.size() > 1) out += ",";
    out += "\"";
    out += name;
    out += "\":";
    out += std::to_string(value);
  };
  field("lookups", lookups);
  field("invalid_names", invalid_names);
  field("upstream_requests", upstream_requests);
  field("upstream_bytes", upstream_bytes);
  field("upstream_errors", upstream_errors);
  field("upstream_timeouts", upstream_timeouts);
  field("upstream_disconnects", upstream_disconnects);
  field("upstream_connects", upstream_connects);
  field("upstream_connect_failures", upstream_connect_failures);
  field("served_bytes", served_bytes);
  field("chunk_hits", chunk_hits);
  field("chunk_misses", chunk_misses);
  field("merged_misses", merged_misses);
  field("readahead_chunks", readahead_chunks);
  field("verify_failures", verify_failures);
  field("evictions", evictions);
  field("cache_write_errors", cache_write_errors);
  field("uncached_chunks", uncached_chunks);
  field("metadata_hits", metadata_hits);
  field("metadata_misses", metadata_misses);
  field("errors", errors);
  field("http_requests", http_requests);
  field("http_bytes", http_bytes);
  field("http_retries", http_retries);
  field("http_failovers", http_failovers);
  field("nar_hash_failures", nar_hash_failures);
  field("signature_failures", signature_failures);
  field("replayed_requests", replayed_requests);
  field("refused_replies", refused_replies);
  field("forgotten_inodes", forgotten_inodes);
  field("cache_bytes", cache_bytes);
  field("cache_limit", cache_limit);
  out += "}";
  return out;
}

}  // namespace lazystore
