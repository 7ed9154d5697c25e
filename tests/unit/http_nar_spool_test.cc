// The verified NAR spool: none/xz/zstd streams decompressed in small pieces, NarSize and the
// sha256 NarHash checked before anything is read, corrupt or truncated input refused.
#include <gtest/gtest.h>

#include "http_test_data.h"
#include "narinfo.h"
#include "upstream/nar_spool.h"

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
  for (auto [file, compression] : {std::pair{"signed.nar", "none"}, std::pair{"signed.nar.xz", "xz"},
                                   std::pair{"signed.nar.zst", "zstd"}}) {
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
  EXPECT_EQ(spool.error().code, EIO);
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

}  // namespace
}  // namespace lazystore
