// The worker pool: tasks run, a task that throws is counted and the pool goes on, stop drains.
#include <atomic>
#include <chrono>
#include <memory>
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

// The queue holds at most max_queued tasks; stop() drops those not started (read-ahead is worth
// nothing at shutdown, and each waiting on a dead upstream would hold the stop for its deadline)
// and lets the running one finish.
TEST(WorkerPool, TheQueueIsBoundedAndStopDropsWhatHasNotStarted) {
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
  auto captured = std::make_shared<int>(0);
  EXPECT_TRUE(pool.submit([&ran, captured] { ran++; }));
  EXPECT_TRUE(pool.submit([&ran, captured] { ran++; }));
  EXPECT_FALSE(pool.submit([&ran] { ran++; }));  // two queued: full
  std::thread stopper([&] { pool.stop(); });
  // The queued tasks are dropped (their captures with them) while the running one still runs.
  EXPECT_TRUE(eventually([&] { return captured.use_count() == 1; }));
  release = true;
  stopper.join();
  EXPECT_EQ(ran, 1);
  EXPECT_FALSE(pool.submit([] {}));
}

}  // namespace
}  // namespace lazystore
