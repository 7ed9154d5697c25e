// The `.ls` NAR listing parser: what Nix writes, and hostile input (bounded, never a crash).
#include <gtest/gtest.h>

#include <cstdio>

#include "test_support.h"
#include "nar_listing.h"

namespace lazystore {
namespace {

TEST(NarListing, ParsesWhatNixWrites) {
  auto tree = parse_nar_listing(http_test_data("signed.ls"));
  ASSERT_TRUE(tree) << tree.error().message;
  auto a = tree->resolve("a");
  ASSERT_TRUE(a);
  EXPECT_EQ(tree->nodes[*a].type, NodeType::Regular);
  EXPECT_EQ(tree->nodes[*a].size, 6u);
  EXPECT_EQ(tree->nodes[*a].nar_offset, 232u);
  EXPECT_FALSE(tree->nodes[*a].executable);
  auto l = tree->resolve("l");
  ASSERT_TRUE(l);
  EXPECT_EQ(tree->nodes[*l].type, NodeType::Symlink);
  EXPECT_EQ(tree->nodes[*l].target, "a");
}

TEST(NarListing, SingleFileAndSymlinkRoots) {
  auto file = parse_nar_listing(R"({"version":1,"root":{"type":"regular","size":5,"executable":true,"narOffset":96}})");
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_EQ(file->nodes[0].type, NodeType::Regular);
  EXPECT_TRUE(file->nodes[0].executable);
  EXPECT_EQ(file->nodes[0].nar_offset, 96u);
  auto link = parse_nar_listing(R"({"version":1,"root":{"type":"symlink","target":"/nix/store/x"}})");
  ASSERT_TRUE(link);
  EXPECT_EQ(link->nodes[0].target, "/nix/store/x");
  auto nested = parse_nar_listing(
      R"({"version":1,"root":{"type":"directory","entries":{"d":{"type":"directory","entries":{"f":{"type":"regular","size":0,"narOffset":400}}},"e":{"type":"directory"}}}})");
  ASSERT_TRUE(nested) << nested.error().message;
  EXPECT_TRUE(nested->resolve("d/f"));
  EXPECT_TRUE(nested->resolve("e"));
}

TEST(NarListing, RefusesHostileInput) {
  for (const std::string& text : {
           std::string(""),
           std::string("null"),
           std::string("[]"),
           std::string("{"),
           std::string(R"({"version":2,"root":{"type":"regular","size":1}})"),
           std::string(R"({"version":1})"),
           std::string(R"({"version":1,"root":{"type":"fifo"}})"),
           std::string(R"({"version":1,"root":{"type":"regular"}})"),
           std::string(R"({"version":1,"root":{"type":"regular","size":-1}})"),
           std::string(R"({"version":1,"root":{"type":"regular","size":"1"}})"),
           std::string(R"({"version":1,"root":{"type":"regular","size":1,"narOffset":-5}})"),
           std::string(R"({"version":1,"root":{"type":"regular","size":1,"executable":"yes"}})"),
           std::string(R"({"version":1,"root":{"type":"symlink"}})"),
           std::string(R"({"version":1,"root":{"type":"symlink","target":""}})"),
           std::string(R"({"version":1,"root":{"type":"directory","entries":[]}})"),
           std::string(R"({"version":1,"root":{"type":"directory","entries":{"..":{"type":"regular","size":1}}}})"),
           std::string(R"({"version":1,"root":{"type":"directory","entries":{".":{"type":"regular","size":1}}}})"),
           std::string(R"({"version":1,"root":{"type":"directory","entries":{"a/b":{"type":"regular","size":1}}}})"),
           std::string(R"({"version":1,"root":{"type":"directory","entries":{"":{"type":"regular","size":1}}}})"),
           std::string(
               R"({"version":1,"root":{"type":"directory","entries":{"a\u0000b":{"type":"regular","size":1}}}})"),
           std::string(R"({"version":1,"root":{"type":"directory","entries":{"a":5}}})"),
           std::string(
               R"({"version":1,"root":{"type":"directory","entries":{"a":{"type":"symlink","target":"x\u0000y"}}}})"),
       }) {
    EXPECT_FALSE(parse_nar_listing(text)) << text;
  }
}

TEST(NarListing, BoundsNestingAndNames) {
  // 100000 nested arrays: refused before the JSON parser recurses.
  std::string deep = R"({"version":1,"root":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_FALSE(parse_nar_listing(deep));
  // Directories nested past Tree::kMaxDepth.
  std::string nested = R"({"version":1,"root":)";
  std::string close;
  for (size_t i = 0; i < Tree::kMaxDepth + 2; ++i) {
    nested += R"({"type":"directory","entries":{"d":)";
    close += "}}";
  }
  nested += R"({"type":"regular","size":1})" + close + "}";
  EXPECT_FALSE(parse_nar_listing(nested));
  std::string long_name(Tree::kMaxNameLength + 1, 'n');
  EXPECT_FALSE(parse_nar_listing(R"({"version":1,"root":{"type":"directory","entries":{")" + long_name +
                                 R"(":{"type":"regular","size":1}}}})"));
  std::string long_target(Tree::kMaxTargetLength + 1, 't');
  EXPECT_FALSE(parse_nar_listing(R"({"version":1,"root":{"type":"symlink","target":")" + long_target + R"("}})"));
}

