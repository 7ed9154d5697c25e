// raise_fd_limit: the soft limit goes up to the hard one, never past it.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include "fd_limit.h"

namespace lazystore {
namespace {

TEST(FdLimit, TheSoftLimitIsRaisedToTheHardOne) {
  struct rlimit before {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  struct rlimit low = before;
  low.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  EXPECT_EQ(raise_fd_limit(), static_cast<uint64_t>(before.rlim_max));
  struct rlimit after {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, before.rlim_max);
  EXPECT_EQ(after.rlim_max, before.rlim_max);
  EXPECT_EQ(raise_fd_limit(), static_cast<uint64_t>(before.rlim_max));  // already there
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &before), 0);
}

}  // namespace
}  // namespace lazystore
