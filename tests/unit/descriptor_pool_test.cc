// The descriptor pool: a bound on idle descriptors, leases that keep theirs open, reopening on
// demand, a retry after EMFILE.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include <gtest/gtest.h>

#include "descriptor_pool.h"
#include "test_support.h"

namespace lazystore {
namespace {

class DescriptorPoolTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-descriptor-pool-test"};

  DescriptorPool::OpenFn opener(int n) {
    return [this, n]() -> Result<Fd> {
      opens_++;
      Fd fd(::open((root_ + "/" + std::to_string(n)).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!fd) return make_error(errno, "open");
      return fd;
    };
  }

  std::string root_ = temp_.str();
  int opens_ = 0;
};

TEST_F(DescriptorPoolTest, IdleDescriptorsPastTheCapacityAreClosedAndReopenedOnDemand) {
  std::atomic<uint64_t> reopens{0};
  auto pool = DescriptorPool::make(3, &reopens);
  std::vector<std::unique_ptr<DescriptorPool::Slot>> slots;
  for (int i = 0; i < 10; ++i) {
    slots.push_back(std::make_unique<DescriptorPool::Slot>(pool));
    auto lease = pool->acquire(*slots.back(), opener(i));
    ASSERT_TRUE(lease) << lease.error().message;
    ASSERT_GE((*lease)->get(), 0);
  }
  EXPECT_EQ(pool->open_count(), 3u);
  EXPECT_EQ(opens_, 10);
  // The most recent ones are still open; the first is opened again.
  ASSERT_TRUE(pool->acquire(*slots[9], opener(9)));
  EXPECT_EQ(opens_, 10);
  ASSERT_TRUE(pool->acquire(*slots[0], opener(0)));
  EXPECT_EQ(opens_, 11);
  EXPECT_EQ(pool->reopens(), 1u);
  EXPECT_EQ(reopens, 1u);
  EXPECT_EQ(pool->open_count(), 3u);
  slots.clear();
  EXPECT_EQ(pool->open_count(), 0u);
}

TEST_F(DescriptorPoolTest, ALeaseKeepsItsDescriptorOpenPastTheCapacity) {
  auto pool = DescriptorPool::make(1);
  DescriptorPool::Slot a(pool), b(pool), c(pool);
  auto held = pool->acquire(a, opener(0));
  ASSERT_TRUE(held);
  int fd = (*held)->get();
  ASSERT_TRUE(pool->acquire(b, opener(1)));
  ASSERT_TRUE(pool->acquire(c, opener(2)));
  EXPECT_EQ(pool->open_count(), 2u);  // a (leased) and the most recent idle one
  EXPECT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC) << "a leased descriptor was closed";
  auto again = pool->acquire(a, opener(0));
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->get(), fd);
  EXPECT_EQ(opens_, 3);
  // Closing the slot while leased: the descriptor lives until the lease goes.
  pool->close(a);
  EXPECT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC);
  held = make_error(EIO, "dropped");
  again = make_error(EIO, "dropped");
  EXPECT_EQ(fcntl(fd, F_GETFD), -1);
}

TEST_F(DescriptorPoolTest, AnOpenThatRunsOutOfDescriptorsIsRetriedAfterClosingIdleOnes) {
  auto pool = DescriptorPool::make(8);
  DescriptorPool::Slot idle(pool), wanted(pool);
  ASSERT_TRUE(pool->acquire(idle, opener(0)));
  ASSERT_EQ(pool->open_count(), 1u);
  int calls = 0;
  auto lease = pool->acquire(wanted, [&]() -> Result<Fd> {
    if (++calls == 1) return make_error(EMFILE, "too many open files");
    return opener(1)();
  });
  ASSERT_TRUE(lease) << lease.error().message;
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(pool->open_count(), 1u);  // the idle one was closed to make room
  auto fails = pool->acquire(idle, []() -> Result<Fd> { return make_error(EACCES, "denied"); });
  ASSERT_FALSE(fails);
  EXPECT_EQ(fails.error().code, EACCES);
}

TEST(DescriptorPoolCapacity, AQuarterOfTheSoftLimitWithinBounds) {
  size_t capacity = DescriptorPool::default_capacity();
  EXPECT_GE(capacity, 16u);
  EXPECT_LE(capacity, 16384u);
}

}  // namespace
}  // namespace lazystore
