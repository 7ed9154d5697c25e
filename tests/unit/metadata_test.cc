// Metadata cache, directory upstream, inode numbers and option parsing against real directories.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "inode_table.h"
#include "metadata_cache.h"
#include "options.h"
#include "upstream/dir_upstream.h"
#include "upstream/metered_upstream.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;
const std::string kA = "0a0d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-hello-2.12";
const std::string kB = "1b1d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-world";
const std::string kFile = "2c1d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-a-file.txt";

class MetadataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/lazystore-meta-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    root_ = pattern;
    store_ = root_ + "/store";
    fs::create_directories(store_ + "/" + kA + "/bin");
    fs::create_directories(store_ + "/" + kA + "/share/empty");
    std::ofstream(store_ + "/" + kA + "/bin/hello") << "#!/bin/sh\necho hello\n";
    fs::permissions(store_ + "/" + kA + "/bin/hello", fs::perms::owner_all);
    fs::create_symlink("bin/hello", store_ + "/" + kA + "/link");
    std::ofstream(store_ + "/" + kFile) << "just a file";
    fs::create_directories(store_ + "/.links");
    fs::create_directories(store_ + "/not-a-store-path");
    auto dir = DirUpstream::open(store_);
    ASSERT_TRUE(dir.ok());
    upstream_ = std::make_unique<MeteredUpstream>(std::move(*dir), stats_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<MetadataCache> open_meta(double negative_timeout = 0.2,
                                           size_t max_nodes = MetadataCache::kDefaultMaxNodes) {
    auto meta = MetadataCache::open(*upstream_, root_ + "/meta", negative_timeout, stats_, max_nodes);
    EXPECT_TRUE(meta.ok());
    return std::move(*meta);
  }

  std::string root_, store_;
  Stats stats_;
  std::unique_ptr<Upstream> upstream_;
};

TEST_F(MetadataTest, MemoryIsBoundedAndEvictedTreesComeBackFromDisk) {
  auto meta = open_meta(0.2, 3);
  auto a = meta->get(StorePath(kA));
  ASSERT_TRUE(a.ok()) << a.error().message;
  size_t a_nodes = (*a)->tree.nodes.size();
  ASSERT_GT(a_nodes, 3u);
  EXPECT_EQ(meta->nodes_in_memory(), a_nodes);  // one tree bigger than the bound stays
  ASSERT_TRUE(meta->get(StorePath(kFile)).ok());
  EXPECT_EQ(meta->nodes_in_memory(), 1u);  // the least recently used tree left memory
  uint64_t requests = stats_.upstream_requests;
  uint64_t misses = stats_.metadata_misses;
  auto again = meta->get(StorePath(kA));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->tree, (*a)->tree);
  EXPECT_EQ(stats_.upstream_requests, requests);  // read back from disk, not the upstream
  EXPECT_EQ(stats_.metadata_misses, misses);
  EXPECT_EQ(meta->nodes_in_memory(), a_nodes);
}

TEST_F(MetadataTest, ListsAWholeStorePathOnce) {
  auto meta = open_meta();
  auto tree = meta->get(StorePath(kA));
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  const Tree& t = (*tree)->tree;
  auto hello = t.resolve("bin/hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(t.nodes[*hello].type, NodeType::Regular);
  EXPECT_TRUE(t.nodes[*hello].executable);
  EXPECT_EQ(t.nodes[*hello].size, 21u);
  auto link = t.resolve("link");
  ASSERT_TRUE(link);
  EXPECT_EQ(t.nodes[*link].target, "bin/hello");
  EXPECT_TRUE(t.resolve("share/empty"));
  uint64_t requests = stats_.upstream_requests;
  ASSERT_TRUE(meta->get(StorePath(kA)).ok());
  EXPECT_EQ(stats_.upstream_requests, requests);  // the second lookup costs nothing upstream

  auto file = meta->get(StorePath(kFile));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->tree.nodes[0].type, NodeType::Regular);
  EXPECT_EQ((*file)->tree.nodes[0].size, 11u);
}

TEST_F(MetadataTest, TopLevelListingHasOnlyCompleteStorePaths) {
  fs::create_directories(store_ + "/" + kB);
  std::ofstream(store_ + "/" + kB + ".lock");
  auto meta = open_meta();
  auto listed = meta->list_top();
  ASSERT_TRUE(listed.ok());
  std::vector<std::string> names;
  for (const auto& p : *listed) names.push_back(p.base_name());
  EXPECT_EQ(names, (std::vector<std::string>{kA, kFile}));
}

TEST_F(MetadataTest, LockedPathHiddenAndNewPathAppearsAfterTheNegativeTimeout) {
  fs::create_directories(store_ + "/" + kB);
  std::ofstream(store_ + "/" + kB + ".lock");
  auto meta = open_meta(0.2);
  auto first = meta->get(StorePath(kB));
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().code, ENOENT);
  fs::remove(store_ + "/" + kB + ".lock");
  // Still believed absent within the timeout, without asking the upstream.
  uint64_t requests = stats_.upstream_requests;
  EXPECT_FALSE(meta->get(StorePath(kB)).ok());
  EXPECT_EQ(stats_.upstream_requests, requests);
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_TRUE(meta->get(StorePath(kB)).ok());
}

