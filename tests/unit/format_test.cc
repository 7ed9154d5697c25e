#include "format.h"

#include <gtest/gtest.h>

#include "little_endian.h"

namespace lazystore {
namespace {

TEST(FormatBytes, BinaryUnits) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(3ull << 30), "3.0 GiB");
  EXPECT_EQ(format_bytes(5ull << 40), "5.0 TiB");
  EXPECT_EQ(format_bytes(5ull << 50), "5120.0 TiB");
}

TEST(LittleEndian, RoundTripAndByteOrder) {
  unsigned char bytes[8];
  put_u64_le(bytes, 0x0102030405060708ull);
  EXPECT_EQ(bytes[0], 0x08);
  EXPECT_EQ(bytes[7], 0x01);
  EXPECT_EQ(get_u64_le(bytes), 0x0102030405060708ull);
  char signed_bytes[8];
  put_u64_le(signed_bytes, ~0ull);
  EXPECT_EQ(get_u64_le(signed_bytes), ~0ull);  // no sign extension of char
}

}  // namespace
}  // namespace lazystore
