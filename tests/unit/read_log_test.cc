// The list of files a mount read: first read first, each file once, bounded in bytes and files,
// with what did not fit counted.
#include "read_log.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lazystore {
namespace {

TEST(ReadLog, ListsEachFileOnceInTheOrderOfItsFirstRead) {
  ReadLog log;
  int asked = 0;
  auto note = [&](uint64_t ino, std::string key) {
    log.note(ino, [&] {
      ++asked;
      return key;
    });
  };
  note(7, "aaa-x/lib/a.so");
  note(3, "bbb-y/include/b.h");
  note(7, "aaa-x/lib/a.so");  // read again: neither listed nor named again
  note(9, "ccc-z");
  auto snapshot = log.snapshot();
  EXPECT_EQ(snapshot.keys, (std::vector<std::string>{"aaa-x/lib/a.so", "bbb-y/include/b.h", "ccc-z"}));
  EXPECT_EQ(snapshot.dropped, 0u);
  EXPECT_EQ(asked, 3);
}

TEST(ReadLog, PastItsBoundsOnlyCounts) {
  ReadLog by_bytes(10, 100);
  by_bytes.note(1, [] { return std::string("12345"); });
  by_bytes.note(2, [] { return std::string("123456"); });  // 11 bytes in all: not listed
  by_bytes.note(3, [] { return std::string("1"); });       // would fit, but the list is full
  by_bytes.note(1, [] { return std::string("12345"); });   // listed: not counted
  by_bytes.note(2, [] { return std::string("123456"); });  // not listed: counted again
  auto snapshot = by_bytes.snapshot();
  EXPECT_EQ(snapshot.keys, std::vector<std::string>{"12345"});
  EXPECT_EQ(snapshot.dropped, 3u);

  ReadLog by_files(1000, 2);
  for (uint64_t ino = 1; ino <= 5; ++ino) by_files.note(ino, [ino] { return std::to_string(ino); });
  EXPECT_EQ(by_files.snapshot().keys, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(by_files.snapshot().dropped, 3u);
}

}  // namespace
}  // namespace lazystore