TEST_F(MetadataTest, TreesPersistAndServeOffline) {
  {
    auto meta = open_meta();
    ASSERT_TRUE(meta->get(StorePath(kA)).ok());
  }
  fs::rename(store_, root_ + "/gone");
  auto meta = open_meta();
  auto tree = meta->get(StorePath(kA));
  ASSERT_TRUE(tree.ok());
  EXPECT_TRUE((*tree)->tree.resolve("bin/hello"));
  auto listed = meta->list_top();  // the upstream cannot list: the cached paths are listed
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].base_name(), kA);
  auto missing = meta->get(StorePath(kB));
  ASSERT_FALSE(missing.ok());
}

TEST_F(MetadataTest, DamagedTreeFileIsDiscardedAndRefetched) {
  {
    auto meta = open_meta();
    ASSERT_TRUE(meta->get(StorePath(kA)).ok());
  }
  std::string file = root_ + "/meta/" + kA + ".tree";
  ASSERT_TRUE(fs::exists(file));
  fs::resize_file(file, fs::file_size(file) / 2);
  auto meta = open_meta();
  auto tree = meta->get(StorePath(kA));
  ASSERT_TRUE(tree.ok());
  EXPECT_TRUE((*tree)->tree.resolve("bin/hello"));
}

TEST_F(MetadataTest, DirUpstreamNeverFollowsSymlinks) {
  // A store path that is a symlink to outside, and a file reached through a symlinked directory.
  fs::create_directories(root_ + "/outside");
  std::ofstream(root_ + "/outside/secret") << "secret";
  fs::create_directory_symlink(root_ + "/outside", store_ + "/" + kB);
  auto meta = open_meta();
  auto tree = meta->get(StorePath(kB));
  ASSERT_TRUE(tree.ok());
  EXPECT_EQ((*tree)->tree.nodes[0].type, NodeType::Symlink);
  std::byte buf[16];
  EXPECT_FALSE(upstream_->read(StorePath(kB), (*tree)->tree, 0, 0, buf).ok());
}

TEST(InodeTableTest, NumbersAreStableAndDerivedFromThePath) {
  Tree tree = Tree::with_root(NodeType::Directory);
  auto bin = tree.add_child(Tree::kRoot, "bin", NodeType::Directory);
  ASSERT_TRUE(bin.ok());
  auto st = std::make_shared<const StoreTree>(StoreTree{StorePath(kA), tree});
  InodeTable one, two;
  uint64_t a = one.acquire(st, *bin);
  EXPECT_EQ(a, two.number_of(*st, *bin));
  EXPECT_NE(a, one.acquire(st, Tree::kRoot));
  EXPECT_GT(a, 1u);
  ASSERT_TRUE(one.find(a));
  one.forget(a, 1);
  EXPECT_FALSE(one.find(a));
}

TEST(OptionsTest, SizesParse) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("64K"), 64u << 10);
  EXPECT_EQ(*parse_size("10G"), 10ull << 30);
  EXPECT_EQ(*parse_size("2MB"), 2u << 20);
  EXPECT_FALSE(parse_size("").ok());
  EXPECT_FALSE(parse_size("G").ok());
  EXPECT_FALSE(parse_size("12X").ok());
  EXPECT_FALSE(parse_size("99999999999999999999").ok());
  EXPECT_FALSE(parse_size("17179869184T").ok());
}

TEST(OptionsTest, CommandLineGivesSourceMountpointAndDefaults) {
  const char* argv[] = {"lazystore", "file:///srv/store", "/tmp", "-o",
                        "cache=/var/tmp/c,cache-size=1G,negative-timeout=0.5,allow_other", "-f"};
  fuse_args args = FUSE_ARGS_INIT(6, const_cast<char**>(argv));
  auto options = parse_mount_options(args);
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->source, "file:///srv/store");
  EXPECT_EQ(options->mountpoint, "/tmp");
  EXPECT_EQ(options->cache_dir, "/var/tmp/c");
  EXPECT_EQ(options->cache_size, 1ull << 30);
  EXPECT_DOUBLE_EQ(options->negative_timeout, 0.5);
  EXPECT_TRUE(options->foreground);
  std::string rest;
  for (int i = 0; i < args.argc; ++i) rest += std::string(args.argv[i]) + " ";
  EXPECT_NE(rest.find("ro,nosuid,nodev"), std::string::npos) << rest;
  EXPECT_NE(rest.find("allow_other"), std::string::npos) << rest;
  fuse_opt_free_args(&args);
}

TEST(OptionsTest, BadOptionsAreRefusedWithAMessage) {
  for (const char* bad : {"cache-size=lots", "chunk-size=3000", "negative-timeout=-1", "nfsvers=2",
                          "log-level=loud", "cache=relative/dir"}) {
    const char* argv[] = {"lazystore", "/srv/store", "/tmp", "-o", bad};
    fuse_args args = FUSE_ARGS_INIT(5, const_cast<char**>(argv));
    auto options = parse_mount_options(args);
    EXPECT_FALSE(options.ok()) << bad;
    fuse_opt_free_args(&args);
  }
}

}  // namespace
}  // namespace lazystore
