// The verified NAR spool: none/xz/zstd streams decompressed in small pieces, NarSize and the
// sha256 NarHash checked before anything is read, corrupt or truncated input refused.
#include <gtest/gtest.h>

#include "test_support.h"
#include "narinfo.h"
#include "upstream/nar_spool.h"
#include "upstream/nar_spool_store.h"

#include <filesystem>
#include <fstream>

namespace lazystore {
namespace {

std::string data(const std::string& name) { return http_test_data(name); }

NarInfo info() { return parse_narinfo(data("signed.narinfo")).value(); }

Result<std::unique_ptr<NarSpool>> spool_of(const std::string& compressed, const std::string& compression,
                                           const NarInfo& ni, size_t piece = 7) {
  auto spool = NarSpool::create(::testing::TempDir(), compression, ni.nar_size);
  if (!spool) return spool.error();
  for (size_t i = 0; i < compressed.size(); i += piece) {
    if (!(*spool)->append(std::span(compressed).subspan(i, std::min(piece, compressed.size() - i)))) {
      return make_error(EIO, (*spool)->error());
    }
  }
  if (auto st = (*spool)->finish(ni.nar_size, ni.nar_sha256); !st) return st.error();
  return spool;
}

TEST(NarSpool, EveryCompressionGivesTheVerifiedArchive) {
  for (auto [file, compression] :
       {std::pair{"signed.nar", "none"}, std::pair{"signed.nar.xz", "xz"}, std::pair{"signed.nar.zst", "zstd"}}) {
    auto spool = spool_of(data(file), compression, info());
    ASSERT_TRUE(spool) << compression << ": " << spool.error().message;
    std::byte buf[64];
    auto got = (*spool)->read("a", 0, buf);
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf), *got), "hello\n");
    got = (*spool)->read("a", 4, buf);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, 2u);
    EXPECT_FALSE((*spool)->read("l", 0, buf));  // a symlink
    EXPECT_FALSE((*spool)->read("missing", 0, buf));
  }
}

TEST(NarSpool, HashMismatchIsRefused) {
  std::string nar = data("signed.nar");
  nar[240] ^= 1;  // inside file "a"
  auto spool = spool_of(nar, "none", info());
  ASSERT_FALSE(spool);
  EXPECT_EQ(spool.error().code, EBADMSG);  // not the NAR the narinfo describes (not an I/O error)
  EXPECT_NE(spool.error().message.find("hash mismatch"), std::string::npos) << spool.error().message;
}

TEST(NarSpool, WrongSizeTruncatedOrCorruptIsRefused) {
  NarInfo ni = info();
  std::string nar = data("signed.nar");
  EXPECT_FALSE(spool_of(nar.substr(0, 400), "none", ni));
  EXPECT_FALSE(spool_of(nar + "extra", "none", ni));
  std::string xz = data("signed.nar.xz");
  EXPECT_FALSE(spool_of(xz.substr(0, xz.size() - 10), "xz", ni));
  std::string zst = data("signed.nar.zst");
  EXPECT_FALSE(spool_of(zst.substr(0, zst.size() - 10), "zstd", ni));
  std::string garbage(300, 'x');
  EXPECT_FALSE(spool_of(garbage, "xz", ni));
  EXPECT_FALSE(spool_of(garbage, "zstd", ni));
}

TEST(NarSpool, UnsupportedCompressionIsAClearError) {
  auto spool = NarSpool::create(::testing::TempDir(), "bzip2", 1);
  ASSERT_FALSE(spool);
  EXPECT_EQ(spool.error().code, ENOTSUP);
  EXPECT_NE(spool.error().message.find("bzip2"), std::string::npos);
}

TEST(NarSpoolStore, AVerifiedNarIsKeptAndServedAfterARestartWithoutDownload) {
  TempDir temp("spool-store-kept");
  std::string dir = temp.str();
  NarInfo ni = info();
  int downloads = 0;
  auto download = [&]() -> Result<std::unique_ptr<NarSpool>> {
    ++downloads;
    auto spool = NarSpool::create(dir, "none", ni.nar_size);
    if (!spool) return spool.error();
    std::string nar = data("signed.nar");
    if (!(*spool)->append(nar)) return make_error(EIO, (*spool)->error());
    if (auto st = (*spool)->finish(ni.nar_size, ni.nar_sha256); !st) return st.error();
    return spool;
  };
  std::string hash = ni.store_path.substr(0, 32);
  {
    NarSpoolStore store(dir, 1 << 20);
    auto spool = store.get(hash, ni, std::chrono::seconds(5), download);
    ASSERT_TRUE(spool) << spool.error().message;
    EXPECT_EQ(store.kept_bytes(), ni.nar_size);
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/" + hash + ".nar"));
  NarSpoolStore restarted(dir, 1 << 20);
  auto spool = restarted.get(hash, ni, std::chrono::seconds(5), download);
  ASSERT_TRUE(spool) << spool.error().message;
  EXPECT_EQ(downloads, 1);
  std::byte buf[16];
  auto got = (*spool)->read("a", 0, buf);
  ASSERT_TRUE(got);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf), *got), "hello\n");
}

