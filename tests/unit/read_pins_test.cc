// The pins of files read without an open: an LRU by inode, bounded in files and in bytes, whose
// pins are released when dropped and no reader holds them.
#include "read_pins.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace lazystore {
namespace {

// Counts the pins alive, as PinnedFile's cache pins would be.
struct FakePin {
  explicit FakePin(std::atomic<int>& alive) : alive(alive) { ++alive; }
  ~FakePin() { --alive; }
  std::atomic<int>& alive;
};

TEST(ReadPins, KeepsTheLastReadFilesAndReleasesTheLeastRecentlyRead) {
  std::atomic<int> alive{0};
  ReadPins<FakePin> pins(3, 1000);
  for (uint64_t ino = 1; ino <= 3; ++ino) pins.keep(ino, std::make_shared<FakePin>(alive), 10);
  EXPECT_EQ(alive, 3);
  ASSERT_NE(pins.find(1), nullptr);  // 1 read again: 2 is now the least recently read
  pins.keep(4, std::make_shared<FakePin>(alive), 10);
  EXPECT_EQ(alive, 3);
  EXPECT_EQ(pins.size(), 3u);
  EXPECT_EQ(pins.find(2), nullptr);
  EXPECT_NE(pins.find(1), nullptr);
  EXPECT_NE(pins.find(3), nullptr);
  EXPECT_NE(pins.find(4), nullptr);
  EXPECT_EQ(pins.bytes(), 30u);
}

TEST(ReadPins, RepeatedReadsShareOnePinAndAConcurrentKeeperLoses) {
  std::atomic<int> alive{0};
  ReadPins<FakePin> pins(4, 1000);
  auto first = pins.keep(7, std::make_shared<FakePin>(alive), 10);
  auto second = pins.keep(7, std::make_shared<FakePin>(alive), 10);  // loaded twice by a race
  EXPECT_EQ(first, second);
  EXPECT_EQ(pins.find(7), first);
  second.reset();
  first.reset();
  EXPECT_EQ(alive, 1);
  EXPECT_EQ(pins.size(), 1u);
}

TEST(ReadPins, BoundedInBytesButTheNewestStaysEvenWhenLargerThanTheBound) {
  std::atomic<int> alive{0};
  ReadPins<FakePin> pins(100, 100);
  pins.keep(1, std::make_shared<FakePin>(alive), 40);
  pins.keep(2, std::make_shared<FakePin>(alive), 40);
  pins.keep(3, std::make_shared<FakePin>(alive), 40);  // 120 bytes: 1 goes
  EXPECT_EQ(pins.find(1), nullptr);
  EXPECT_EQ(pins.bytes(), 80u);
  pins.keep(4, std::make_shared<FakePin>(alive), 500);  // alone, while it is the newest
  EXPECT_EQ(pins.size(), 1u);
  EXPECT_NE(pins.find(4), nullptr);
  pins.keep(5, std::make_shared<FakePin>(alive), 10);
  EXPECT_EQ(pins.find(4), nullptr);
  EXPECT_EQ(alive, 1);
}

TEST(ReadPins, AReaderKeepsADroppedPinUntilItIsDone) {
  std::atomic<int> alive{0};
  ReadPins<FakePin> pins(1, 1000);
  auto reading = pins.keep(1, std::make_shared<FakePin>(alive), 10);
  pins.keep(2, std::make_shared<FakePin>(alive), 10);  // drops 1 from the set
  EXPECT_EQ(pins.find(1), nullptr);
  EXPECT_EQ(alive, 2);
  reading.reset();
  EXPECT_EQ(alive, 1);
}

TEST(ReadPins, ForgetClearAndDestructionReleaseEverything) {
  std::atomic<int> alive{0};
  {
    ReadPins<FakePin> pins(10, 1000);
    for (uint64_t ino = 1; ino <= 5; ++ino) pins.keep(ino, std::make_shared<FakePin>(alive), 10);
    pins.erase(3);
    pins.erase(42);  // never read
    EXPECT_EQ(alive, 4);
    EXPECT_EQ(pins.bytes(), 40u);
    EXPECT_EQ(pins.clear(), 4u);
    EXPECT_EQ(alive, 0);
    EXPECT_EQ(pins.bytes(), 0u);
    pins.keep(9, std::make_shared<FakePin>(alive), 10);
  }
  EXPECT_EQ(alive, 0);
}

TEST(ReadPins, NoneKeptWhenTheBoundIsZero) {
  std::atomic<int> alive{0};
  ReadPins<FakePin> pins(0, 1000);
  auto pin = pins.keep(1, std::make_shared<FakePin>(alive), 10);
  EXPECT_NE(pin, nullptr);
  EXPECT_EQ(pins.find(1), nullptr);
  pin.reset();
  EXPECT_EQ(alive, 0);
}

TEST(ReadPins, ReadersOnManyThreadsStayWithinTheBound) {
  std::atomic<int> alive{0};
  ReadPins<FakePin> pins(16, 1u << 20);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < 5000; ++i) {
        uint64_t ino = (i * 7 + static_cast<uint64_t>(t)) % 40;
        auto pin = pins.find(ino);
        if (!pin) pin = pins.keep(ino, std::make_shared<FakePin>(alive), 100);
        ASSERT_NE(pin, nullptr);
        if (i % 97 == 0) pins.erase(ino);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_LE(pins.size(), 16u);
  EXPECT_EQ(static_cast<size_t>(alive), pins.size());
  EXPECT_EQ(pins.bytes(), pins.size() * 100);
  pins.clear();
  EXPECT_EQ(alive, 0);
}

}  // namespace
}  // namespace lazystore
