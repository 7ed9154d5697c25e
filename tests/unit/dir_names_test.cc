#include "dir_names.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"

namespace lazystore {
namespace {

TEST(DirNames, SortedBytewiseWithoutDots) {
  TempDir dir;
  for (const char* name : {"b", "a", "B", "a.lock"}) std::ofstream(dir / name) << name;
  std::filesystem::create_directory(dir / "sub");
  auto names = dir_names(Fd(open(dir.str().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)), "dir");
  ASSERT_TRUE(names) << names.error().message;
  EXPECT_EQ(*names, (std::vector<std::string>{"B", "a", "a.lock", "b", "sub"}));
}

TEST(DirNames, NotADirectorySaysWhat) {
  TempDir dir;
  std::ofstream(dir / "file") << "x";
  auto names = dir_names(Fd(open((dir / "file").c_str(), O_RDONLY | O_CLOEXEC)), "the file");
  ASSERT_FALSE(names);
  EXPECT_EQ(names.error().code, ENOTDIR);
  EXPECT_EQ(names.error().message.rfind("opendir the file: ", 0), 0u) << names.error().message;
}

}  // namespace
}  // namespace lazystore
