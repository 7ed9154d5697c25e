#include "ctl_render.h"

#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "format.h"
#include "printable.h"

namespace lazystore {
namespace {

constexpr double kQuantiles[] = {0.5, 0.9, 0.99};

std::string number(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", value);
  return buf;
}

std::string percent(uint64_t part, uint64_t whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %%",
                whole ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0);
  return buf;
}

std::string row(const char* label, const std::string& value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%-22s ", label);
  return buf + value + "\n";
}

std::string kind_name(MetricKind kind) {
  switch (kind) {
    case MetricKind::Counter: return "counter";
    case MetricKind::Gauge: return "gauge";
    case MetricKind::Histogram: return "summary";
  }
  return "?";
}

std::string ago(int64_t now, int64_t then) { return format_time(then) + " (" + format_duration(now - then) + " ago)"; }

}  // namespace

std::string format_latency(double seconds) {
  char buf[32];
  if (seconds < 1e-3)
    std::snprintf(buf, sizeof buf, "%.0f µs", seconds * 1e6);
  else if (seconds < 1)
    std::snprintf(buf, sizeof buf, "%.1f ms", seconds * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2f s", seconds);
  return buf;
}

std::string format_duration(int64_t seconds) {
  if (seconds < 0) seconds = 0;
  int64_t days = seconds / 86400, hours = seconds / 3600 % 24, minutes = seconds / 60 % 60, secs = seconds % 60;
  char buf[64];
  if (days > 0)
    std::snprintf(buf, sizeof buf, "%" PRId64 " d %" PRId64 " h", days, hours);
  else if (hours > 0)
    std::snprintf(buf, sizeof buf, "%" PRId64 " h %" PRId64 " min", hours, minutes);
  else if (minutes > 0)
    std::snprintf(buf, sizeof buf, "%" PRId64 " min %" PRId64 " s", minutes, secs);
  else
    std::snprintf(buf, sizeof buf, "%" PRId64 " s", secs);
  return buf;
}

std::string format_time(int64_t unix_seconds) {
  auto t = static_cast<time_t>(unix_seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string prometheus_label(std::string_view value) {
  return replace_bytes(value, {{'\\', "\\\\"}, {'"', "\\\""}, {'\n', "\\n"}});
}

std::string render_stats_text(const StatsSnapshot& s) {
  uint64_t hits = s[Counter::chunk_hits], misses = s[Counter::chunk_misses];
  std::string out;
  out += row("chunks", std::to_string(hits) + " hits, " + std::to_string(misses) + " misses (" +
                           percent(hits, hits + misses) + " hits)");
  out += row("bytes fetched", format_bytes(s[Counter::upstream_bytes]));
  out += row("bytes served", format_bytes(s[Counter::served_bytes]));
  out += row("cache", format_bytes(s[Gauge::cache_bytes]) + " of " + format_bytes(s[Gauge::cache_limit]));
  for (size_t i = 0; i < kHistogramCount; ++i) {
    const auto& h = s.histograms[i];
    std::string label(info(static_cast<Histogram>(i)).name);
    for (char& c : label) c = c == '_' ? ' ' : c;
    out += row(label.c_str(), "p50 " + format_latency(h.percentile(0.5)) + ", p90 " +
                                  format_latency(h.percentile(0.9)) + ", p99 " + format_latency(h.percentile(0.99)) +
                                  " (" + std::to_string(h.count) + " calls)");
  }
  out += "counters:\n";
  for (size_t i = 0; i < kCounterCount; ++i) {
    char line[128];
    std::snprintf(line, sizeof line, "  %-26s %" PRIu64 "\n", std::string(info(static_cast<Counter>(i)).name).c_str(),
                  s.counters[i]);
    out += line;
  }
  return out;
}

std::string render_prometheus(const StatsSnapshot& s) {
  std::string mount = s.mount.mountpoint.empty() ? "" : "mount=\"" + prometheus_label(s.mount.mountpoint) + "\"";
  auto labels = [&](const std::string& more) {
    std::string all = mount;
    if (!more.empty()) all += (all.empty() ? "" : ",") + more;
    return all.empty() ? std::string() : "{" + all + "}";
  };
  std::string out;
  size_t i = 0;
  for (const MetricInfo& m : metric_table()) {
    std::string name = m.prometheus_name();
    out += "# HELP " + name + " " + std::string(m.help) + "\n# TYPE " + name + " " + kind_name(m.kind) + "\n";
    if (m.kind == MetricKind::Counter) {
      out += name + labels("") + " " + std::to_string(s.counters[i]) + "\n";
    } else if (m.kind == MetricKind::Gauge) {
      out += name + labels("") + " " + std::to_string(s.gauges[i - kCounterCount]) + "\n";
    } else {
      const auto& h = s.histograms[i - kCounterCount - kGaugeCount];
      for (double q : kQuantiles) {
        out += name + labels("quantile=\"" + number(q) + "\"") + " " + number(h.percentile(q)) + "\n";
      }
      out += name + "_sum" + labels("") + " " + number(h.sum_seconds) + "\n";
      out += name + "_count" + labels("") + " " + std::to_string(h.count) + "\n";
    }
    ++i;
  }
  return out;
}

std::string render_status_text(const StatusReport& r) {
  const StatsSnapshot& s = r.stats;
  std::string out;
  out += row("mount", r.mount.mountpoint);
  out += row("source", r.mount.source);
  out += row("version", "lazystore " + r.mount.version);
  std::string uptime = format_duration(r.now - r.started);
  if (r.server.generation > 1) {
    uptime += " (server " + std::to_string(r.server.generation) + " of this mount, pid " +
              std::to_string(r.server.pid) + ", up " + format_duration(r.now - r.server.started) + "; " +
              std::to_string(r.server.generation - 1) + (r.server.generation == 2 ? " restart)" : " restarts)");
  } else {
    uptime += " (server pid " + std::to_string(r.server.pid) + ")";
  }
  out += row("uptime", uptime);
  std::string upstream;
  switch (r.upstream.state) {
    case UpstreamState::Unknown: upstream = "not contacted yet (everything so far came from the cache)"; break;
    case UpstreamState::Reachable: upstream = "reachable since " + ago(r.now, r.upstream.since); break;
    case UpstreamState::Unreachable:
      upstream = "UNREACHABLE since " + ago(r.now, r.upstream.since);
      upstream += r.upstream.last_success ? "; last answer " + ago(r.now, r.upstream.last_success) : "; never answered";
      break;
  }
  out += row("upstream", upstream);
  uint64_t used = s[Gauge::cache_bytes], limit = s[Gauge::cache_limit];
  out += row("cache",
             format_bytes(used) + " of " + format_bytes(limit) + " (" + percent(used, limit) + ") in " + r.cache_dir);
  uint64_t hits = s[Counter::chunk_hits], misses = s[Counter::chunk_misses];
  uint64_t trees = s[Counter::metadata_hits] + s[Counter::metadata_misses];
  std::string ratio = hits + misses == 0
                          ? std::string("no chunk read yet")
                          : percent(hits, hits + misses) + " of " + std::to_string(hits + misses) + " chunks";
  if (trees > 0)
    ratio += ", " + percent(s[Counter::metadata_hits], trees) + " of " + std::to_string(trees) + " store path trees";
  out += row("hit ratio", ratio);
  out += row("last error",
             r.last_error ? ago(r.now, r.last_error->time) + ": " + r.last_error->level + ": " + r.last_error->message
                          : "none");
  return out;
}

std::string render_cache_usage(const CacheUsage& u) {
  return format_bytes(u.cache_bytes) + " of " + format_bytes(u.cache_limit) + " used\n";
}

std::string render_evict(const EvictResult& r) {
  return "evicted " + std::to_string(r.files) + " files, freed " + format_bytes(r.bytes) + "; " +
         std::to_string(r.pinned_files) + " open files kept\n";
}

std::string render_verify(const VerifyResult& r) {
  return "verified " + std::to_string(r.blocks) + " blocks (" + format_bytes(r.bytes) + ") in " +
         std::to_string(r.files) + " files in " + format_latency(r.seconds) + ": " + std::to_string(r.bad_blocks) +
         " bad blocks dropped, " + std::to_string(r.dropped_files) + " unusable files removed\n";
}

std::string render_prefetch_queued(const PrefetchQueued& q) {
  return "queued " + std::to_string(q.queued_files) + " files (" + format_bytes(q.queued_bytes) + ") for prefetching\n";
}

std::string render_reads(const ReadList& list) {
  std::string text;
  size_t left_out = 0;
  for (const auto& path : list.paths) {
    if (path.find('\n') != std::string::npos) {
      left_out++;
      continue;
    }
    text += path + "\n";
  }
  if (left_out) {
    text += "# " + std::to_string(left_out) + " path(s) with a newline in their name left out (see --json)\n";
  }
  if (list.dropped) {
    text += "# the list is full: " + std::to_string(list.dropped) + " read(s) of other files not listed\n";
  }
  return text;
}

std::vector<std::string> parse_profile(std::string_view text) {
  std::vector<std::string> paths;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    paths.emplace_back(line);
  }
  return paths;
}

std::string render_prefetch_result(const PrefetchResult& r) {
  std::string text = "prefetched " + std::to_string(r.files) + " files (" + format_bytes(r.bytes) + ") in " +
                     format_latency(r.seconds);
  if (r.failed) text += "; " + std::to_string(r.failed) + " files failed (see the daemon's log)";
  return text;
}

std::string render_progress(const PrefetchProgress& p) {
  std::string text = "prefetching: " + std::to_string(p.files) + " of " + std::to_string(p.total_files) + " files, " +
                     format_bytes(p.bytes) + " of " + format_bytes(p.total_bytes) + " (" +
                     percent(p.bytes, p.total_bytes) + ")";
  if (p.failed) text += ", " + std::to_string(p.failed) + " failed";
  return text;
}

std::string render_counters_text() {
  std::string out;
  for (const MetricInfo& m : metric_table()) {
    char line[256];
    std::snprintf(line, sizeof line, "%-26s %-8s %s\n", std::string(m.name).c_str(), kind_name(m.kind).c_str(),
                  std::string(m.help).c_str());
    out += line;
  }
  return out;
}

std::string render_counters_markdown() {
  std::string out = "| name | kind | Prometheus | meaning |\n|---|---|---|---|\n";
  for (const MetricInfo& m : metric_table()) {
    out += "| `" + std::string(m.name) + "` | " + kind_name(m.kind) + " | `" + m.prometheus_name() + "` | " +
           std::string(m.help) + " |\n";
  }
  return out;
}

Json counters_json() {
  Json out = Json::array();
  for (const MetricInfo& m : metric_table()) {
    out.push_back(Json{{"name", m.name},
                       {"kind", kind_name(m.kind)},
                       {"unit", m.unit},
                       {"prometheus", m.prometheus_name()},
                       {"help", m.help}});
  }
  return out;
}

}  // namespace lazystore
