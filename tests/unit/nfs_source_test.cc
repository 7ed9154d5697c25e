// SOURCE forms of the NFS upstream; its window of READs in flight and its handle cache, against
// a fake server that answers the READs it is sent in an order the test picks.
#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <numeric>
#include <vector>

#include "upstream/nfs_handle_cache.h"
#include "upstream/nfs_read_window.h"
#include "upstream/nfs_source.h"

namespace lazystore {
namespace {

TEST(NfsSourceTest, FstabFormIsNfsV3ByDefault) {
  ASSERT_TRUE(is_nfs_source("10.0.0.1:/nix/store"));
  auto source = parse_nfs_source("10.0.0.1:/nix/store", 0);
  ASSERT_TRUE(source.ok()) << source.error().message;
  EXPECT_EQ(source->url, "nfs://10.0.0.1/nix/store?version=3");
  EXPECT_EQ(source->version, 3);
  EXPECT_EQ(source->display, "10.0.0.1:/nix/store");
}

TEST(NfsSourceTest, NfsversOptionPicksTheVersion) {
  auto source = parse_nfs_source("nix-server:/nix/store", 4);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->url, "nfs://nix-server/nix/store?version=4");
  EXPECT_EQ(source->version, 4);
}

TEST(NfsSourceTest, UrlKeepsItsOptions) {
  auto source = parse_nfs_source("nfs://127.0.0.1/store?version=4&nfsport=2049", 0);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->url, "nfs://127.0.0.1/store?version=4&nfsport=2049");
  EXPECT_EQ(source->version, 4);
  auto v3 = parse_nfs_source("nfs://127.0.0.1/srv/store?nfsport=2049&mountport=20048", 0);
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->url, "nfs://127.0.0.1/srv/store?nfsport=2049&mountport=20048&version=3");
  EXPECT_TRUE(parse_nfs_source("nfs://h/s?version=4", 4).ok());
}

TEST(NfsSourceTest, BadFormsAreRefused) {
  EXPECT_FALSE(is_nfs_source("/srv/nix/store"));
  EXPECT_FALSE(is_nfs_source("file:///srv/nix/store"));
  EXPECT_FALSE(is_nfs_source("https://cache.example/"));
  EXPECT_FALSE(parse_nfs_source("nfs://host", 0).ok());           // no path
  EXPECT_FALSE(parse_nfs_source("nfs://h/s?version=2", 0).ok());  // no such version
  EXPECT_FALSE(parse_nfs_source("nfs://h/s?version=3", 4).ok());  // contradicts nfsvers
  EXPECT_FALSE(parse_nfs_source("h:/s", 2).ok());
  EXPECT_FALSE(parse_nfs_source("a/b:/s", 0).ok());
}

// A file of `size` bytes (byte i is i % 251) behind READs: each send is queued; the pump answers
// the queued READs, newest first (replies out of order), short by `short_by` bytes when asked.
class FakeReads {
 public:
  explicit FakeReads(uint64_t size) : size_(size) {}

  bool send(NfsReadWindow::Piece* piece) {
    queued_.push_back(piece);
    max_in_flight_ = std::max(max_in_flight_, queued_.size());
    sent_++;
    return true;
  }
  int pump(const std::function<bool()>& done) {
    while (!done()) {
      if (queued_.empty()) return -ETIMEDOUT;  // nothing would ever answer
      NfsReadWindow::Piece* piece = queued_.back();
      queued_.pop_back();
      if (fail_at_ && answered_ + 1 == fail_at_) {
        answered_++;
        NfsReadWindow::answered(piece, -EIO, false, "injected");
        continue;
      }
      uint64_t offset = piece->offset;
      uint64_t n = offset >= size_ ? 0 : std::min<uint64_t>(piece->buf.size(), size_ - offset);
      if (short_by_ && answered_ % 2 == 0) n = n > short_by_ ? n - short_by_ : 0;
      for (uint64_t i = 0; i < n; ++i) piece->buf[i] = std::byte(static_cast<uint8_t>((offset + i) % 251));
      answered_++;
      NfsReadWindow::answered(piece, static_cast<int64_t>(n), offset + n >= size_);
    }
    return 0;
  }
  int64_t read(uint64_t offset, std::span<std::byte> buf, size_t piece, size_t window, std::string* error) {
    NfsReadWindow reads(offset, buf, piece, window);
    NfsPump pump = [this](const std::function<bool()>& done, const size_t&) { return this->pump(done); };
    return reads.run([this](NfsReadWindow::Piece* p) { return send(p); }, pump, error);
  }
  static bool matches(std::span<const std::byte> buf, uint64_t offset) {
    for (size_t i = 0; i < buf.size(); ++i) {
      if (buf[i] != std::byte(static_cast<uint8_t>((offset + i) % 251))) return false;
    }
    return true;
  }

