// File handles the NFS upstream has learnt (NFSv3: every entry of a walk's READDIRPLUS), by
// node key "<store path>[/<relative path>]", so that reading a file needs no LOOKUP. Bounded:
// past `capacity` handles, the oldest half goes (they are found again by LOOKUP).
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace lazystore {

class NfsHandleCache {
 public:
  explicit NfsHandleCache(size_t capacity = size_t{1} << 18) : capacity_(capacity ? capacity : 1) {}

  void put(const std::string& key, const std::string& fh) {
    std::lock_guard lock(mutex_);
    auto [it, added] = handles_.insert_or_assign(key, fh);
    if (added) order_.push_back(&it->first);
    if (handles_.size() > capacity_) {
      while (handles_.size() > capacity_ / 2 && !order_.empty()) {
        handles_.erase(*order_.front());
        order_.pop_front();
      }
    }
  }

  std::optional<std::string> get(const std::string& key) const {
    std::lock_guard lock(mutex_);
    auto it = handles_.find(key);
    if (it == handles_.end()) return std::nullopt;
    return it->second;
  }

  void erase(const std::string& key) {
    std::lock_guard lock(mutex_);
    auto it = handles_.find(key);
    if (it == handles_.end()) return;
    std::erase(order_, &it->first);
    handles_.erase(it);
  }

  size_t size() const {
    std::lock_guard lock(mutex_);
    return handles_.size();
  }

 private:
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::string> handles_;
  std::deque<const std::string*> order_;  // keys of handles_, oldest first (node keys stay put)
};

}  // namespace lazystore
