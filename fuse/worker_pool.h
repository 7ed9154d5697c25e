// A fixed set of threads draining a bounded queue of tasks (read-ahead). A task that needs
// something undone when it is dropped unrun holds it in what it captures.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "log.h"

namespace lazystore {

class WorkerPool {
 public:
  // `thrown`, when given, counts the tasks that threw.
  explicit WorkerPool(size_t max_queued = 1024, std::atomic<uint64_t>* thrown = nullptr)
      : max_queued_(max_queued), thrown_(thrown) {}
  ~WorkerPool() { stop(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Threads start here, not in the constructor, so the daemon can fork (daemonize) first.
  void start(unsigned threads) {
    std::lock_guard lock(mutex_);
    stopping_ = false;
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }

  // False when the queue is full or the pool is not running: the task is dropped.
  bool submit(std::function<void()> task) {
    std::lock_guard lock(mutex_);
    if (threads_.empty() || stopping_ || queue_.size() >= max_queued_) return false;
    queue_.push_back(std::move(task));
    cv_.notify_one();
    return true;
  }

  // Drops the tasks not started yet (read-ahead is worth nothing at shutdown, and each one
  // waiting on a dead upstream would hold the stop for its deadline), lets the running ones
  // finish, and joins the threads.
  void stop() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      dropped.swap(queue_);
      cv_.notify_all();
    }
    dropped.clear();  // outside the lock: what a task holds may take other locks as it goes
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      // A task that throws is a bug: counted and logged, and the pool goes on.
      try {
        task();
      } catch (const std::exception& e) {
        if (thrown_) ++*thrown_;
        LOG_ERROR("a background task failed: %s", e.what());
      } catch (...) {
        if (thrown_) ++*thrown_;
        LOG_ERROR("a background task failed (not a std::exception)");
      }
    }
  }

  const size_t max_queued_;
  std::atomic<uint64_t>* const thrown_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

}  // namespace lazystore
