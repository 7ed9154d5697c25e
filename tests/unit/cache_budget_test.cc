// The cache budget: LRU order, pins, reservations against the bound and the free disk, eviction.
#include <gtest/gtest.h>

#include "cache_budget.h"

namespace lazystore {
namespace {

class CacheBudgetTest : public ::testing::Test {
 protected:
  std::unique_ptr<CacheBudget> make(uint64_t max_bytes) {
    return std::make_unique<CacheBudget>(
        max_bytes, stats_, [this](const std::string& id) { removed_.push_back(id); }, [this] { return disk_free_; });
  }

  Stats stats_;
  std::vector<std::string> removed_;
  uint64_t disk_free_ = UINT64_MAX;
};

TEST_F(CacheBudgetTest, FilesFoundAtStartPastTheBoundAreEvictedOldestFirst) {
  auto budget = make(250);
  budget->add_existing({{"old", 100}, {"mid", 100}, {"new", 100}});
  EXPECT_EQ(removed_, std::vector<std::string>{"old"});
  EXPECT_EQ(budget->used(), 200u);
  EXPECT_EQ(budget->ids(), (std::vector<std::string>{"mid", "new"}));
}

TEST_F(CacheBudgetTest, AReservationEvictsLeastRecentlyUsedButNeverAPinnedFile) {
  auto budget = make(300);
  budget->add_existing({{"a", 100}, {"b", 100}, {"c", 100}});
  budget->pin("a");  // a becomes the most recent and is pinned
  budget->pin("d");
  std::string why;
  ASSERT_TRUE(budget->reserve("d", 150, why)) << why;
  EXPECT_EQ(removed_, (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(budget->used(), 250u);
  // Settled: the reservation becomes what the data file measures.
  budget->settle("d", 150, 8);
  EXPECT_EQ(budget->used(), 108u);
  EXPECT_EQ(stats_.evictions, 2u);
}

TEST_F(CacheBudgetTest, ACancelledReservationGivesItsBytesBack) {
  auto budget = make(1000);
  budget->add_existing({{"a", 100}});
  budget->pin("a");
  std::string why;
  ASSERT_TRUE(budget->reserve("a", 300, why));
  EXPECT_EQ(budget->used(), 400u);
  budget->cancel("a", 300);
  EXPECT_EQ(budget->used(), 100u);  // the file's own bytes stay
  // A full disk sees the reservation as taken, and free again after the cancel.
  disk_free_ = (1 << 20) + 350;
  ASSERT_TRUE(budget->reserve("a", 300, why)) << why;
  EXPECT_FALSE(budget->reserve("a", 100, why));
  budget->cancel("a", 300);
  EXPECT_TRUE(budget->reserve("a", 100, why)) << why;
}

TEST_F(CacheBudgetTest, NoRoomWhenEverythingIsPinnedOrTheDiskIsFull) {
  auto budget = make(200);
  budget->add_existing({{"a", 150}});
  budget->pin("a");
  budget->pin("b");
  std::string why;
  EXPECT_FALSE(budget->reserve("b", 100, why));
  EXPECT_NE(why.find("full of open files"), std::string::npos) << why;
  EXPECT_TRUE(removed_.empty());
  // Within the bound, but not within the disk's free space (less the slack kept free).
  budget->unpin("a");
  disk_free_ = 4096;
  EXPECT_FALSE(budget->reserve("b", 10, why));
  EXPECT_EQ(removed_, std::vector<std::string>{"a"});  // room was tried: a was evicted
  EXPECT_NE(why.find("disk is full"), std::string::npos) << why;
  // A file no longer known has no room at all.
  EXPECT_FALSE(budget->reserve("unknown", 1, why));
}

TEST_F(CacheBudgetTest, PinsAndTheirEnd) {
  auto budget = make(1000);
  budget->pin("a");
  budget->pin("a");
  EXPECT_EQ(budget->unpin("a"), 1);
  EXPECT_FALSE(budget->evict_if_only_pin("missing"));
  EXPECT_EQ(budget->unpin("a"), 0);
  EXPECT_TRUE(budget->ids().empty());  // nothing on disk: forgotten
  EXPECT_FALSE(budget->pin_if_known("a"));

  budget->add_existing({{"x", 10}, {"y", 20}});
  ASSERT_TRUE(budget->pin_if_known("x"));
  EXPECT_EQ(budget->ids(), (std::vector<std::string>{"x", "y"}));  // order untouched
  auto report = budget->evict_all();
  EXPECT_EQ(report.files, 1u);
  EXPECT_EQ(report.bytes, 20u);
  EXPECT_EQ(report.pinned_files, 1u);
  EXPECT_TRUE(budget->evict_if_only_pin("x"));
  EXPECT_EQ(budget->used(), 0u);
  EXPECT_EQ(budget->files(), 0u);
}

}  // namespace
}  // namespace lazystore
