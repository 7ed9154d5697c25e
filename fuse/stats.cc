#include "stats.h"

namespace lazystore {

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
  field("metadata_hits", metadata_hits);
  field("metadata_misses", metadata_misses);
  field("errors", errors);
  field("cache_bytes", cache_bytes);
  field("cache_limit", cache_limit);
  out += "}";
  return out;
}

}  // namespace lazystore
