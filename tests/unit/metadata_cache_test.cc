// Metadata cache, directory upstream, inode numbers and option parsing against real directories.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "inode_table.h"
#include "metadata_cache.h"
#include "options.h"
#include "upstream/dir_upstream.h"
#include "upstream/metered_upstream.h"
#include "test_support.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;
const std::string kA = "0a0d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-hello-2.12";
const std::string kB = "1b1d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-world";
const std::string kFile = "2c1d2h0b3y6fc9hcfzrq5wnhn8zbk3pv-a-file.txt";

class MetadataTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-meta-test"};
  void SetUp() override {
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

  std::unique_ptr<MetadataCache> open_meta(double negative_timeout = 0.2,
                                           size_t max_nodes = MetadataCache::kDefaultMaxNodes) {
    auto meta = MetadataCache::open(*upstream_, root_ + "/meta", negative_timeout, stats_, max_nodes);
    EXPECT_TRUE(meta.ok());
    return std::move(*meta);
  }

  std::string root_ = temp_.str();
  std::string store_;
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
  // The negative entries' clock is the test's: it moves only when the test says.
  auto now = std::make_shared<std::atomic<int64_t>>(0);
  MetadataCache::Options options;
  options.negative_timeout_seconds = 1.0;
  options.now = [now] { return MetadataCache::Clock::time_point(std::chrono::milliseconds(now->load())); };
  auto opened = MetadataCache::open(*upstream_, root_ + "/meta", stats_, options);
  ASSERT_TRUE(opened.ok());
  auto& meta = *opened;
  auto first = meta->get(StorePath(kB));
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().code, ENOENT);
  fs::remove(store_ + "/" + kB + ".lock");
  // Still believed absent within the timeout (just before its end), without asking the upstream.
  *now = 999;
  uint64_t requests = stats_.upstream_requests;
  EXPECT_FALSE(meta->get(StorePath(kB)).ok());
  EXPECT_EQ(stats_.upstream_requests, requests);
  *now = 1000;
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

// An upstream whose walk hands one directory to the builder each time the test says so:
// step(Wanted) lists a directory a waiter asked for (it waits until one is asked), step(Next)
// the next breadth-first; run_to_end() lists the rest, fail_next() ends the walk with EIO.
class SteppedUpstream final : public Upstream {
 public:
  enum class Step { Wanted, Next, ToEnd, Fail, FailWhenWanted };

  explicit SteppedUpstream(Tree tree) : tree_(std::move(tree)) {}
  std::string describe() const override { return "stepped"; }
  Result<bool> exists(const StorePath&) override {
    if (throw_once_.exchange(false)) throw std::bad_alloc();
    return true;
  }
  Result<std::vector<StorePath>> list_store() override { return std::vector<StorePath>{}; }
  Result<Tree> list_tree(const StorePath&) override { return tree_; }
  Result<size_t> read(const StorePath&, const Tree&, uint32_t, uint64_t, std::span<std::byte>) override {
    return make_error(EIO, "no reads here");
  }
  Result<UpstreamStatfs> statfs() override { return UpstreamStatfs{}; }