TEST(NarListing, ManyEntriesStayCorrect) {
  std::string text = R"({"version":1,"root":{"type":"directory","entries":{)";
  for (int i = 0; i < 20000; ++i) {
    if (i) text += ",";
    text += "\"f" + std::to_string(i) + R"(":{"type":"regular","size":1,"narOffset":)" +
            std::to_string(1000 + i * 128) + "}";
  }
  text += "}}}";
  auto tree = parse_nar_listing(text);
  ASSERT_TRUE(tree) << tree.error().message;
  EXPECT_EQ(tree->nodes.size(), 20001u);
  auto f = tree->resolve("f19999");
  ASSERT_TRUE(f);
  EXPECT_EQ(tree->nodes[*f].nar_offset, 1000u + 19999u * 128u);
}

// Writers that sort keys (nlohmann-based Nix) put "entries" before "type"; JSON objects may list
// entries in any order. The tree is the same, children sorted.
TEST(NarListing, KeysAndEntriesInAnyOrder) {
  auto tree = parse_nar_listing(
      R"({"root":{"entries":{"b":{"size":2,"narOffset":300,"type":"regular"},"a":{"entries":{},"type":"directory"},)"
      R"("c":{"target":"b","type":"symlink"}},"type":"directory"},"version":1})");
  ASSERT_TRUE(tree) << tree.error().message;
  ASSERT_EQ(tree->nodes[0].children.size(), 3u);
  EXPECT_EQ(tree->nodes[tree->nodes[0].children[0]].name, "a");
  EXPECT_EQ(tree->nodes[tree->nodes[0].children[2]].name, "c");
  EXPECT_EQ(tree->nodes[*tree->resolve("b")].nar_offset, 300u);
  EXPECT_EQ(tree->nodes[*tree->resolve("a")].type, NodeType::Directory);
  EXPECT_EQ(tree->nodes[*tree->resolve("c")].target, "b");
  // Unknown keys and values (objects, arrays) are ignored, as Nix ignores them.
  EXPECT_TRUE(parse_nar_listing(R"({"version":1,"x":[{"a":[1,2]}],"root":{"type":"regular","size":1,"y":{"z":[]}}})"));
}

TEST(NarListing, RefusesDuplicatesAndContradictions) {
  for (
      const std::string& text : {
          // the same entry twice (a DOM parser would silently keep the last one)
          std::string(
              R"({"version":1,"root":{"type":"directory","entries":{"a":{"type":"regular","size":1},"a":{"type":"regular","size":2}}}})"),
          std::string(R"({"version":1,"root":{"type":"directory","type":"regular","size":1}})"),
          std::string(R"({"version":1,"root":{"type":"regular","size":1,"size":2}})"),
          std::string(R"({"version":1,"root":{"type":"directory","entries":{},"entries":{}}})"),
          std::string(R"({"version":1,"root":{"type":"regular","size":1},"root":{"type":"regular","size":1}})"),
          // entries under a file or a symlink, before or after its type
          std::string(
              R"({"version":1,"root":{"entries":{"a":{"type":"regular","size":1}},"type":"regular","size":1}})"),
          std::string(R"({"version":1,"root":{"type":"symlink","target":"x","entries":{}}})"),
          std::string(R"({"version":1,"root":{"entries":{}}})"),
          std::string(R"({"version":1,"root":{"type":"regular","size":1.5}})"),
          std::string(R"({"version":1,"root":{"type":"regular","size":18446744073709551616}})"),
          std::string(R"({"version":1.0,"root":{"type":"regular","size":1}})"),
          std::string(R"({"version":1,"root":{"type":"regular","size":1}} {})"),
          std::string(R"({"version":1,"root":{"type":"regular","size":null}})"),
          std::string(R"({"version":1,"root":{"type":["regular"],"size":1}})"),
      }) {
    auto tree = parse_nar_listing(text);
    EXPECT_FALSE(tree) << text;
    if (!tree) {
      EXPECT_EQ(tree.error().code, EINVAL) << text;
    }
  }
}

// The cap on entries per store path holds for listings: a million entries (plus the store path
// itself) are refused, with a message that says why, without building a JSON document.
TEST(NarListing, RefusesMoreEntriesThanTheCap) {
  auto flat = [](size_t count) {
    std::string text = R"({"version":1,"root":{"type":"directory","entries":{)";
    char name[16];
    for (size_t i = 0; i < count; ++i) {
      std::snprintf(name, sizeof name, "%07zu", i);
      if (i) text += ",";
      text += "\"" + std::string(name) + R"(":{"type":"regular","size":0})";
    }
    return text + "}}}";
  };
  auto refused = parse_nar_listing(flat(Tree::kMaxNodes));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("entries"), std::string::npos) << refused.error().message;
  EXPECT_EQ(refused.error().code, EFBIG);  // the upstream refuses the store path, no NAR fallback
  auto accepted = parse_nar_listing(flat(Tree::kMaxNodes - 1));
  ASSERT_TRUE(accepted) << accepted.error().message;
  EXPECT_EQ(accepted->nodes.size(), Tree::kMaxNodes);
}

}  // namespace
}  // namespace lazystore

namespace lazystore {
namespace {

TEST(NarListing, RefusesAFileLargerThanTheCap) {
  auto file = [](uint64_t size) {
    return R"({"version":1,"root":{"type":"regular","size":)" + std::to_string(size) + R"(,"narOffset":96}})";
  };
  EXPECT_TRUE(parse_nar_listing(file(kMaxFileSize)));
  auto refused = parse_nar_listing(file(kMaxFileSize + 1));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("absurd size"), std::string::npos) << refused.error().message;
  // A manifest body goes through the same check before its blocks are looked at.
  BlockHashes blocks;
  blocks.block_size = 1u << 20;
  EXPECT_FALSE(parse_nar_listing_with_blocks(R"({"version":1,"root":{"type":"regular","size":)" +
                                                 std::to_string(kMaxFileSize + 1) + R"(,"narOffset":96,"blocks":""}})",
                                             blocks));
}

}  // namespace
}  // namespace lazystore