  uint64_t size_;
  size_t short_by_ = 0;
  size_t fail_at_ = 0;  // the n-th answer (from 1) fails
  std::deque<NfsReadWindow::Piece*> queued_;
  size_t max_in_flight_ = 0;
  size_t sent_ = 0;
  size_t answered_ = 0;
};

TEST(NfsReadWindowTest, KeepsTheWindowInFlightAndAssemblesOutOfOrderReplies) {
  FakeReads server(10 << 20);
  std::vector<std::byte> buf(4 << 20);
  std::string error;
  EXPECT_EQ(server.read(1 << 20, buf, 256 << 10, 6, &error), int64_t{4} << 20) << error;
  EXPECT_TRUE(FakeReads::matches(buf, 1 << 20));
  EXPECT_EQ(server.sent_, 16u);
  EXPECT_EQ(server.max_in_flight_, 6u);  // never more than the window
}

TEST(NfsReadWindowTest, AShortReplyIsAskedAgainForTheRest) {
  FakeReads server(10 << 20);
  server.short_by_ = 1000;
  std::vector<std::byte> buf(1 << 20);
  std::string error;
  EXPECT_EQ(server.read(12345, buf, 256 << 10, 4, &error), int64_t{1} << 20) << error;
  EXPECT_TRUE(FakeReads::matches(buf, 12345));
  EXPECT_GT(server.sent_, 4u);
}

TEST(NfsReadWindowTest, EndsAtTheEndOfTheFile) {
  FakeReads server((3 << 20) + 17);
  std::vector<std::byte> buf(8 << 20);
  std::string error;
  EXPECT_EQ(server.read(1 << 20, buf, 1 << 20, 8, &error), (int64_t{2} << 20) + 17) << error;
  EXPECT_TRUE(FakeReads::matches(std::span(buf).first((2 << 20) + 17), 1 << 20));
}

TEST(NfsReadWindowTest, AFailedReadIsAnErrorOnceEveryReadInFlightIsAnswered) {
  FakeReads server(10 << 20);
  server.fail_at_ = 2;
  std::vector<std::byte> buf(4 << 20);
  std::string error;
  EXPECT_EQ(server.read(0, buf, 512 << 10, 4, &error), -EIO);
  EXPECT_EQ(error, "injected");
  EXPECT_TRUE(server.queued_.empty());  // no READ left writing into the caller's buffer
}

TEST(NfsReadWindowTest, NoDataAndNoEndOfFileIsAnError) {
  FakeReads server(10 << 20);
  server.short_by_ = 256 << 10;  // every other answer has nothing
  std::vector<std::byte> buf(1 << 20);
  std::string error;
  int64_t n = server.read(0, buf, 256 << 10, 4, &error);
  EXPECT_EQ(n, -EIO);
  EXPECT_NE(error.find("no data"), std::string::npos) << error;
}

TEST(NfsHandleCacheTest, BoundedAndForgetsTheOldestFirst) {
  NfsHandleCache cache(4);
  for (int i = 0; i < 5; ++i) cache.put("p/" + std::to_string(i), "fh" + std::to_string(i));
  EXPECT_LE(cache.size(), 4u);
  EXPECT_FALSE(cache.get("p/0"));
  ASSERT_TRUE(cache.get("p/4"));
  EXPECT_EQ(*cache.get("p/4"), "fh4");
  cache.erase("p/4");
  EXPECT_FALSE(cache.get("p/4"));
}

}  // namespace
}  // namespace lazystore
