// Store path names follow Nix's own rules (src/libstore/path.cc, checkName).
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>

#include "store_path.h"

namespace lazystore {
namespace {

const std::string kHash = "lpg73p3x49mjkxrdj3vxhhzslln67blr";

TEST(StorePath, AcceptsValidNames) {
  for (std::string name : {"hello-2.12.1", "a", "0", "glibc-2.37-8", "X+-._?=", "foo.drv", "python3.11-numpy-1.26.4",
                           ".foo", "..foo", "-", "a..b", "---"}) {
    EXPECT_TRUE(StorePath::is_valid(kHash + "-" + name)) << name;
    auto parsed = StorePath::parse(kHash + "-" + name);
    ASSERT_TRUE(parsed) << name << ": " << parsed.error().message;
    EXPECT_EQ(parsed->hash_part(), kHash);
    EXPECT_EQ(parsed->name(), name);
    EXPECT_EQ(parsed->base_name(), kHash + "-" + name);
    EXPECT_EQ(parsed->absolute(), "/nix/store/" + kHash + "-" + name);
  }
  EXPECT_TRUE(StorePath::is_valid(kHash + "-" + std::string(211, 'x')));
  std::string every;
  for (char c = '0'; c <= '9'; ++c) every += c;
  for (char c = 'a'; c <= 'z'; ++c) every += c;
  for (char c = 'A'; c <= 'Z'; ++c) every += c;
  every += "+-._?=";
  EXPECT_TRUE(StorePath::is_valid(kHash + "-" + every));
  EXPECT_TRUE(StorePath::is_valid("00000000000000000000000000000000-x"));
  EXPECT_TRUE(StorePath::is_valid("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-x"));
}

TEST(StorePath, RejectsBadHashes) {
  EXPECT_FALSE(StorePath::is_valid(kHash.substr(1) + "-hello"));  // 31 chars
  EXPECT_FALSE(StorePath::is_valid(kHash + "0-hello"));           // 33 chars
  for (char bad : {'e', 'o', 'u', 't', 'A', 'Z', '_', '.', '-', '/', '\0', '\xc3'}) {
    for (size_t pos : {size_t{0}, size_t{17}, size_t{31}}) {
      std::string base = kHash + "-hello";
      base[pos] = bad;
      EXPECT_FALSE(StorePath::is_valid(base)) << base;
      auto parsed = StorePath::parse(base);
      ASSERT_FALSE(parsed);
      EXPECT_EQ(parsed.error().code, EINVAL);
    }
  }
  EXPECT_FALSE(StorePath::is_valid(kHash + "_hello"));  // no '-' after the hash
  EXPECT_FALSE(StorePath::is_valid(kHash + "hello"));
  EXPECT_FALSE(StorePath::is_valid(""));
  EXPECT_FALSE(StorePath::is_valid(kHash));
}

TEST(StorePath, RejectsBadNames) {
  EXPECT_FALSE(StorePath::is_valid(kHash + "-"));                          // empty
  EXPECT_FALSE(StorePath::is_valid(kHash + "-" + std::string(212, 'x')));  // too long
  for (std::string name : {"a/b", "/", "a b", "a@b", "a:b", "a~b", "a*b", "a\\b", "a'b", "a\"b", "a\nb", "caf\xc3\xa9",
                           "\xe2\x9c\x93", "a\x7f", "%41", "a,b", "a;b", "a$b"}) {
    EXPECT_FALSE(StorePath::is_valid(kHash + "-" + name)) << name;
  }
  EXPECT_FALSE(StorePath::is_valid(kHash + "-" + std::string("a\0b", 3)));
}

TEST(StorePath, RejectsDots) {
  // Nix refuses "." and "..", also as the first dash-separated component.
  for (std::string name : {".", "..", ".-foo", "..-foo", ".-", "..-"}) {
    EXPECT_FALSE(StorePath::is_valid(kHash + "-" + name)) << name;
  }
  // Nix 2.4 and later accept other names with a leading '.' (Nix 2.8 creates them).
  for (std::string name : {".foo", "..foo", "...", ".a-b", "...-x"}) {
    EXPECT_TRUE(StorePath::is_valid(kHash + "-" + name)) << name;
  }
}

TEST(StorePath, ConstructorThrowsOnInvalid) {
  EXPECT_NO_THROW(StorePath(kHash + "-hello"));
  EXPECT_THROW(StorePath(kHash + "-"), std::invalid_argument);
  EXPECT_THROW(StorePath("hello"), std::invalid_argument);
  try {
    StorePath(kHash + "-a/b");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("illegal character"), std::string::npos) << e.what();
  }
}

TEST(StorePath, ErrorMessagesAreSafeToLog) {
  auto parsed = StorePath::parse(kHash + "-a\n\x1b[31mred" + std::string(300, 'x'));
  ASSERT_FALSE(parsed);
  const std::string& message = parsed.error().message;
  EXPECT_EQ(message.find('\n'), std::string::npos);
  EXPECT_EQ(message.find('\x1b'), std::string::npos);
  EXPECT_LT(message.size(), 200u);
}

TEST(StorePath, ParsesAbsolutePaths) {
  auto plain = StorePath::parse_absolute("/nix/store/" + kHash + "-hello");
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(plain->base_name(), kHash + "-hello");
  auto inside = StorePath::parse_absolute("/nix/store/" + kHash + "-hello/bin/hello");
  ASSERT_TRUE(inside);
  EXPECT_EQ(inside->base_name(), kHash + "-hello");
  auto slash = StorePath::parse_absolute("/nix/store/" + kHash + "-hello/");
  ASSERT_TRUE(slash);
  EXPECT_EQ(slash->name(), "hello");

  const std::vector<std::string> bad_paths = {"/nix/store",
                                              "/nix/store/",
                                              "/nix/store//" + kHash + "-hello",
                                              "nix/store/" + kHash + "-hello",
                                              "/nix/storex/" + kHash + "-hello",
                                              "/nix/stor/" + kHash + "-hello",
                                              "/nix/store/" + kHash + "-",
                                              "/nix/store/" + kHash + "-hello world/bin",
                                              "/gnu/store/" + kHash + "-a",
                                              "/nix/store/.links",
                                              ""};
  for (const std::string& bad : bad_paths) {
    auto parsed = StorePath::parse_absolute(bad);
    EXPECT_FALSE(parsed) << bad;
    if (!parsed) {
      EXPECT_EQ(parsed.error().code, EINVAL);
    }
  }
}

TEST(StorePath, OrdersAndComparesByBaseName) {
  StorePath a("00000000000000000000000000000000-b");
  StorePath b("00000000000000000000000000000001-a");
  StorePath a2("00000000000000000000000000000000-b");
  EXPECT_LT(a, b);
  EXPECT_EQ(a, a2);
  std::set<StorePath> set{b, a, a2};
  EXPECT_EQ(set.size(), 2u);
}

}  // namespace
}  // namespace lazystore

namespace lazystore {
namespace {

TEST(StorePath, BuildScratchDirectoriesAreNotStorePaths) {
  // A sandboxed build's chroot beside its derivation: a valid name, hidden from the mount.
  const std::string chroot = "fj0hcasl3p9k05015d0jwcrmy9kcng4g-slow-remote.drv.chroot";
  EXPECT_TRUE(StorePath::is_valid(chroot));
  EXPECT_TRUE(StorePath::is_build_scratch(chroot));
  EXPECT_FALSE(StorePath::is_build_scratch("fj0hcasl3p9k05015d0jwcrmy9kcng4g-slow-remote.drv"));
  EXPECT_FALSE(StorePath::is_build_scratch("fj0hcasl3p9k05015d0jwcrmy9kcng4g-chroot"));
}

}  // namespace
}  // namespace lazystore
