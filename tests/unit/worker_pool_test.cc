// The worker pool: tasks run, a task that throws is counted and the pool goes on, stop drains.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "worker_pool.h"

namespace lazystore {
namespace {

// Polls `done` until it holds or 10 s have passed.
template <class Done>
bool eventually(Done done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(WorkerPool, ATaskThatThrowsIsCountedAndThePoolGoesOn) {
  std::atomic<uint64_t> thrown{0};
  WorkerPool pool(16, &thrown);
  pool.start(1);
  std::atomic<int> ran{0};
  ASSERT_TRUE(pool.submit([] { throw std::runtime_error("a bug in a task"); }));
  ASSERT_TRUE(pool.submit([] { throw 42; }));  // not even an exception class
  ASSERT_TRUE(pool.submit([&] { ran++; }));
  EXPECT_TRUE(eventually([&] { return ran == 1; }));
  EXPECT_EQ(thrown, 2u);
  pool.stop();
}

TEST(WorkerPool, QueueBoundAndStop) {
  WorkerPool pool(2);
  EXPECT_FALSE(pool.submit([] {}));  // not started
  pool.start(1);
  std::atomic<bool> running{false}, release{false};
  std::atomic<int> ran{0};
  ASSERT_TRUE(pool.submit([&] {
    running = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ran++;
  }));
  EXPECT_TRUE(eventually([&] { return running.load(); }));
  EXPECT_TRUE(pool.submit([&] { ran++; }));
  EXPECT_TRUE(pool.submit([&] { ran++; }));
  EXPECT_FALSE(pool.submit([&] { ran++; }));  // two queued: full
  release = true;
  pool.stop();  // finishes what was queued
  EXPECT_EQ(ran, 3);
  EXPECT_FALSE(pool.submit([] {}));
}

}  // namespace
}  // namespace lazystore
