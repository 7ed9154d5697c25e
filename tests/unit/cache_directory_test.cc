// The cache directory's rules: made 0700 when new; refused when another user owns it, others may
// write to it, or a part of its layout is a link.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "cache_directory.h"
#include "test_support.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;

class CacheDirectoryTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-cache-dir-test"};
  void SetUp() override {}

  void expect_refused(const std::string& dir, int code, const std::string& says) {
    auto opened = CacheDirectory::open(dir);
    ASSERT_FALSE(opened.ok()) << dir << " was accepted";
    EXPECT_EQ(opened.error().code, code) << opened.error().message;
    EXPECT_NE(opened.error().message.find(says), std::string::npos) << opened.error().message;
  }

  std::string root_ = temp_.str();
};

TEST_F(CacheDirectoryTest, ANewDirectoryIsMadeOwnerOnly) {
  std::string dir = root_ + "/parent/cache";
  mode_t old = umask(0);  // even so
  auto opened = CacheDirectory::open(dir);
  umask(old);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(fs::status(dir).permissions(), fs::perms::owner_all);
  EXPECT_TRUE(fs::is_directory(opened->data_dir()));
  EXPECT_TRUE(fs::is_directory(opened->meta_dir()));
}

TEST_F(CacheDirectoryTest, ADirectoryOfAnotherUserIsRefused) {
  std::string dir = root_ + "/cache";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  if (geteuid() != 0) GTEST_SKIP() << "chown needs root";
  ASSERT_EQ(chown(dir.c_str(), 65534, 65534), 0);
  expect_refused(dir, EPERM, "is owned by uid 65534, not by this daemon's user");
}

TEST_F(CacheDirectoryTest, ADirectoryOthersMayWriteToIsRefused) {
  std::string dir = root_ + "/cache";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(chmod(dir.c_str(), 0777), 0);
  expect_refused(dir, EPERM, "is writable by others (mode 0777)");
  ASSERT_EQ(chmod(dir.c_str(), 0720), 0);
  expect_refused(dir, EPERM, "is writable by others (mode 0720)");
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);  // readable is fine: it is made 0700
  EXPECT_TRUE(CacheDirectory::open(dir).ok());
  EXPECT_EQ(fs::status(dir).permissions(), fs::perms::owner_all);
}

TEST_F(CacheDirectoryTest, ALinkInTheLayoutIsRefused) {
  std::string outside = root_ + "/outside";
  fs::create_directories(outside);
  std::string dir = root_ + "/cache";
  fs::create_directories(dir + "/v1");
  fs::create_directory_symlink(outside, dir + "/v1/data");
  expect_refused(dir, ENOTDIR, "v1/data is a symlink");
  fs::remove(dir + "/v1/data");
  fs::remove(dir + "/v1");
  fs::create_directory_symlink(outside, dir + "/v1");
  expect_refused(dir, ENOTDIR, "v1 is a symlink");
  EXPECT_TRUE(fs::is_empty(outside));
}

}  // namespace
}  // namespace lazystore
