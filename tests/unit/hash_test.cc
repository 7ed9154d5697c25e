// xxh3 against the reference values published with xxHash (and LLVM's copy of its test vectors).
#include <gtest/gtest.h>

#include <vector>

#include "hash.h"

namespace lazystore {
namespace {

// The xorshift buffer of LLVM's unittests/Support/xxhashTest.cpp.
std::vector<std::byte> xorshift_buffer() {
  std::vector<std::byte> a(2243);
  uint64_t x = 1;
  for (auto& b : a) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x & 0xff);
  }
  return a;
}

TEST(Xxh3, KnownValues) {
  EXPECT_EQ(xxh3_64(std::string_view()), 0x2d06800538d394c2u);
  EXPECT_EQ(xxh3_64(std::string_view("a")), 0xe6c632b61e964e1fu);
  auto a = xorshift_buffer();
  const std::pair<size_t, uint64_t> known[] = {
      {0, 0x2d06800538d394c2},    {1, 0xd0d496e05c553485},    {2, 0x84d625edb7055eac},    {3, 0x6ea2d59aca5c3778},
      {4, 0xbf65290914e80242},    {5, 0xc01fd099ad4fc8e4},    {6, 0x9e3ea8187399caa5},    {7, 0x9da8b60540644f5a},
      {8, 0xabc1413da6cd0209},    {9, 0x8bc89400bfed51f6},    {16, 0x7e46916754d7c9b8},   {17, 0xed4be912ba5f836d},
      {32, 0xf59b59b58c304fd1},   {33, 0x9013fb74ca603e0c},   {64, 0xfa5271fcce0db1c3},   {65, 0x79c42431727f1012},
      {96, 0x591ee0ddf9c9ccd1},   {97, 0x8ffc6a3111fe19da},   {128, 0x06a146ee9a2da378},  {129, 0xbc7138129bf065da},
      {403, 0xcefeb3ffa532ad8c},  {512, 0xcdfa6b6268e3650f},  {513, 0x4bb5d42742f9765f},  {2048, 0x330ce110cbb79eae},
      {2049, 0x3ba6afa0249fef9a}, {2240, 0xd61d4d2a94e926a8}, {2243, 0x0979f786a24edde7},
  };
  for (auto [length, expected] : known) {
    EXPECT_EQ(xxh3_64(std::span(a).first(length)), expected) << length;
    std::string_view text(reinterpret_cast<const char*>(a.data()), length);
    EXPECT_EQ(xxh3_64(text), expected) << length;
  }
}

TEST(Xxh3, Hex128) {
  EXPECT_EQ(xxh3_128_hex(""), "99aa06d3014798d86001c324468d497f");
  std::string h = xxh3_128_hex("/nix/store/lpg73p3x49mjkxrdj3vxhhzslln67blr-.foo");
  EXPECT_EQ(h.size(), 32u);
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(h, xxh3_128_hex("/nix/store/lpg73p3x49mjkxrdj3vxhhzslln67blr-.fop"));
}

TEST(Xxh3, StreamMatchesOneShot) {
  auto a = xorshift_buffer();
  uint64_t whole = xxh3_64(a);
  for (size_t split :
       {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{240}, size_t{241}, size_t{1024}, size_t{2242}, a.size()}) {
    Xxh3Stream stream;
    stream.update(std::span(a).first(split));
    stream.update(std::span(a).subspan(split));
    EXPECT_EQ(stream.digest(), whole) << split;
  }
  Xxh3Stream bytewise;
  for (std::byte b : a) bytewise.update(std::span(&b, 1));
  EXPECT_EQ(bytewise.digest(), whole);
  EXPECT_EQ(bytewise.digest(), whole);  // digest() does not disturb the state

  Xxh3Stream empty;
  EXPECT_EQ(empty.digest(), 0x2d06800538d394c2u);
  Xxh3Stream text;
  text.update(std::string_view("a"));
  EXPECT_EQ(text.digest(), 0xe6c632b61e964e1fu);
}

}  // namespace
}  // namespace lazystore
