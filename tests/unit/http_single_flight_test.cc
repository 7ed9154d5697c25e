// Merged work (fuse/upstream/single_flight.h), what the whole-NAR spool and manifest fetches
// stand on: one run for concurrent callers, its result (or exception, as an error) reaching
// every waiter, waiters bounded by their deadline, and a failure retried by the next caller
// instead of a broken promise answering EIO until a restart.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <stdexcept>
#include <thread>
#include <vector>

#include "upstream/single_flight.h"

namespace lazystore {
namespace {

using namespace std::chrono_literals;

TEST(SingleFlight, ConcurrentCallersShareOneRun) {
  SingleFlight<int> flight;
  std::atomic<int> runs{0};
  std::mutex m;
  std::condition_variable cv;
  bool release = false;
  auto work = [&]() -> Result<int> {
    ++runs;
    std::unique_lock lock(m);
    cv.wait_for(lock, 10s, [&] { return release; });
    return 42;
  };
  std::vector<std::thread> threads;
  std::vector<int> results(8, 0);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto r = flight.run("k", 10s, work);
      results[i] = r ? *r : -1;
    });
  }
  // Every caller is either running or waiting before the run may end.
  for (auto deadline = std::chrono::steady_clock::now() + 10s;
       flight.in_flight() != 1 && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::yield();
  }
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  EXPECT_GE(runs.load(), 1);
  EXPECT_LE(runs.load(), 8);
  for (int r : results) EXPECT_EQ(r, 42);
  EXPECT_EQ(flight.in_flight(), 0u);
}

TEST(SingleFlight, AnExceptionIsAnErrorForEveryoneAndTheNextCallRunsAgain) {
  SingleFlight<int> flight;
  std::mutex m;
  std::condition_variable cv;
  bool started = false, release = false;
  std::thread thrower([&] {
    auto r = flight.run("nar", 10s, [&]() -> Result<int> {
      {
        std::unique_lock lock(m);
        started = true;
        cv.notify_all();
        cv.wait_for(lock, 10s, [&] { return release; });
      }
      throw std::runtime_error("out of memory, say");
    });
    EXPECT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
  });
  {
    std::unique_lock lock(m);
    cv.wait_for(lock, 10s, [&] { return started; });
  }
  std::thread waiter([&] {
    auto r = flight.run("nar", 10s, []() -> Result<int> { return 1; });  // joins the failing run
    // Either it waited for the thrower (an error, not a broken promise) or ran after it.
    if (!r) {
      EXPECT_NE(r.error().message.find("out of memory"), std::string::npos) << r.error().message;
    }
  });
  for (auto deadline = std::chrono::steady_clock::now() + 1s; std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::yield();  // give the waiter a chance to join the run in flight
  }
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  thrower.join();
  waiter.join();
  auto again = flight.run("nar", 1s, []() -> Result<int> { return 7; });
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, 7);
}

TEST(SingleFlight, AWaiterGivesUpAtItsDeadline) {
  SingleFlight<int> flight;
  std::mutex m;
  std::condition_variable cv;
  bool release = false, started = false;
  std::thread slow([&] {
    (void)flight.run("k", 10s, [&]() -> Result<int> {
      std::unique_lock lock(m);
      started = true;
      cv.notify_all();
      cv.wait_for(lock, 10s, [&] { return release; });
      return 1;
    });
  });
  {
    std::unique_lock lock(m);
    cv.wait_for(lock, 10s, [&] { return started; });
  }
  auto begin = std::chrono::steady_clock::now();
  auto r = flight.run("k", 200ms, []() -> Result<int> { return 2; });
  auto waited = std::chrono::steady_clock::now() - begin;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ETIMEDOUT);
  EXPECT_LT(waited, 5s);
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  slow.join();
}

TEST(SingleFlight, AFailureIsNotRemembered) {
  SingleFlight<int> flight;
  int calls = 0;
  auto r = flight.run("k", 1s, [&]() -> Result<int> {
    ++calls;
    return make_error(EIO, "connection reset");
  });
  EXPECT_FALSE(r);
  r = flight.run("k", 1s, [&]() -> Result<int> {
    ++calls;
    return 3;
  });
  ASSERT_TRUE(r);
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace lazystore
