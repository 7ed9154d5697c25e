#include "printable.h"

#include <gtest/gtest.h>

namespace lazystore {
namespace {

TEST(EscapeForMessage, ControlAndNonAsciiBytesAsHexAndCut) {
  EXPECT_EQ(escape_for_message("a\nb\xff"), "a\\x0ab\\xff");
  EXPECT_EQ(escape_for_message("abcdef", 3), "abc...");
}

TEST(ReplaceBytes, EachNamedByteByItsString) {
  EXPECT_EQ(replace_bytes("", {{'a', "b"}}), "");
  EXPECT_EQ(replace_bytes("a-b\\c", {{'-', "\\-"}, {'\\', "\\e"}}), "a\\-b\\ec");
  EXPECT_EQ(replace_bytes("x|y", {{'|', "\\|"}}), "x\\|y");
  EXPECT_EQ(replace_bytes("keep", {}), "keep");
  EXPECT_EQ(replace_bytes("aaa", {{'a', ""}}), "");
}

}  // namespace
}  // namespace lazystore
