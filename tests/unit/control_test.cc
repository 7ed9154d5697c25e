// The control server against real caches over a directory upstream, through its real socket:
// every command's answer, prefetch progress lines, hostile connections, the last error, and
// ChunkCache's evict_all/verify_all on real data files.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "chunk_cache.h"
#include "control.h"
#include "ctl_client.h"
#include "io.h"
#include "log.h"
#include "metadata_cache.h"
#include "stats.h"
#include "unix_socket.h"
#include "upstream/dir_upstream.h"
#include "upstream/metered_upstream.h"
#include "test_support.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;
const std::string kPath = "0a0d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-hello-2.12";

class ControlServerTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-control-test"};
  void SetUp() override {
    fs::create_directories(root_ + "/store/" + kPath + "/lib");
    for (int i = 0; i < 6; ++i) {
      std::ofstream(root_ + "/store/" + kPath + "/lib/f" + std::to_string(i)) << std::string(100000 + i, 'a' + i);
    }
    auto dir = DirUpstream::open(root_ + "/store");
    ASSERT_TRUE(dir);
    upstream_ = std::make_unique<MeteredUpstream>(std::move(*dir), stats_);
    auto meta = MetadataCache::open(*upstream_, root_ + "/meta", 1.0, stats_);
    ASSERT_TRUE(meta);
    metadata_ = std::move(*meta);
    auto cache = ChunkCache::open({root_ + "/data", 64ull << 20, 64u << 10}, stats_);
    ASSERT_TRUE(cache);
    cache_ = std::move(*cache);
    socket_ = root_ + "/control.sock";
  }
  void TearDown() override { server_.reset(); }

  void start(uint64_t generation = 1) {
    ControlContext context{
        stats_,
        *cache_,
        *metadata_,
        *upstream_,
        {.source = "file://" + root_ + "/store", .mountpoint = root_ + "/mnt", .control_socket = socket_},
        root_ + "/cache",
        generation};
    auto server = ControlServer::open(socket_, std::move(context));
    ASSERT_TRUE(server) << server.error().message;
    server_ = std::move(*server);
    server_->start();
  }

  // Every answer line of one request over the socket.
  std::vector<Answer> ask(const Request& request) {
    auto client = ControlClient::connect(socket_);
    EXPECT_TRUE(client) << client.error().message;
    if (!client) return {};
    EXPECT_TRUE(client->send(request));
    std::vector<Answer> answers;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      auto answer = client->next(deadline);
      EXPECT_TRUE(answer) << answer.error().message;
      if (!answer) return answers;
      answers.push_back(*answer);
      if (answer->kind != Answer::Kind::Progress) return answers;
    }
  }
  Json ok(Command command) {
    Request r;
    r.command = command;
    auto answers = ask(r);
    EXPECT_EQ(answers.size(), 1u);
    EXPECT_EQ(answers.back().kind, Answer::Kind::Ok) << answers.back().error;
    return answers.back().body;
  }
  // What the daemon answers to raw bytes (the first line), the connection then closed.
  std::string raw(const std::string& bytes, bool close_write = true) {
    auto fd = connect_unix_socket(socket_);
    EXPECT_TRUE(fd);
    (void)send_all(fd->get(), bytes);
    if (close_write) ::shutdown(fd->get(), SHUT_WR);
    std::string answer;
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd->get(), buf, sizeof buf, 0)) > 0) answer.append(buf, static_cast<size_t>(n));
    return answer;
  }

  std::string root_ = temp_.str();
  std::string socket_;
  Stats stats_;
  std::unique_ptr<Upstream> upstream_;
  std::unique_ptr<MetadataCache> metadata_;
  std::unique_ptr<ChunkCache> cache_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlServerTest, StatsStatusAndCacheUsageAnswerData) {
  start(3);
  auto stats = result_as<StatsSnapshot>(ok(Command::Stats));
  ASSERT_TRUE(stats) << stats.error().message;
  EXPECT_EQ(stats->mount.mountpoint, root_ + "/mnt");
  EXPECT_EQ(stats->mount.control_socket, socket_);
  EXPECT_EQ(stats->mount.version, kLazystoreVersion);
  EXPECT_EQ((*stats)[Counter::server_restarts], 1u);  // this server followed a dead one
  EXPECT_EQ((*stats)[Gauge::cache_limit], 64ull << 20);

  auto usage = result_as<CacheUsage>(ok(Command::CacheUsage));
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->cache_limit, 64ull << 20);

  LOG_WARNING("a warning for the status");
  auto status = result_as<StatusReport>(ok(Command::Status));
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_EQ(status->server.pid, getpid());
  EXPECT_EQ(status->server.generation, 3u);
  EXPECT_EQ(status->started, stats_.started);
  EXPECT_LE(status->started, status->now);
  EXPECT_EQ(status->cache_dir, root_ + "/cache");
  EXPECT_EQ(status->upstream.state, UpstreamState::Unknown);
  ASSERT_TRUE(status->last_error);
  EXPECT_EQ(status->last_error->message, "a warning for the status");
  EXPECT_EQ(status->last_error->level, "warning");
}