  Status walk_tree(const StorePath&, TreeBuilder& builder) override {
    walks_++;
    auto entry_of = [this](uint32_t node) {
      const TreeNode& n = tree_.nodes[node];
      return TreeBuilder::Entry{n.name, n.type, n.size, n.executable, n.target, n.nar_offset};
    };
    if (auto set = builder.set_root(entry_of(Tree::kRoot)); !set) return set;
    std::deque<std::pair<uint32_t, uint32_t>> pending{{Tree::kRoot, Tree::kRoot}};  // ours, the builder's
    std::deque<uint32_t> wanted;
    bool to_end = false;
    while (!pending.empty()) {
      Step step = to_end ? Step::ToEnd : next_step();
      if (step == Step::ToEnd) to_end = true;
      for (uint32_t node : builder.take_wanted()) wanted.push_back(node);
      if (step == Step::Wanted || step == Step::FailWhenWanted) {
        // Poll with a deadline: the waiter asks from its own thread.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (wanted.empty() && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          for (uint32_t node : builder.take_wanted()) wanted.push_back(node);
        }
        if (wanted.empty()) return make_error(ETIMEDOUT, "nobody asked for a directory");
      }
      if (step == Step::Fail || step == Step::FailWhenWanted) {
        done_step("");
        return make_error(EIO, "the stepped server failed");
      }
      auto pick = pending.begin();
      while (!wanted.empty()) {
        uint32_t theirs = wanted.front();
        wanted.pop_front();
        auto it = std::find_if(pending.begin(), pending.end(), [theirs](const auto& p) { return p.second == theirs; });
        if (it != pending.end()) {
          pick = it;
          break;
        }
      }
      auto [ours, theirs] = *pick;
      pending.erase(pick);
      std::vector<TreeBuilder::Entry> entries;
      for (uint32_t child : tree_.nodes[ours].children) entries.push_back(entry_of(child));
      auto added = builder.add_listing(theirs, std::move(entries));
      if (!added) return added.error();
      const auto& children = tree_.nodes[ours].children;
      for (size_t i = 0; i < children.size(); ++i) {
        if (tree_.nodes[children[i]].type == NodeType::Directory) pending.emplace_back(children[i], (*added)[i]);
      }
      if (!to_end) done_step(tree_.path_of(ours));
    }
    return {};
  }

  // Lets the walk take one step and waits until it is taken; returns what it listed.
  std::string step(Step step) {
    std::unique_lock lock(mutex_);
    steps_.push_back(step);
    changed_.notify_all();
    size_t want = ++asked_;
    EXPECT_TRUE(changed_.wait_for(lock, std::chrono::seconds(20), [&] { return taken_ >= want; }))
        << "the walk did not take its step";
    return last_;
  }
  void run_to_end() {
    std::lock_guard lock(mutex_);
    steps_.push_back(Step::ToEnd);
    changed_.notify_all();
  }
  int walks() const { return walks_; }
  void throw_once() { throw_once_ = true; }

 private:
  Step next_step() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !steps_.empty(); });
    Step step = steps_.front();
    steps_.pop_front();
    return step;
  }
  void done_step(std::string listed) {
    std::lock_guard lock(mutex_);
    last_ = std::move(listed);
    taken_++;
    changed_.notify_all();
  }

  Tree tree_;
  std::atomic<int> walks_{0};
  std::atomic<bool> throw_once_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Step> steps_;
  size_t asked_ = 0;
  size_t taken_ = 0;
  std::string last_;
};

// root: a/b/c/file.txt, link -> a/b/c/file.txt, top.txt, z/s0..s9/f (breadth-first, z and its
// ten subdirectories come before a/b/c).
Tree deep_tree() {
  Tree tree = Tree::with_root(NodeType::Directory);
  uint32_t a = *tree.add_child(Tree::kRoot, "a", NodeType::Directory);
  uint32_t b = *tree.add_child(a, "b", NodeType::Directory);
  uint32_t c = *tree.add_child(b, "c", NodeType::Directory);
  uint32_t file = *tree.add_child(c, "file.txt", NodeType::Regular);
  tree.nodes[file].size = 42;
  uint32_t link = *tree.add_child(Tree::kRoot, "link", NodeType::Symlink);
  tree.nodes[link].target = "a/b/c/file.txt";
  tree.nodes[link].size = tree.nodes[link].target.size();
  *tree.add_child(Tree::kRoot, "top.txt", NodeType::Regular);
  uint32_t z = *tree.add_child(Tree::kRoot, "z", NodeType::Directory);
  for (int i = 0; i < 10; ++i) {
    uint32_t sub = *tree.add_child(z, "s" + std::to_string(i), NodeType::Directory);
    *tree.add_child(sub, "f", NodeType::Regular);
  }
  return tree;
}

class PartialTreeTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-partial-test"};
  void SetUp() override { upstream_ = std::make_unique<SteppedUpstream>(deep_tree()); }
  void TearDown() override {
    if (upstream_) upstream_->run_to_end();  // a walk still waiting for its steps ends
    meta_.reset();
  }
  MetadataCache& open_meta(double wait_timeout = 20) {
    MetadataCache::Options options;
    options.wait_timeout_seconds = wait_timeout;
    auto opened = MetadataCache::open(*upstream_, root_ + "/meta", stats_, options);
    EXPECT_TRUE(opened.ok());
    meta_ = std::move(*opened);
    return *meta_;
  }
  std::string tree_file() const { return root_ + "/meta/" + kA + ".tree"; }

  std::string root_ = temp_.str();
  Stats stats_;
  std::unique_ptr<SteppedUpstream> upstream_;
  std::unique_ptr<MetadataCache> meta_;
};

TEST_F(PartialTreeTest, DeepLookupIsAnsweredOnceTheDirectoriesOnItsWayAreListed) {
  MetadataCache& meta = open_meta();
  auto deep = std::async(std::launch::async, [&] { return meta.settle(StorePath(kA), "a/b/c/file.txt"); });
  // Only what is on its way is listed, wanted first, although z and its ten come first breadth-first.
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "");
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "a");
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "a/b");
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "a/b/c");
  ASSERT_EQ(deep.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto answer = deep.get();
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  const StoreTree& partial = *answer->tree;
  EXPECT_FALSE(partial.complete);
  EXPECT_EQ(partial.tree.nodes[answer->node].size, 42u);
  EXPECT_EQ(partial.key_of(answer->node), kA + "/a/b/c/file.txt");
  auto z = partial.tree.resolve("z");
  ASSERT_TRUE(z);
  EXPECT_FALSE(partial.settled(*z));  // listed later
  EXPECT_EQ(meta.walks_in_flight(), 1u);
  EXPECT_GT(stats_.metadata_partial_answers, 0u);
  EXPECT_FALSE(fs::exists(tree_file()));  // only a finished tree is persisted

  // What was answered stays true: same node numbers in the finished tree.
  upstream_->run_to_end();
  auto whole = meta.get(StorePath(kA));
  ASSERT_TRUE(whole.ok()) << whole.error().message;
  EXPECT_TRUE((*whole)->complete);
  EXPECT_EQ((*whole)->tree.resolve("a/b/c/file.txt"), answer->node);
  EXPECT_EQ((*whole)->tree.nodes.size(), deep_tree().nodes.size());
  EXPECT_EQ(meta.walks_in_flight(), 0u);
  EXPECT_TRUE(fs::exists(tree_file()));
  EXPECT_EQ(upstream_->walks(), 1);
  // A node of the partial answer is settled there: no wait, no new walk.
  auto again = meta.settle(answer->tree, answer->node);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tree, answer->tree);
}

TEST_F(PartialTreeTest, ReaddirplusWaitsForTheDirectoryAndItsSubdirectoriesOnly) {
  MetadataCache& meta = open_meta();
  auto listing = std::async(std::launch::async, [&] { return meta.settle(StorePath(kA), "z", true); });
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "");
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "z");
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(listing.wait_for(std::chrono::seconds(0)), std::future_status::timeout) << i;
    EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "z/s" + std::to_string(i));
  }
  ASSERT_EQ(listing.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto answer = listing.get();
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  for (uint32_t sub : answer->tree->tree.nodes[answer->node].children) EXPECT_TRUE(answer->tree->settled(sub));
  auto a = answer->tree->tree.resolve("a");
  ASSERT_TRUE(a);
  EXPECT_FALSE(answer->tree->settled(*a));
}

