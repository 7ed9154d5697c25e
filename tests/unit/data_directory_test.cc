// The data files' directory: names, opening and creating, removal, the start-up scan.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "data_directory.h"
#include "test_support.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;

const std::string kOld = "00112233445566778899aabbccddeeff";
const std::string kNew = "0f112233445566778899aabbccddeeff";

class DataDirectoryTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-data-dir-test"};

  std::string root_ = temp_.str();
};

TEST_F(DataDirectoryTest, NamesAreIds) {
  EXPECT_TRUE(DataDirectory::is_id(kOld));
  EXPECT_FALSE(DataDirectory::is_id("00112233445566778899AABBCCDDEEFF"));
  EXPECT_FALSE(DataDirectory::is_id(kOld + "0"));
  EXPECT_FALSE(DataDirectory::is_id("0011223344556677889aabbccddeeffg"));
}

TEST_F(DataDirectoryTest, FilesAreCreatedOnDemandAndRemoved) {
  auto dir = DataDirectory::open(root_ + "/data");
  ASSERT_TRUE(dir) << dir.error().message;
  EXPECT_EQ(dir->path_of(kOld), root_ + "/data/00/" + kOld);
  auto missing = dir->open_file(kOld, false);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  auto created = dir->open_file(kOld, true);
  ASSERT_TRUE(created) << created.error().message;
  struct stat st {};
  ASSERT_EQ(fstat(created->get(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(dir->open_file(kOld, false));
  EXPECT_TRUE(dir->remove(kOld));
  EXPECT_FALSE(fs::exists(dir->path_of(kOld)));
  EXPECT_TRUE(dir->remove(kOld));  // already gone: no error
  EXPECT_NE(dir->free_bytes(), 0u);
}

TEST_F(DataDirectoryTest, TheScanListsOldestFirstAndRemovesStrays) {
  auto dir = DataDirectory::open(root_ + "/data");
  ASSERT_TRUE(dir);
  for (const std::string& id : {kNew, kOld}) {
    auto fd = dir->open_file(id, true);
    ASSERT_TRUE(fd);
    ASSERT_EQ(pwrite(fd->get(), "x", 1, 0), 1);
  }
  struct timespec times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, dir->path_of(kOld).c_str(), times, 0), 0);
  std::ofstream(root_ + "/data/00/not-an-id") << "x";
  std::ofstream(root_ + "/data/0f/" + kOld) << "x";  // an id in the wrong directory
  fs::create_directories(root_ + "/data/00/" + kOld.substr(0, 31) + "0/deeper");

  auto found = dir->scan();
  ASSERT_TRUE(found) << found.error().message;
  ASSERT_EQ(found->size(), 2u);
  EXPECT_EQ((*found)[0].id, kOld);
  EXPECT_EQ((*found)[1].id, kNew);
  EXPECT_GT((*found)[0].bytes, 0u);
  EXPECT_FALSE(fs::exists(root_ + "/data/00/not-an-id"));
  EXPECT_FALSE(fs::exists(root_ + "/data/0f/" + kOld));
  EXPECT_FALSE(fs::exists(root_ + "/data/00/" + kOld.substr(0, 31) + "0"));
}

// Links in the data directory are removed as links: what they point to, outside the cache, stays.
TEST_F(DataDirectoryTest, TheScanFollowsNoLink) {
  std::string outside = root_ + "/outside";
  fs::create_directories(outside);
  std::ofstream(outside + "/precious") << "not the cache's";
  std::ofstream(outside + "/" + kOld) << "not the cache's either";
  auto dir = DataDirectory::open(root_ + "/data");
  ASSERT_TRUE(dir);
  fs::create_directory_symlink(outside, root_ + "/data/ab");  // a linked subdirectory
  fs::create_directory_symlink(outside, root_ + "/data/elsewhere");
  fs::create_directories(root_ + "/data/00");
  fs::create_symlink(outside + "/" + kOld, dir->path_of(kOld));  // a linked data file
  fs::create_directories(root_ + "/data/0f/deep");
  fs::create_directory_symlink(outside, root_ + "/data/0f/deep/link");  // a link in a stray tree

  auto found = dir->scan();
  ASSERT_TRUE(found) << found.error().message;
  EXPECT_TRUE(found->empty());
  for (const char* gone : {"/data/ab", "/data/elsewhere", "/data/00/", "/data/0f/deep"}) {
    std::string path = root_ + gone + (std::string(gone) == "/data/00/" ? kOld : "");
    EXPECT_FALSE(fs::exists(fs::symlink_status(path))) << path;
  }
  EXPECT_TRUE(fs::exists(outside + "/precious"));
  EXPECT_TRUE(fs::exists(outside + "/" + kOld));
  // Opening never goes through a link either.
  fs::create_directory_symlink(outside, root_ + "/data/11");
  auto linked = dir->open_file("11" + kOld.substr(2), true);
  ASSERT_FALSE(linked);
  EXPECT_EQ(linked.error().code, ELOOP);
  EXPECT_FALSE(fs::exists(outside + "/11" + kOld.substr(2)));
}

}  // namespace
}  // namespace lazystore
