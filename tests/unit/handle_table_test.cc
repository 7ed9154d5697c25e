// File handle numbers that never repeat across the servers of one mount (a handle opened before
// a crash stays valid after it).
#include "handle_table.h"

#include <gtest/gtest.h>

#include <memory>

namespace lazystore {
namespace {

TEST(HandleTable, NumbersOfDifferentServersNeverMeetAndAdoptKeepsTheFirst) {
  HandleTable<int> first(1), second(2);
  uint64_t a = first.insert(std::make_shared<int>(1));
  uint64_t b = second.insert(std::make_shared<int>(2));
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
  EXPECT_EQ(second.find(a), nullptr);  // opened before the restart
  auto kept = second.adopt(a, std::make_shared<int>(3));
  EXPECT_EQ(*kept, 3);
  EXPECT_EQ(*second.adopt(a, std::make_shared<int>(4)), 3);  // a concurrent adopter loses
  EXPECT_EQ(*second.erase(a), 3);
  EXPECT_EQ(second.erase(a), nullptr);
}

}  // namespace
}  // namespace lazystore
