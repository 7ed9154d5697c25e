// lazystore-ctl's wire format and output formats; the latency histogram; ChunkCache's
// evict_all/verify_all on real data files.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "chunk_cache.h"
#include "control.h"
#include "stats.h"

namespace lazystore {
namespace {

TEST(ControlRequest, RoundTripsWordsWithSeparatorsAndEscapes) {
  std::vector<std::string> words{"prefetch", "--wait", "/nix/store/x-a/with\ttab", "new\nline", "back\\slash", ""};
  std::string line = encode_request(words);
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  auto decoded = decode_request(line);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, words);
}

TEST(ControlRequest, RejectsMalformedLines) {
  EXPECT_FALSE(decode_request(""));
  EXPECT_FALSE(decode_request("\n"));
  EXPECT_FALSE(decode_request("stats\\"));
  EXPECT_FALSE(decode_request("stats\\x"));
  EXPECT_FALSE(decode_request(std::string("st\0ats", 6)));
  EXPECT_FALSE(decode_request("a\nb"));
  auto one = decode_request("stats");
  ASSERT_TRUE(one);
  EXPECT_EQ(*one, std::vector<std::string>{"stats"});
}

TEST(ControlResponse, OkAndErrorRoundTrip) {
  std::string text = "line \"one\"\n\ttab \\ back\x01 end";
  auto ok = parse_response(ok_response(text) + "\n");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_TRUE(ok->ok);
  EXPECT_EQ(ok->text, text);
  auto error = parse_response(error_response("no such path"));
  ASSERT_TRUE(error);
  EXPECT_FALSE(error->ok);
  EXPECT_EQ(error->text, "no such path");
}

TEST(ControlResponse, RejectsGarbage) {
  EXPECT_FALSE(parse_response(""));
  EXPECT_FALSE(parse_response("hello"));
  EXPECT_FALSE(parse_response("{\"ok\":true,\"output\":\"unterminated"));
  EXPECT_FALSE(parse_response("{\"ok\":true,\"output\":\"x\"garbage"));
  EXPECT_FALSE(parse_response("{\"ok\":true,\"output\":\"\\q\"}"));
}

TEST(JsonEscape, EscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(json_escape("a\"b\\c\nd\x1f"), "\"a\\\"b\\\\c\\nd\\u001f\"");
}

TEST(LatencyHistogram, PercentilesAreBucketUpperBounds) {
  LatencyHistogram h;
  EXPECT_EQ(h.percentile(0.5), 0.0);
  for (int i = 0; i < 90; ++i) h.record(std::chrono::microseconds(3));   // bucket [2, 4) µs
  for (int i = 0; i < 9; ++i) h.record(std::chrono::milliseconds(1));    // [512, 1024) µs → 1024
  h.record(std::chrono::seconds(1));
  EXPECT_EQ(h.count(), 100u);
  EXPECT_DOUBLE_EQ(h.percentile(0.5), 4e-6);
  EXPECT_DOUBLE_EQ(h.percentile(0.9), 4e-6);
  EXPECT_DOUBLE_EQ(h.percentile(0.99), 1024e-6);
  EXPECT_GE(h.percentile(1.0), 1.0);
  EXPECT_NEAR(h.sum_seconds(), 90 * 3e-6 + 9e-3 + 1.0, 1e-9);
  h.record(std::chrono::hours(10));  // past the last bucket: counted there
  EXPECT_EQ(h.count(), 101u);
}

TEST(FormatStats, PrometheusHasPrefixTotalsAndQuantiles) {
  Stats stats;
  stats.chunk_hits = 7;
  stats.upstream_bytes = 4096;
  stats.upstream_latency.record(std::chrono::microseconds(100));
  std::string text = format_stats(stats, 123, 456, OutputFormat::Prometheus);
  EXPECT_NE(text.find("# TYPE lazystore_chunk_hits_total counter\nlazystore_chunk_hits_total 7\n"), std::string::npos) << text;
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

TEST(FormatStats, JsonAndTextHoldTheNumbers) {
  Stats stats;
  stats.chunk_misses = 3;
  stats.served_bytes = 2u << 20;
  std::string json = format_stats(stats, 1, 2, OutputFormat::Json);
  EXPECT_EQ(json.front(), '{');
  EXPECT_NE(json.find("\"chunk_misses\":3,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"read_latency\":{\"count\":0,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"p99\":"), std::string::npos);
  std::string text = format_stats(stats, 1, 2, OutputFormat::Text);
  EXPECT_NE(text.find("bytes served"), std::string::npos) << text;
  EXPECT_NE(text.find("2.0 MiB"), std::string::npos) << text;
  EXPECT_NE(text.find("p50"), std::string::npos);
}

TEST(StatsCounters, ListEveryCounterOfToJson) {
  Stats stats;
  std::string json = stats.to_json(0, 0);
  std::string listed;
  for (const auto& c : stats.counters()) listed += "\"" + std::string(c.name) + "\":0,";
  listed += "\"cache_bytes\":0,\"cache_limit\":0}";
  EXPECT_EQ(json, "{" + listed) << "a counter of to_json is missing in Stats::counters()";
}

class CacheMaintenance : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lazystore-ctl-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<ChunkCache> open_cache() {
    auto cache = ChunkCache::open({dir_, 64ull << 20, 64u << 10}, stats_);
    EXPECT_TRUE(cache);
    return std::move(*cache);
  }
  static FetchFn pattern(uint64_t size) {
    return [size](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - offset));
      for (size_t i = 0; i < n; ++i) buf[i] = static_cast<std::byte>((offset + i) * 7 + 1);
      return n;
    };
  }
  std::vector<std::string> data_files() const {
    std::vector<std::string> out;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir_)) {
      if (e.is_regular_file()) out.push_back(e.path());
    }
    return out;
  }

  std::string dir_;
  Stats stats_;
};