TEST_F(PartialTreeTest, ConcurrentLookupsOfOnePathShareOneWalk) {
  MetadataCache& meta = open_meta();
  std::vector<std::future<Result<SettledNode>>> lookups;
  for (int i = 0; i < 4; ++i) {
    lookups.push_back(std::async(std::launch::async, [&] { return meta.settle(StorePath(kA), "a/b"); }));
  }
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "");
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "a");
  EXPECT_EQ(upstream_->step(SteppedUpstream::Step::Wanted), "a/b");
  for (auto& lookup : lookups) {
    ASSERT_EQ(lookup.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    auto answer = lookup.get();
    ASSERT_TRUE(answer.ok()) << answer.error().message;
    EXPECT_EQ(answer->tree->key_of(answer->node), kA + "/a/b");
  }
  EXPECT_EQ(upstream_->walks(), 1);
  EXPECT_EQ(stats_.metadata_misses, 1u);
}

TEST_F(PartialTreeTest, AFailedWalkLeavesNothingOnDiskAnswersEioAndIsRetried) {
  MetadataCache& meta = open_meta();
  auto first = std::async(std::launch::async, [&] { return meta.settle(StorePath(kA), "a"); });
  upstream_->step(SteppedUpstream::Step::Wanted);
  upstream_->step(SteppedUpstream::Step::Wanted);
  auto a = first.get();
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto waiting = std::async(std::launch::async, [&] { return meta.settle(StorePath(kA), "z/s3"); });
  upstream_->step(SteppedUpstream::Step::FailWhenWanted);  // once the waiter waits for z
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto failed = waiting.get();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, EIO) << failed.error().message;
  EXPECT_FALSE(fs::exists(tree_file()));
  EXPECT_EQ(meta.walks_in_flight(), 0u);
  // What was answered before the failure is still answered, without the upstream.
  auto still = meta.settle(a->tree, a->node);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(upstream_->walks(), 1);
  // Asked again, the directory that failed starts a new walk.
  upstream_->run_to_end();
  auto retried = meta.settle(StorePath(kA), "z/s3");
  ASSERT_TRUE(retried.ok()) << retried.error().message;
  EXPECT_EQ(upstream_->walks(), 2);
  auto whole = meta.get(StorePath(kA));
  ASSERT_TRUE(whole.ok());
  EXPECT_TRUE(fs::exists(tree_file()));
  // A node of the failed walk's answer, asked in the new tree by its path.
  auto b = meta.settle(a->tree, *a->tree->tree.resolve("a/b"));
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(b->tree->key_of(b->node), kA + "/a/b");
}

TEST_F(PartialTreeTest, AWaitForADirectoryHasTheDeadline) {
  MetadataCache& meta = open_meta(0.2);
  auto waited = meta.settle(StorePath(kA), "a");  // the walk never gets a step
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.error().code, ETIMEDOUT) << waited.error().message;
  EXPECT_GT(stats_.upstream_timeouts, 0u);
}

TEST_F(PartialTreeTest, AnExceptionInTheWalkLeavesNoBrokenStateBehind) {
  MetadataCache& meta = open_meta();
  upstream_->throw_once();
  auto first = meta.get(StorePath(kA));
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().code, ENOMEM) << first.error().message;
  EXPECT_EQ(meta.walks_in_flight(), 0u);
  upstream_->run_to_end();
  auto second = meta.get(StorePath(kA));
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_TRUE((*second)->complete);
}

// An upstream whose tree comes whole (as HTTP's from a .ls listing): the default walk_tree.
class WholeTreeUpstream final : public Upstream {
 public:
  explicit WholeTreeUpstream(Tree tree) : tree_(std::move(tree)) {}
  std::string describe() const override { return "whole"; }
  Result<bool> exists(const StorePath&) override { return true; }
  Result<std::vector<StorePath>> list_store() override { return std::vector<StorePath>{}; }
  Result<Tree> list_tree(const StorePath&) override { return tree_; }
  Result<size_t> read(const StorePath&, const Tree&, uint32_t, uint64_t, std::span<std::byte>) override {
    return make_error(EIO, "no reads here");
  }
  Result<UpstreamStatfs> statfs() override { return UpstreamStatfs{}; }

