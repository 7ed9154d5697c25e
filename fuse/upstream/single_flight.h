// Concurrent requests for one key merged into one piece of work (a whole-NAR download, a
// manifest fetch): the first caller runs it, the others wait for its result, with a deadline.
// Nothing is remembered once it ends (callers keep their own caches), so a failure is retried by
// the next caller. The work's result reaches every waiter on every path, exceptions included:
// a waiter never sees a broken promise, and no key stays stuck.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>

#include "result.h"

namespace lazystore {

template <class T>
class SingleFlight {
 public:
  // Runs `work` for `key` unless a run is in flight, whose result is then waited for up to
  // `wait` (ETIMEDOUT past it; the run goes on for others).
  Result<T> run(const std::string& key, std::chrono::milliseconds wait, const std::function<Result<T>()>& work) {
    std::promise<Result<T>> promise;
    {
      std::unique_lock lock(mutex_);
      if (auto it = running_.find(key); it != running_.end()) {
        auto waiting = it->second;
        lock.unlock();
        if (waiting.wait_for(wait) != std::future_status::ready) {
          return make_error(ETIMEDOUT, key + ": still in progress after " + std::to_string(wait.count()) + " ms");
        }
        return waiting.get();
      }
      running_.emplace(key, promise.get_future().share());
    }
    Result<T> result = make_error(EIO, key + ": failed");
    try {
      result = work();
    } catch (const std::exception& e) {
      result = make_error(EIO, key + ": " + e.what());
    } catch (...) {
      result = make_error(EIO, key + ": unknown exception");
    }
    {
      std::lock_guard lock(mutex_);
      running_.erase(key);
    }
    promise.set_value(result);
    return result;
  }

  size_t in_flight() const {
    std::lock_guard lock(mutex_);
    return running_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_future<Result<T>>> running_;
};

}  // namespace lazystore
