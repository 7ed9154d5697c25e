// Tree building, lookup, and the serialized form: round trips exactly, rejects any damage.
#include <gtest/gtest.h>

#include "hash.h"
#include "tree.h"

namespace lazystore {
namespace {

// bin/ (hello executable, sh -> hello), lib/ (empty dir), README, share -> /elsewhere
Tree sample_tree() {
  Tree tree = Tree::with_root(NodeType::Directory);
  auto lib = tree.add_child(Tree::kRoot, "lib", NodeType::Directory);
  auto bin = tree.add_child(Tree::kRoot, "bin", NodeType::Directory);
  auto readme = tree.add_child(Tree::kRoot, "README", NodeType::Regular);
  auto share = tree.add_child(Tree::kRoot, "share", NodeType::Symlink);
  EXPECT_TRUE(lib && bin && readme && share);
  auto sh = tree.add_child(*bin, "sh", NodeType::Symlink);
  auto hello = tree.add_child(*bin, "hello", NodeType::Regular);
  EXPECT_TRUE(sh && hello);
  tree.nodes[*readme].size = 1234;
  tree.nodes[*readme].nar_offset = 400;
  tree.nodes[*hello].size = 5'000'000'000;
  tree.nodes[*hello].executable = true;
  tree.nodes[*hello].nar_offset = 2000;
  tree.nodes[*sh].target = "hello";
  tree.nodes[*sh].size = 5;
  tree.nodes[*share].target = "/elsewhere";
  tree.nodes[*share].size = 10;
  return tree;
}

std::string with_checksum(std::string body_and_old_checksum) {
  std::string body = body_and_old_checksum.substr(0, body_and_old_checksum.size() - 8);
  uint64_t sum = xxh3_64(body);
  for (int i = 0; i < 8; ++i) body.push_back(static_cast<char>((sum >> (8 * i)) & 0xff));
  return body;
}

TEST(Tree, AddChildKeepsChildrenSortedBytewise) {
  Tree tree = Tree::with_root(NodeType::Directory);
  for (const char* name : {"b", "a", "B", "_", "a.b", "a-b", "\xc3\xa9", "~", "0", "aa"}) {
    ASSERT_TRUE(tree.add_child(Tree::kRoot, name, NodeType::Regular)) << name;
  }
  std::vector<std::string> names;
  for (uint32_t c : tree.nodes[0].children) names.push_back(tree.nodes[c].name);
  EXPECT_EQ(names, (std::vector<std::string>{"0", "B", "_", "a", "a-b", "a.b", "aa", "b", "~", "\xc3\xa9"}));
  for (const std::string& name : names) {
    auto found = tree.child(Tree::kRoot, name);
    ASSERT_TRUE(found) << name;
    EXPECT_EQ(tree.nodes[*found].name, name);
    EXPECT_EQ(tree.nodes[*found].parent, Tree::kRoot);
  }
  EXPECT_FALSE(tree.child(Tree::kRoot, "c"));
  EXPECT_FALSE(tree.child(Tree::kRoot, ""));
  EXPECT_FALSE(tree.child(12345, "a"));
}

TEST(Tree, AddChildRejects) {
  Tree tree = Tree::with_root(NodeType::Directory);
  auto file = tree.add_child(Tree::kRoot, "file", NodeType::Regular);
  ASSERT_TRUE(file);
  auto dup = tree.add_child(Tree::kRoot, "file", NodeType::Directory);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, EEXIST);
  auto under_file = tree.add_child(*file, "x", NodeType::Regular);
  ASSERT_FALSE(under_file);
  EXPECT_EQ(under_file.error().code, ENOTDIR);
  EXPECT_FALSE(tree.add_child(99, "x", NodeType::Regular));
  const std::vector<std::string> bad_names = {"", ".", "..", "a/b", "/", std::string("a\0b", 3), std::string(256, 'n')};
  for (const std::string& bad : bad_names) {
    auto added = tree.add_child(Tree::kRoot, bad, NodeType::Regular);
    ASSERT_FALSE(added) << bad;
    EXPECT_EQ(added.error().code, EINVAL);
  }
  EXPECT_TRUE(tree.add_child(Tree::kRoot, std::string(255, 'n'), NodeType::Regular));
  EXPECT_TRUE(tree.add_child(Tree::kRoot, "...", NodeType::Regular));
  Tree file_root = Tree::with_root(NodeType::Regular);
  EXPECT_FALSE(file_root.add_child(Tree::kRoot, "x", NodeType::Regular));
  EXPECT_EQ(tree.nodes.size(), 4u);
}

TEST(Tree, DepthIsLimited) {
  Tree tree = Tree::with_root(NodeType::Directory);
  uint32_t dir = Tree::kRoot;
  for (size_t depth = 1; depth <= Tree::kMaxDepth; ++depth) {
    auto next = tree.add_child(dir, "d", NodeType::Directory);
    ASSERT_TRUE(next) << depth;
    dir = *next;
  }
  auto too_deep = tree.add_child(dir, "d", NodeType::Regular);
  ASSERT_FALSE(too_deep);
  EXPECT_EQ(too_deep.error().code, ELOOP);
  auto back = Tree::deserialize(tree.serialize());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, tree);
}

