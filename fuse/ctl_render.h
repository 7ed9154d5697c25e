// What lazystore-ctl prints: the daemon's data (control_protocol.h) rendered for people (text)
// and for Prometheus; the table of counters for the docs. Pure functions of their input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "control_protocol.h"

namespace lazystore {

std::string render_stats_text(const StatsSnapshot& stats);
// The text exposition format: # HELP and # TYPE from the table, every sample labelled with the
// mount (mount="/nix/store") when the snapshot names one.
std::string render_prometheus(const StatsSnapshot& stats);
std::string render_status_text(const StatusReport& status);

std::string render_cache_usage(const CacheUsage& usage);
std::string render_evict(const EvictResult& result);
std::string render_verify(const VerifyResult& result);
std::string render_prefetch_queued(const PrefetchQueued& queued);
// One path per line (what prefetch --from reads); a path with a newline is left out, and what is
// missing is said on lines starting with '#', which prefetch --from skips.
std::string render_reads(const ReadList& list);
// The paths of a profile (render_reads' format): one per line, blank lines and lines starting
// with '#' skipped, a trailing CR dropped, other spaces kept (they may be part of a name).
std::vector<std::string> parse_profile(std::string_view text);
std::string render_prefetch_result(const PrefetchResult& result);  // without LF
std::string render_progress(const PrefetchProgress& progress);     // one line, without LF

// The table of metrics: text (`lazystore-ctl counters`), markdown (docs/operating.md), JSON.
std::string render_counters_text();
std::string render_counters_markdown();
Json counters_json();

// "2.3 ms", "850 µs", "1.25 s"; "3 h 12 min", "5 min 3 s", "42 s"; "2026-11-25 12:00:03 UTC".
std::string format_latency(double seconds);
std::string format_duration(int64_t seconds);
std::string format_time(int64_t unix_seconds);
// Prometheus label value escaping: \ " and LF.
std::string prometheus_label(std::string_view value);

}  // namespace lazystore
