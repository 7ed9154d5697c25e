// lazystore's own ops under a replay: a request the server before had answered is answered again
// and the kernel refuses the second answer; whatever that answer handed out (lookup references)
// is taken back, so a number the kernel forgets later is forgotten here too.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "chunk_cache.h"
#include "fake_fuse_kernel.h"
#include "filesystem.h"
#include "metadata_cache.h"
#include "request_journal.h"
#include "upstream/dir_upstream.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;
const std::string kPath = "0a0d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-hello-2.12";

std::string read_in(uint64_t size) {
  fuse_read_in in{};
  in.size = static_cast<uint32_t>(size);
  return std::string(reinterpret_cast<const char*>(&in), sizeof in);
}

class ReplayedOps : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);  // the refusing "kernel" below is a closed socket
    char pattern[] = "/tmp/lazystore-replay-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    root_ = pattern;
    fs::create_directories(root_ + "/store/" + kPath + "/dir");
    for (const char* name : {"a", "b", "c"}) std::ofstream(root_ + "/store/" + kPath + "/dir/" + name) << name;
    auto dir = DirUpstream::open(root_ + "/store");
    ASSERT_TRUE(dir.ok());
    upstream_ = std::move(*dir);
    auto meta = MetadataCache::open(*upstream_, root_ + "/meta", 1.0, stats_);
    ASSERT_TRUE(meta.ok());
    metadata_ = std::move(*meta);
    auto cache = ChunkCache::open({root_ + "/data", 64ull << 20, 64u << 10}, stats_);
    ASSERT_TRUE(cache.ok());
    cache_ = std::move(*cache);
    filesystem_ = std::make_unique<Filesystem>(options_, *upstream_, *metadata_, *cache_, stats_);
    auto journal = RequestJournal::create(4);
    ASSERT_TRUE(journal.ok());
    journal_.emplace(std::move(*journal));
    char arg0[] = "replay_filesystem_test";
    char* argv[] = {arg0, nullptr};
    fuse_args args = FUSE_ARGS_INIT(1, argv);
    const fuse_lowlevel_ops& ops = Filesystem::operations();
    session_ = fuse_session_new(&args, &ops, sizeof ops, filesystem_.get());
    fuse_opt_free_args(&args);
    ASSERT_NE(session_, nullptr);
    ASSERT_TRUE(journal_->attach(session_, dup(kernel_.server.get()), 1).ok());
    kernel_.send(FUSE_INIT, 2, init_args());
    serve_one();
    ASSERT_EQ(kernel_.reply().error, 0);
  }
  void TearDown() override {
    if (session_) fuse_session_destroy(session_);
    fs::remove_all(root_);
  }

  // Reads and answers one request; returns its bytes.
  std::string serve_one() {
    fuse_buf buf{};
    int n = fuse_session_receive_buf(session_, &buf);
    EXPECT_GT(n, 0);
    std::string bytes(static_cast<const char*>(buf.mem), n > 0 ? static_cast<size_t>(n) : 0);
    fuse_session_process_buf(session_, &buf);
    std::free(buf.mem);
    return bytes;
  }
  // Answers `bytes` again, as a successor replaying it.
  void process_again(std::string bytes) {
    fuse_buf buf{};
    buf.size = bytes.size();
    bytes.push_back('\0');
    buf.mem = bytes.data();
    fuse_session_process_buf(session_, &buf);
  }
  uint64_t number(const std::string& relative) {
    return filesystem_->inodes().number_of_key(kPath + (relative.empty() ? "" : "/" + relative));
  }

  std::string root_;
  Stats stats_;
  MountOptions options_;
  std::unique_ptr<Upstream> upstream_;
  std::unique_ptr<MetadataCache> metadata_;
  std::unique_ptr<ChunkCache> cache_;
  std::unique_ptr<Filesystem> filesystem_;
  std::optional<RequestJournal> journal_;
  FakeKernel kernel_;
  fuse_session* session_ = nullptr;
};

TEST_F(ReplayedOps, ARefusedSecondAnswerToAReaddirplusTakesItsLookupsBack) {
  kernel_.send(FUSE_LOOKUP, 4, lookup_args(kPath), 1);
  serve_one();
  ASSERT_EQ(kernel_.reply().error, 0);
  kernel_.send(FUSE_LOOKUP, 6, lookup_args("dir"), number(""));
  serve_one();
  ASSERT_EQ(kernel_.reply().error, 0);
  kernel_.send(FUSE_READDIRPLUS, 8, read_in(4096), number("dir"));
  std::string readdirplus = serve_one();
  ASSERT_EQ(kernel_.reply().error, 0);  // a, b, c: one kernel reference each
  EXPECT_EQ(filesystem_->inodes().size(), 5u);

  kernel_.kernel.reset();  // the kernel refuses every answer from now on
  process_again(readdirplus);
  // The kernel forgets a, b and c (one reference each): they must go.
  for (const char* name : {"dir/a", "dir/b", "dir/c"}) filesystem_->forget(number(name), 1);
  EXPECT_FALSE(filesystem_->inodes().find(number("dir/a")).has_value());
  EXPECT_EQ(filesystem_->inodes().size(), 2u);
  EXPECT_EQ(stats_.forgotten_inodes, 3u);
}

TEST_F(ReplayedOps, ARefusedSecondAnswerToALookupTakesItsLookupBack) {
  kernel_.send(FUSE_LOOKUP, 4, lookup_args(kPath), 1);
  std::string lookup = serve_one();
  ASSERT_EQ(kernel_.reply().error, 0);
  kernel_.kernel.reset();
  process_again(lookup);
  filesystem_->forget(number(""), 1);
  EXPECT_EQ(filesystem_->inodes().size(), 0u);
}

}  // namespace
}  // namespace lazystore
