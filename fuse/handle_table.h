// Open file and directory handles by number: the `fh` the kernel keeps for an open file.
//
// A number, not a pointer, because the kernel keeps handing back the numbers of files opened
// before a crash to the server that takes over: find() misses for those, and the caller adopts
// them (rebuilds the handle from the inode) under the same number. Numbers carry the server's
// generation in their high bits, so two servers never give out the same one.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace lazystore {

template <class Handle>
class HandleTable {
 public:
  explicit HandleTable(uint64_t generation) : next_((generation & 0xffffff) << 40) {}

  uint64_t insert(std::shared_ptr<Handle> handle) {
    std::lock_guard lock(mutex_);
    uint64_t id = ++next_;
    handles_.emplace(id, std::move(handle));
    return id;
  }

  std::shared_ptr<Handle> find(uint64_t id) const {
    std::lock_guard lock(mutex_);
    auto it = handles_.find(id);
    return it == handles_.end() ? nullptr : it->second;
  }

  // Stores `handle` under an earlier server's number; if a concurrent request did so first, its
  // handle wins and is returned.
  std::shared_ptr<Handle> adopt(uint64_t id, std::shared_ptr<Handle> handle) {
    std::lock_guard lock(mutex_);
    return handles_.try_emplace(id, std::move(handle)).first->second;
  }

  std::shared_ptr<Handle> erase(uint64_t id) {
    std::lock_guard lock(mutex_);
    auto it = handles_.find(id);
    if (it == handles_.end()) return nullptr;
    auto handle = std::move(it->second);
    handles_.erase(it);
    return handle;
  }

 private:
  mutable std::mutex mutex_;
  uint64_t next_;
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_;
};

}  // namespace lazystore