TEST_F(ControlServerTest, PrefetchWaitsWithProgressLinesThenReadsAreHits) {
  start();
  Request r;
  r.command = Command::Prefetch;
  r.paths = {"/nix/store/" + kPath + "/lib"};
  r.wait = true;
  r.progress = true;
  auto answers = ask(r);
  ASSERT_GE(answers.size(), 3u);  // at the start, at the end, then the result
  auto first = result_as<PrefetchProgress>(answers.front().body);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->total_files, 6u);
  EXPECT_EQ(first->total_bytes, 6 * 100000u + 15);
  auto last = result_as<PrefetchProgress>(answers[answers.size() - 2].body);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->files, 6u);
  ASSERT_EQ(answers.back().kind, Answer::Kind::Ok);
  auto result = result_as<PrefetchResult>(answers.back().body);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->files, 6u);
  EXPECT_EQ(result->bytes, 6 * 100000u + 15);
  EXPECT_EQ(result->failed, 0u);
  EXPECT_EQ(stats_.upstream_health.snapshot().state, UpstreamState::Reachable);
  // Without progress: one line. Paths under the mount point are accepted too.
  r.progress = false;
  r.paths = {root_ + "/mnt/" + kPath + "/lib/f1"};
  answers = ask(r);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(result_as<PrefetchResult>(answers[0].body)->files, 1u);
  r.wait = false;
  answers = ask(r);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(*result_as<PrefetchQueued>(answers[0].body), (PrefetchQueued{1, 100001}));
}

TEST_F(ControlServerTest, BadPrefetchPathsAreErrors) {
  start();
  Request r;
  r.command = Command::Prefetch;
  for (std::string path : {std::string("/etc/passwd"), "/nix/store/" + std::string(32, '0') + "-absent",
                           "/nix/store/" + kPath + "/no/such", std::string("not-a-store-path")}) {
    r.paths = {path};
    auto answers = ask(r);
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_EQ(answers[0].kind, Answer::Kind::Error) << path;
    EXPECT_FALSE(answers[0].error.empty());
  }
}