TEST_F(CacheMaintenance, VerifyFindsAndDropsACorruptChunkAfterRestart) {
  const uint64_t size = 200000;  // 4 chunks of 64 KiB, the last one short
  {
    auto cache = open_cache();
    auto file = cache->pin("aaaa-x/file", size);
    ASSERT_TRUE(file);
    ASSERT_TRUE(cache->fill(**file, pattern(size)));
    cache->release(*file);
    auto report = cache->verify_all();
    EXPECT_EQ(report.files, 1u);
    EXPECT_EQ(report.chunks, 4u);
    EXPECT_EQ(report.bytes, size);
    EXPECT_EQ(report.bad_chunks, 0u);
  }
  auto files = data_files();
  ASSERT_EQ(files.size(), 1u);
  {
    int fd = ::open(files[0].c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    char junk = 'X';
    ASSERT_EQ(pwrite(fd, &junk, 1, 70000), 1);  // inside chunk 1
    ::close(fd);
  }
  auto cache = open_cache();  // a restart: the file is known only from disk
  auto report = cache->verify_all();
  EXPECT_EQ(report.files, 1u);
  EXPECT_EQ(report.chunks, 4u);
  EXPECT_EQ(report.bad_chunks, 1u);
  EXPECT_EQ(stats_.verify_failures, 1u);
  // The dropped chunk is gone; a second pass finds the rest good.
  report = cache->verify_all();
  EXPECT_EQ(report.chunks, 3u);
  EXPECT_EQ(report.bad_chunks, 0u);
  // A read refetches the dropped chunk and serves the right bytes.
  auto file = cache->pin("aaaa-x/file", size);
  ASSERT_TRUE(file);
  uint64_t misses = stats_.chunk_misses;
  auto reply = cache->read(**file, 65536, 65536, pattern(size));
  ASSERT_TRUE(reply);
  EXPECT_EQ(stats_.chunk_misses, misses + 1);
  cache->release(*file);
  EXPECT_EQ(cache->verify_all().chunks, 4u);
}

TEST_F(CacheMaintenance, VerifyChecksPinnedFilesThroughTheirState) {
  const uint64_t size = 100000;
  auto cache = open_cache();
  auto file = cache->pin("bbbb-y/file", size);
  ASSERT_TRUE(file);
  ASSERT_TRUE(cache->fill(**file, pattern(size)));
  auto files = data_files();
  ASSERT_EQ(files.size(), 1u);
  int fd = ::open(files[0].c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  char junk = 'X';
  ASSERT_EQ(pwrite(fd, &junk, 1, 10), 1);
  ::close(fd);
  auto report = cache->verify_all();
  EXPECT_EQ(report.chunks, 2u);
  EXPECT_EQ(report.bad_chunks, 1u);
  auto reply = cache->read(**file, 0, 100, pattern(size));  // refetched, right bytes
  ASSERT_TRUE(reply);
  std::byte b{};
  ASSERT_EQ(pread(reply->fd, &b, 1, 10), 1);
  EXPECT_EQ(b, static_cast<std::byte>(10 * 7 + 1));
  cache->release(*file);
}

TEST_F(CacheMaintenance, FileWithoutSlotsIsDropped) {
  std::filesystem::create_directories(dir_ + "/ab");
  std::string path = dir_ + "/ab/ab" + std::string(30, '0');
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "data without a slot", 19, 0), 19);
  ::close(fd);
  auto cache = open_cache();
  auto report = cache->verify_all();
  EXPECT_EQ(report.dropped_files, 1u);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(CacheMaintenance, EvictAllKeepsOpenFiles) {
  auto cache = open_cache();
  auto open_file = cache->pin("cccc-a/open", 100000);
  auto closed_file = cache->pin("cccc-a/closed", 100000);
  ASSERT_TRUE(open_file && closed_file);
  ASSERT_TRUE(cache->fill(**open_file, pattern(100000)));
  ASSERT_TRUE(cache->fill(**closed_file, pattern(100000)));
  cache->release(*closed_file);
  uint64_t before = cache->used_bytes();
  auto report = cache->evict_all();
  EXPECT_EQ(report.files, 1u);
  EXPECT_EQ(report.pinned_files, 1u);
  EXPECT_GT(report.bytes, 0u);
  EXPECT_EQ(cache->used_bytes(), before - report.bytes);
  EXPECT_EQ(data_files().size(), 1u);
  cache->release(*open_file);
}

}  // namespace
}  // namespace lazystore