TEST(NarSpoolStore, AKeptNarThatChangedOnDiskIsDownloadedAgain) {
  TempDir temp("spool-store-changed");
  std::string dir = temp.str();
  NarInfo ni = info();
  std::string hash = ni.store_path.substr(0, 32);
  std::string nar = data("signed.nar");
  nar[240] ^= 1;  // the local copy rotted (same size)
  { std::ofstream(dir + "/" + hash + ".nar", std::ios::binary) << nar; }
  { std::ofstream(dir + "/.tmp-a1B2c3", std::ios::binary) << "cut off by a crash"; }
  int downloads = 0;
  NarSpoolStore store(dir, 1 << 20);
  auto spool = store.get(hash, ni, std::chrono::seconds(5), [&]() -> Result<std::unique_ptr<NarSpool>> {
    ++downloads;
    auto made = NarSpool::create(dir, "none", ni.nar_size);
    if (!made) return made.error();
    if (!(*made)->append(data("signed.nar"))) return make_error(EIO, (*made)->error());
    if (auto st = (*made)->finish(ni.nar_size, ni.nar_sha256); !st) return st.error();
    return made;
  });
  ASSERT_TRUE(spool) << spool.error().message;
  EXPECT_EQ(downloads, 1);
  EXPECT_FALSE(std::filesystem::exists(dir + "/.tmp-a1B2c3"));
}

TEST(NarSpoolStore, AFailedDownloadLeavesNothingAndIsRetried) {
  TempDir temp("spool-store-failed");
  std::string dir = temp.str();
  NarInfo ni = info();
  std::string hash = ni.store_path.substr(0, 32);
  NarSpoolStore store(dir, 1 << 20);
  auto failed = store.get(hash, ni, std::chrono::seconds(5), [&]() -> Result<std::unique_ptr<NarSpool>> {
    auto made = NarSpool::create(dir, "none", ni.nar_size);
    if (!made) return made.error();
    (void)(*made)->append(data("signed.nar").substr(0, 100));
    throw std::runtime_error("the consumer blew up");
  });
  ASSERT_FALSE(failed);
  EXPECT_TRUE(std::filesystem::is_empty(dir));  // the temporary went with its spool
  auto again = store.get(hash, ni, std::chrono::seconds(5), [&]() -> Result<std::unique_ptr<NarSpool>> {
    auto made = NarSpool::create(dir, "none", ni.nar_size);
    if (!made) return made.error();
    if (!(*made)->append(data("signed.nar"))) return make_error(EIO, (*made)->error());
    if (auto st = (*made)->finish(ni.nar_size, ni.nar_sha256); !st) return st.error();
    return made;
  });
  ASSERT_TRUE(again) << again.error().message;
}

TEST(NarSpoolStore, TheBoundEvictsTheLeastRecentlyUsed) {
  TempDir temp("spool-store-bound");
  std::string dir = temp.str();
  NarInfo ni = info();
  NarSpoolStore store(dir, ni.nar_size * 2);  // room for two
  auto download = [&]() -> Result<std::unique_ptr<NarSpool>> {
    auto made = NarSpool::create(dir, "none", ni.nar_size);
    if (!made) return made.error();
    if (!(*made)->append(data("signed.nar"))) return make_error(EIO, (*made)->error());
    if (auto st = (*made)->finish(ni.nar_size, ni.nar_sha256); !st) return st.error();
    return made;
  };
  std::string a(32, 'a'), b(32, 'b'), c(32, 'c');
  ASSERT_TRUE(store.get(a, ni, std::chrono::seconds(5), download));
  ASSERT_TRUE(store.get(b, ni, std::chrono::seconds(5), download));
  ASSERT_TRUE(store.get(a, ni, std::chrono::seconds(5), download));  // a is now the most recent
  ASSERT_TRUE(store.get(c, ni, std::chrono::seconds(5), download));
  EXPECT_TRUE(std::filesystem::exists(dir + "/" + a + ".nar"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/" + b + ".nar"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/" + c + ".nar"));
  EXPECT_LE(store.kept_bytes(), ni.nar_size * 2);
}

}  // namespace
}  // namespace lazystore