TEST_F(ControlServerTest, HostileConnectionsGetAReasonAndTheServerGoesOn) {
  start();
  EXPECT_TRUE(raw("stats\n").starts_with("{\"ok\":false,\"error\":\"invalid request: not JSON ("));
  EXPECT_NE(raw("{\"protocol\":1,\"command\":\"stats\"}").find("incomplete"), std::string::npos);
  EXPECT_NE(raw("").find("incomplete"), std::string::npos);
  EXPECT_NE(raw(std::string(kMaxRequestBytes + 10, 'x')).find("longer than " + std::to_string(kMaxRequestBytes) + " bytes"), std::string::npos);
  EXPECT_NE(raw("{\"protocol\":1,\"command\":\"frobnicate\"}\n").find("unknown command 'frobnicate'"),
            std::string::npos);
  std::string two = raw("{\"protocol\":1,\"command\":\"cache-usage\"}\n{\"protocol\":1,\"command\":\"evict\"}\n");
  EXPECT_TRUE(two.starts_with("{\"ok\":true,\"result\":{\"cache_bytes\":")) << two;
  EXPECT_EQ(std::count(two.begin(), two.end(), '\n'), 1) << "one request per connection";
  // Many connections in a row: finished ones are reaped, never "too many".
  for (int i = 0; i < 50; ++i) ASSERT_EQ(ok(Command::CacheUsage).at("cache_limit"), 64ull << 20);
}

TEST_F(ControlServerTest, HandleLineIsWhatTheSocketAnswers) {
  start();
  std::vector<std::string> lines;
  server_->handle_line("{\"protocol\":1,\"command\":\"evict\"}", [&](std::string_view l) {
    lines.emplace_back(l);
    return true;
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "{\"ok\":true,\"result\":{\"files\":0,\"bytes\":0,\"pinned_files\":0}}\n");
}

TEST_F(ControlServerTest, ALiveSocketIsRefusedADeadOneReplacedAndStopRemovesIt) {
  start();
  ControlContext again{stats_, *cache_, *metadata_, *upstream_, {}, root_, 1};
  auto second = ControlServer::open(socket_, std::move(again));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, EADDRINUSE);
  server_->stop();
  EXPECT_FALSE(fs::exists(socket_));
  auto client = ControlClient::connect(socket_);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, ENOENT);
}

class CacheMaintenance : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-ctl-test"};

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

  std::string dir_ = temp_.str();
  Stats stats_;
};

TEST_F(CacheMaintenance, VerifyFindsAndDropsACorruptBlockAfterRestart) {
  const uint64_t size = 200000;  // 4 chunks of 64 KiB, 49 blocks of 4 KiB, the last ones short
  {
    auto cache = open_cache();
    auto file = cache->pin("aaaa-x/file", size);
    ASSERT_TRUE(file);
    ASSERT_TRUE(cache->fill(**file, pattern(size)));
    cache->release(*file);
    auto report = cache->verify_all();
    EXPECT_EQ(report.files, 1u);
    EXPECT_EQ(report.blocks, 49u);
    EXPECT_EQ(report.bytes, size);
    EXPECT_EQ(report.bad_blocks, 0u);
  }
  auto files = data_files();
  ASSERT_EQ(files.size(), 1u);
  {
    int fd = ::open(files[0].c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    char junk = 'X';
    ASSERT_EQ(pwrite(fd, &junk, 1, 70000), 1);  // inside block 17, of chunk 1
    ::close(fd);
  }
  auto cache = open_cache();  // a restart: the file is known only from disk
  auto report = cache->verify_all();
  EXPECT_EQ(report.files, 1u);
  EXPECT_EQ(report.blocks, 49u);
  EXPECT_EQ(report.bad_blocks, 1u);
  EXPECT_EQ(stats_.verify_failures, 1u);
  // The dropped block is gone; a second pass finds the rest good.
  report = cache->verify_all();
  EXPECT_EQ(report.blocks, 48u);
  EXPECT_EQ(report.bad_blocks, 0u);
  // A read refetches the dropped chunk and serves the right bytes.
  auto file = cache->pin("aaaa-x/file", size);
  ASSERT_TRUE(file);
  uint64_t misses = stats_.chunk_misses;
  auto reply = cache->read(**file, 65536, 65536, pattern(size));
  ASSERT_TRUE(reply);
  EXPECT_EQ(stats_.chunk_misses, misses + 1);
  cache->release(*file);
  EXPECT_EQ(cache->verify_all().blocks, 49u);
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
  EXPECT_EQ(report.blocks, 25u);  // 100000 bytes
  EXPECT_EQ(report.bad_blocks, 1u);
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