TEST(Tree, PathsAndResolve) {
  Tree tree = sample_tree();
  EXPECT_EQ(tree.path_of(Tree::kRoot), "");
  auto hello = tree.resolve("bin/hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(tree.nodes[*hello].name, "hello");
  EXPECT_EQ(tree.path_of(*hello), "bin/hello");
  EXPECT_EQ(tree.resolve(""), Tree::kRoot);
  EXPECT_EQ(tree.path_of(*tree.resolve("lib")), "lib");
  EXPECT_FALSE(tree.resolve("bin/missing"));
  EXPECT_FALSE(tree.resolve("README/x"));
  EXPECT_FALSE(tree.resolve("share/x"));  // symlinks are not followed
  EXPECT_FALSE(tree.resolve("bin//hello"));
  EXPECT_FALSE(tree.resolve("bin/"));
  EXPECT_FALSE(tree.resolve("/bin"));
  EXPECT_EQ(tree.total_file_bytes(), 5'000'001'234u);
  for (uint32_t i = 0; i < tree.nodes.size(); ++i) EXPECT_EQ(tree.resolve(tree.path_of(i)), i);
}

TEST(Tree, SerializeRoundTrips) {
  std::vector<Tree> trees = {sample_tree(), Tree::with_root(NodeType::Directory), Tree::with_root(NodeType::Regular)};
  Tree link = Tree::with_root(NodeType::Symlink);
  link.nodes[0].target = "../x";
  link.nodes[0].size = 4;
  trees.push_back(link);
  Tree file = Tree::with_root(NodeType::Regular);
  file.nodes[0].size = UINT64_MAX;
  file.nodes[0].executable = true;
  file.nodes[0].nar_offset = 96;
  trees.push_back(file);
  for (const Tree& tree : trees) {
    std::string data = tree.serialize();
    auto back = Tree::deserialize(data);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, tree);
    EXPECT_EQ(back->serialize(), data);
  }
}

TEST(Tree, EveryCorruptionIsRejected) {
  std::string data = sample_tree().serialize();
  for (size_t i = 0; i < data.size(); ++i) {
    for (int flip : {0x01, 0x80, 0xff}) {
      std::string bad = data;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      auto result = Tree::deserialize(bad);
      ASSERT_FALSE(result) << "byte " << i << " ^ " << flip;
      EXPECT_EQ(result.error().code, EINVAL);
    }
  }
  for (size_t length = 0; length < data.size(); ++length) {
    EXPECT_FALSE(Tree::deserialize(data.substr(0, length))) << length;
  }
  EXPECT_FALSE(Tree::deserialize(data + '\0'));
  EXPECT_FALSE(Tree::deserialize(with_checksum(data + std::string(8, '\0'))));
}

// Invalid trees serialize fine (serialize does not judge) and must not come back.
void expect_rejected(const Tree& tree, const char* why) {
  auto result = Tree::deserialize(tree.serialize());
  EXPECT_FALSE(result) << why;
}

TEST(Tree, StructuralDamageIsRejectedEvenWithAValidChecksum) {
  Tree base = sample_tree();
  uint32_t bin = *base.resolve("bin"), lib = *base.resolve("lib");
  uint32_t hello = *base.resolve("bin/hello"), sh = *base.resolve("bin/sh");
  uint32_t readme = *base.resolve("README");

  Tree t = base;
  t.nodes.clear();
  expect_rejected(t, "no nodes");
  t = base;
  std::swap(t.nodes[bin].children[0], t.nodes[bin].children[1]);
  expect_rejected(t, "unsorted children");
  t = base;
  t.nodes[sh].name = "hello";
  expect_rejected(t, "duplicate names");
  t = base;
  t.nodes[hello].parent = lib;
  expect_rejected(t, "child's parent is another directory");
  t = base;
  t.nodes[lib].children.push_back(hello);
  expect_rejected(t, "node listed twice");
  t = base;
  t.nodes[bin].children.pop_back();
  expect_rejected(t, "node not listed by its parent");
  t = base;
  t.nodes[bin].children.push_back(Tree::kRoot);
  expect_rejected(t, "root as a child");
  t = base;
  t.nodes[bin].children.push_back(static_cast<uint32_t>(t.nodes.size()));
  expect_rejected(t, "child out of range");
  t = base;
  t.nodes[hello].parent = static_cast<uint32_t>(t.nodes.size());
  expect_rejected(t, "parent out of range");
  t = base;
  t.nodes[readme].name = "a/b";
  expect_rejected(t, "slash in name");
  t = base;
  t.nodes[readme].name = "..";
  expect_rejected(t, "dot-dot name");
  t = base;
  t.nodes[readme].name = "";
  expect_rejected(t, "empty name");
  t = base;
  t.nodes[readme].name = std::string(256, 'n');
  expect_rejected(t, "name too long");
  t = base;
  t.nodes[0].name = "root";
  expect_rejected(t, "named root");
  t = base;
  t.nodes[0].parent = bin;
  expect_rejected(t, "root with a parent");
  t = base;
  t.nodes[readme].type = static_cast<NodeType>(4);
  expect_rejected(t, "unknown type");
  t = base;
  t.nodes[bin].executable = true;
  expect_rejected(t, "executable directory");
  t = base;
  t.nodes[sh].executable = true;
  expect_rejected(t, "executable symlink");
  t = base;
  t.nodes[sh].size = 99;
  expect_rejected(t, "symlink size is not its target length");
  t = base;
  t.nodes[sh].target = std::string(Tree::kMaxTargetLength + 1, 't');
  t.nodes[sh].size = t.nodes[sh].target.size();
  expect_rejected(t, "target too long");
  t = base;
  t.nodes[sh].target = "";
  t.nodes[sh].size = 0;
  expect_rejected(t, "empty target");
  t = base;
  t.nodes[readme].target = "x";
  expect_rejected(t, "file with a target");
  t = base;
  t.nodes[readme].children.push_back(sh);
  expect_rejected(t, "file with children");
  t = base;
  t.nodes[bin].type = NodeType::Regular;
  expect_rejected(t, "children under a file");
  t = base;
  t.nodes[lib].size = 1;
  expect_rejected(t, "directory with a size");

  // A cycle that bypasses the root: two directories that are each other's parent and child.
  t = base;
  auto a = static_cast<uint32_t>(t.nodes.size());
  t.nodes.push_back(TreeNode{NodeType::Directory, false, 0, 0, "a", "", a + 1, {a + 1}});
  t.nodes.push_back(TreeNode{NodeType::Directory, false, 0, 0, "b", "", a, {a}});
  expect_rejected(t, "cycle");

  // Deeper than kMaxDepth, built by hand since add_child refuses.
  Tree deep = Tree::with_root(NodeType::Directory);
  for (uint32_t i = 1; i <= Tree::kMaxDepth + 1; ++i) {
    deep.nodes[i - 1].children.push_back(i);
    deep.nodes.push_back(TreeNode{NodeType::Directory, false, 0, 0, "d", "", i - 1, {}});
  }
  expect_rejected(deep, "too deep");
  deep.nodes.pop_back();
  deep.nodes.back().children.clear();
  EXPECT_TRUE(Tree::deserialize(deep.serialize()));
}

TEST(Tree, HugeCountsAreRejectedWithoutAllocating) {
  std::string data = Tree::with_root(NodeType::Directory).serialize();
  // Node count (bytes 12..15) set to 2^32-1, checksum fixed up: must fail on size, not allocate.
  for (uint32_t count : {0xffffffffu, 4'000'000u, 4'000'001u, 2u}) {
    std::string bad = data;
    for (int i = 0; i < 4; ++i) bad[12 + i] = static_cast<char>((count >> (8 * i)) & 0xff);
    auto result = Tree::deserialize(with_checksum(bad));
    ASSERT_FALSE(result) << count;
  }
  // A child count of 2^32-1 in the root's record (offset 16 + 30).
  std::string bad = data;
  for (int i = 0; i < 4; ++i) bad[16 + 30 + i] = '\xff';
  EXPECT_FALSE(Tree::deserialize(with_checksum(bad)));
  // A name length of 2^32-1 (offset 16 + 2).
  bad = data;
  for (int i = 0; i < 4; ++i) bad[16 + 2 + i] = '\xff';
  EXPECT_FALSE(Tree::deserialize(with_checksum(bad)));
}

TEST(Tree, FileSizesPastTheLargestServedAreRefused) {
  EXPECT_TRUE(Tree::check_file_size(0, "f"));
  EXPECT_TRUE(Tree::check_file_size(Tree::kMaxFileSize, "f"));
  for (uint64_t size : {Tree::kMaxFileSize + 1, (uint64_t{1} << 52) + (5 << 20), UINT64_MAX}) {
    auto checked = Tree::check_file_size(size, "p/f");
    ASSERT_FALSE(checked) << size;
    EXPECT_EQ(checked.error().code, EFBIG);
    EXPECT_EQ(checked.error().message.rfind("p/f: " + std::to_string(size) + " bytes", 0), 0u)
        << checked.error().message;
  }
}

// Children of any order (a JSON listing): appended, then sorted once; duplicates refused.
TEST(Tree, AppendThenSortChildren) {
  Tree tree = Tree::with_root(NodeType::Directory);
  for (const char* name : {"c", "a", "b"}) ASSERT_TRUE(tree.append_child(Tree::kRoot, name, NodeType::Regular));
  EXPECT_FALSE(tree.append_child(Tree::kRoot, "x/y", NodeType::Regular));
  EXPECT_FALSE(tree.append_child(Tree::kRoot, "..", NodeType::Regular));
  ASSERT_TRUE(tree.sort_children(Tree::kRoot));
  EXPECT_EQ(tree.nodes[tree.nodes[0].children[0]].name, "a");
  EXPECT_EQ(tree.nodes[tree.nodes[0].children[2]].name, "c");
  EXPECT_EQ(tree.resolve("b"), tree.nodes[0].children[1]);
  ASSERT_TRUE(tree.append_child(Tree::kRoot, "b", NodeType::Regular));
  auto dup = tree.sort_children(Tree::kRoot);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, EEXIST);
}

}  // namespace
}  // namespace lazystore