 private:
  Tree tree_;
};

// An HTTP walk is one whole download that lists nothing until it ends: bytes arriving are its
// progress, so a download longer than the wait's deadline is waited for, not refused.
class DownloadingUpstream final : public Upstream {
 public:
  DownloadingUpstream(Tree tree, Stats& stats) : tree_(std::move(tree)), stats_(stats) {}
  std::string describe() const override { return "downloading"; }
  Result<bool> exists(const StorePath&) override { return true; }
  Result<std::vector<StorePath>> list_store() override { return std::vector<StorePath>{}; }
  Result<Tree> list_tree(const StorePath&) override {
    for (int i = 0; i < 40; ++i) {  // 1 s in all, a byte every 25 ms: a slow link, not a stall
      stats_.http_bytes += 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return tree_;
  }
  Result<size_t> read(const StorePath&, const Tree&, uint32_t, uint64_t, std::span<std::byte>) override {
    return make_error(EIO, "no reads here");
  }
  Result<UpstreamStatfs> statfs() override { return UpstreamStatfs{}; }

 private:
  Tree tree_;
  Stats& stats_;
};

TEST(MetadataWholeTreeTest, ASlowDownloadThatKeepsArrivingIsNoStall) {
  TempDir dir("lazystore-download-test");
  Stats stats;
  DownloadingUpstream upstream(deep_tree(), stats);
  MetadataCache::Options options;
  options.wait_timeout_seconds = 0.3;
  auto meta = MetadataCache::open(upstream, dir / "meta", stats, options);
  ASSERT_TRUE(meta.ok());
  auto got = (*meta)->get(StorePath(kA));
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(stats.upstream_timeouts.load(), 0u);
}

TEST(MetadataWholeTreeTest, AWholeListingKeepsEverythingItSaysAboutItsFiles) {
  Tree tree = deep_tree();
  for (TreeNode& node : tree.nodes) {
    if (node.type == NodeType::Regular) node.nar_offset = 1000 + node.size;  // where HTTP reads a file
  }
  auto file = tree.resolve("a/b/c/file.txt");
  tree.nodes[*file].executable = true;
  WholeTreeUpstream upstream(tree);
  TempDir dir("lazystore-whole-test");
  Stats stats;
  {
    auto meta = MetadataCache::open(upstream, dir / "meta", 1.0, stats);
    ASSERT_TRUE(meta.ok());
    auto got = (*meta)->get(StorePath(kA));
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_EQ((*got)->tree.nodes.size(), tree.nodes.size());
    for (uint32_t node = 0; node < tree.nodes.size(); ++node) {
      std::string path = tree.path_of(node);
      auto ours = (*got)->tree.resolve(path);
      ASSERT_TRUE(ours) << path;
      const TreeNode& a = tree.nodes[node];
      const TreeNode& b = (*got)->tree.nodes[*ours];
      EXPECT_EQ(a.type, b.type) << path;
      EXPECT_EQ(a.size, b.size) << path;
      EXPECT_EQ(a.executable, b.executable) << path;
      EXPECT_EQ(a.nar_offset, b.nar_offset) << path;
      EXPECT_EQ(a.target, b.target) << path;
    }
  }
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
  const char* argv[] = {
      "lazystore", "file:///srv/store", "/tmp", "-o", "cache=/var/tmp/c,cache-size=1G,negative-timeout=0.5,allow_other",
      "-f"};
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
  for (const char* bad : {"cache-size=lots", "chunk-size=3000", "negative-timeout=-1", "nfsvers=2", "log-level=loud",
                          "cache=relative/dir"}) {
    const char* argv[] = {"lazystore", "/srv/store", "/tmp", "-o", bad};
    fuse_args args = FUSE_ARGS_INIT(5, const_cast<char**>(argv));
    auto options = parse_mount_options(args);
    EXPECT_FALSE(options.ok()) << bad;
    fuse_opt_free_args(&args);
  }
}

}  // namespace
}  // namespace lazystore
