// What lazystore-ctl prints: text, Prometheus (with the mount label), status, the counters table
// — and docs/operating.md's list of counters, which must be the table's.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "ctl_render.h"

namespace lazystore {
namespace {

TEST(FormatStats, PrometheusHasPrefixTotalsAndQuantiles) {
  Stats stats;
  stats.chunk_hits = 7;
  stats.upstream_bytes = 4096;
  stats.upstream_latency.record(std::chrono::microseconds(100));
  std::string text = render_prometheus(stats.snapshot(123, 456));
  EXPECT_NE(text.find("# TYPE lazystore_chunk_hits_total counter\nlazystore_chunk_hits_total 7\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("lazystore_upstream_bytes_total 4096\n"), std::string::npos);
  EXPECT_NE(text.find("lazystore_cache_bytes 123\n"), std::string::npos);
  EXPECT_NE(text.find("lazystore_cache_limit_bytes 456\n"), std::string::npos);
  EXPECT_NE(text.find("lazystore_upstream_latency_seconds{quantile=\"0.99\"} 0.000128\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lazystore_upstream_latency_seconds_count 1\n"), std::string::npos);
  // Every sample line: a metric name with the prefix, optional labels, one value.
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    ASSERT_NE(end, std::string::npos) << "last line without LF";
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.starts_with("# ")) continue;
    EXPECT_TRUE(line.starts_with("lazystore_")) << line;
    EXPECT_EQ(std::count(line.begin(), line.end(), ' '), 1) << line;
  }
}

TEST(FormatStats, PrometheusHelpComesFromTheTableAndSamplesCarryTheMount) {
  Stats stats;
  stats.evictions = 2;
  stats.read_latency.record(std::chrono::milliseconds(2));
  StatsSnapshot snapshot = stats.snapshot(1, 2);
  snapshot.mount.mountpoint = "/srv/odd \"mount\"\\x";
  std::string text = render_prometheus(snapshot);
  const std::string label = "{mount=\"/srv/odd \\\"mount\\\"\\\\x\"}";
  EXPECT_NE(text.find("# HELP lazystore_evictions_total files evicted from the content cache\n"
                      "# TYPE lazystore_evictions_total counter\nlazystore_evictions_total" +
                      label + " 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("lazystore_cache_limit_bytes" + label + " 2\n"), std::string::npos) << text;
  EXPECT_NE(
      text.find("# TYPE lazystore_read_latency_seconds summary\n"
                "lazystore_read_latency_seconds{mount=\"/srv/odd \\\"mount\\\"\\\\x\",quantile=\"0.5\"} 0.002048\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("lazystore_read_latency_seconds_count" + label + " 1\n"), std::string::npos);
  for (const auto& m : metric_table()) {
    EXPECT_NE(text.find("# HELP " + m.prometheus_name() + " " + std::string(m.help) + "\n"), std::string::npos)
        << m.name;
  }
}

TEST(FormatStats, JsonAndTextHoldTheNumbers) {
  Stats stats;
  stats.chunk_misses = 3;
  stats.served_bytes = 2u << 20;
  std::string json = dump_json(stats.snapshot(1, 2)) + "\n";
  EXPECT_EQ(json.front(), '{');
  EXPECT_NE(json.find("\"chunk_misses\":3,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"read_latency\":{\"count\":0,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"p99\":"), std::string::npos);
  std::string text = render_stats_text(stats.snapshot(1, 2));
  EXPECT_NE(text.find("bytes served"), std::string::npos) << text;
  EXPECT_NE(text.find("2.0 MiB"), std::string::npos) << text;
  EXPECT_NE(text.find("p50"), std::string::npos);
  EXPECT_NE(text.find("upstream latency       p50 "), std::string::npos) << text;
  EXPECT_NE(text.find("  server_restarts            0\n"), std::string::npos) << text;
}

TEST(FormatStatus, AtAGlance) {
  StatusReport r;
  r.mount = {.source = "nfs://10.0.0.1/nix/store", .mountpoint = "/nix/store", .control_socket = "/s"};
  r.cache_dir = "/var/cache/lazystore";
  r.now = 1764072000;  // 2025-11-25 12:00:00 UTC
  r.started = r.now - 3 * 3600 - 12 * 60;
  r.server = {4242, 3, r.now - 300};
  r.upstream = {UpstreamState::Unreachable, r.now - 65, r.now - 70, r.now - 1};
  r.last_error = LastErrorSnapshot{r.now - 1, "warning", "read x: connection refused"};
  Stats stats;
  stats.chunk_hits = 973;
  stats.chunk_misses = 27;
  stats.metadata_hits = 99;
  stats.metadata_misses = 1;
  r.stats = stats.snapshot(1ull << 30, 20ull << 30);
  std::string text = render_status_text(r);
  EXPECT_EQ(text,
            "mount                  /nix/store\n"
            "source                 nfs://10.0.0.1/nix/store\n"
            "version                lazystore " +
                std::string(kLazystoreVersion) +
                "\n"
                "uptime                 3 h 12 min (server 3 of this mount, pid 4242, up 5 min 0 s; 2 restarts)\n"
                "upstream               UNREACHABLE since 2025-11-25 11:58:55 UTC (1 min 5 s ago); last answer "
                "2025-11-25 11:58:50 UTC (1 min 10 s ago)\n"
                "cache                  1.0 GiB of 20.0 GiB (5.0 %) in /var/cache/lazystore\n"
                "hit ratio              97.3 % of 1000 chunks, 99.0 % of 100 store path trees\n"
                "last error             2025-11-25 11:59:59 UTC (1 s ago): warning: read x: connection refused\n");
  r.upstream = {UpstreamState::Unknown, 0, 0, 0};
  r.last_error.reset();
  r.server = {4242, 1, r.started};
  r.stats = Stats().snapshot(0, 1);
  text = render_status_text(r);
  EXPECT_NE(text.find("uptime                 3 h 12 min (server pid 4242)\n"), std::string::npos) << text;
  EXPECT_NE(text.find("upstream               not contacted yet"), std::string::npos) << text;
  EXPECT_NE(text.find("hit ratio              no chunk read yet\n"), std::string::npos) << text;
  EXPECT_NE(text.find("last error             none\n"), std::string::npos) << text;
  r.upstream = {UpstreamState::Reachable, r.now - 2 * 86400 - 3 * 3600, r.now, 0};
  EXPECT_NE(render_status_text(r).find("reachable since 2025-11-23 09:00:00 UTC (2 d 3 h ago)"), std::string::npos);
}

TEST(FormatResults, AsLazystoreCtlAlwaysPrintedThem) {
  EXPECT_EQ(render_cache_usage({1536, 10ull << 30}), "1.5 KiB of 10.0 GiB used\n");
  EXPECT_EQ(render_evict({3, 3u << 20, 1}), "evicted 3 files, freed 3.0 MiB; 1 open files kept\n");
  EXPECT_EQ(render_verify({1, 49, 200000, 1, 0, 0.0123}),
            "verified 49 blocks (195.3 KiB) in 1 files in 12.3 ms: 1 bad blocks dropped, 0 unusable files removed\n");
  EXPECT_EQ(render_prefetch_queued({2, 2048}), "queued 2 files (2.0 KiB) for prefetching\n");
  EXPECT_EQ(render_prefetch_result({5, 5u << 20, 0, 1.5}), "prefetched 5 files (5.0 MiB) in 1.50 s");
  EXPECT_EQ(render_prefetch_result({4, 4u << 20, 1, 0.0005}),
            "prefetched 4 files (4.0 MiB) in 500 µs; 1 files failed (see the daemon's log)");
  EXPECT_EQ(render_progress({3, 3u << 20, 0, 10, 12u << 20}),
            "prefetching: 3 of 10 files, 3.0 MiB of 12.0 MiB (25.0 %)");
  EXPECT_EQ(render_progress({0, 0, 0, 0, 0}), "prefetching: 0 of 0 files, 0 B of 0 B (0.0 %)");
}

TEST(FormatResults, ReadsAreAProfileThatPrefetchFromReadsBack) {
  ReadList list{{"/nix/store/a-x/lib/a.so", "/nix/store/b-y/two\nlines", "/nix/store/c-z/ spaced "}, 0};
  std::string text = render_reads(list);
  EXPECT_EQ(text,
            "/nix/store/a-x/lib/a.so\n/nix/store/c-z/ spaced \n"
            "# 1 path(s) with a newline in their name left out (see --json)\n");
  EXPECT_EQ(parse_profile(text), (std::vector<std::string>{"/nix/store/a-x/lib/a.so", "/nix/store/c-z/ spaced "}));
  EXPECT_EQ(render_reads({{}, 4}), "# the list is full: 4 read(s) of other files not listed\n");
  EXPECT_EQ(render_reads({}), "");
  EXPECT_EQ(parse_profile("\n# a comment\r\n/nix/store/a-x/f\r\n\n/nix/store/b-y"),
            (std::vector<std::string>{"/nix/store/a-x/f", "/nix/store/b-y"}));
  EXPECT_TRUE(parse_profile("").empty());
}

TEST(FormatTime, DurationsAndDates) {
  EXPECT_EQ(format_duration(0), "0 s");
  EXPECT_EQ(format_duration(-5), "0 s");
  EXPECT_EQ(format_duration(59), "59 s");
  EXPECT_EQ(format_duration(61), "1 min 1 s");
  EXPECT_EQ(format_duration(3600), "1 h 0 min");
  EXPECT_EQ(format_duration(90000), "1 d 1 h");
  EXPECT_EQ(format_time(0), "1970-01-01 00:00:00 UTC");
  EXPECT_EQ(format_latency(0.0000042), "4 µs");
  EXPECT_EQ(format_latency(2.5), "2.50 s");
  EXPECT_EQ(prometheus_label("a\nb"), "a\\nb");
}

TEST(CountersTable, MarkdownTextAndJsonListEveryMetric) {
  std::string markdown = render_counters_markdown();
  EXPECT_TRUE(markdown.starts_with("| name | kind | Prometheus | meaning |\n|---|---|---|---|\n")) << markdown;
  EXPECT_NE(markdown.find("| `chunk_hits` | counter | `lazystore_chunk_hits_total` | reads served from the content "
                          "cache, nothing fetched |\n"),
            std::string::npos);
  EXPECT_NE(markdown.find("| `cache_limit` | gauge | `lazystore_cache_limit_bytes` | bound of the content cache |\n"),
            std::string::npos);
  EXPECT_NE(markdown.find("| `read_latency` | summary | `lazystore_read_latency_seconds` |"), std::string::npos);
  EXPECT_EQ(static_cast<size_t>(std::count(markdown.begin(), markdown.end(), '\n')), metric_table().size() + 2);
  std::string text = render_counters_text();
  EXPECT_EQ(static_cast<size_t>(std::count(text.begin(), text.end(), '\n')), metric_table().size());
  EXPECT_EQ(counters_json().size(), metric_table().size());
  EXPECT_EQ(counters_json()[0].dump(),
            "{\"name\":\"lookups\",\"kind\":\"counter\",\"unit\":\"\",\"prometheus\":\"lazystore_lookups_total\","
            "\"help\":\"lookups of names\"}");
}

// docs/operating.md carries the table between two markers: regenerate it with
// `lazystore-ctl counters --markdown` when a counter is added.
TEST(CountersTable, TheDocsListIsTheTable) {
  std::ifstream in(LAZYSTORE_DOCS "/operating.md");
  ASSERT_TRUE(in) << LAZYSTORE_DOCS "/operating.md";
  std::stringstream text;
  text << in.rdbuf();
  std::string doc = text.str();
  const std::string begin = "<!-- counters: generated by `lazystore-ctl counters --markdown` -->\n";
  const std::string end = "<!-- counters end -->";
  size_t from = doc.find(begin), to = doc.find(end);
  ASSERT_NE(from, std::string::npos) << "no counters marker in docs/operating.md";
  ASSERT_NE(to, std::string::npos);
  EXPECT_EQ(doc.substr(from + begin.size(), to - from - begin.size()), render_counters_markdown())
      << "docs/operating.md's list of counters differs from the table: regenerate it with "
         "`lazystore-ctl counters --markdown`";
}

}  // namespace
}  // namespace lazystore
