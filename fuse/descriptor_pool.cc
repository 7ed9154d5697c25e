#include "descriptor_pool.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>

namespace lazystore {

std::shared_ptr<DescriptorPool> DescriptorPool::make(size_t capacity, std::atomic<uint64_t>* reopens) {
  return std::shared_ptr<DescriptorPool>(new DescriptorPool(std::max<size_t>(capacity, 1), reopens));
}

size_t DescriptorPool::default_capacity() {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 16384;
  // The rest is for everything else: /dev/fuse, upstream connections and reads, the metadata
  // cache, the control socket, and descriptors leased past the capacity by operations in flight.
  return std::clamp<size_t>(static_cast<size_t>(limit.rlim_cur / 4), 16, 16384);
}

Result<DescriptorPool::Lease> DescriptorPool::acquire(Slot& slot, const OpenFn& open) {
  {
    std::lock_guard lock(mutex_);
    if (slot.fd_) {
      lru_.splice(lru_.end(), lru_, slot.lru_);
      return slot.fd_;
    }
  }
  auto opened = open();
  if (!opened && (opened.error().code == EMFILE || opened.error().code == ENFILE)) {
    {
      std::lock_guard lock(mutex_);
      trim_locked(0);
    }
    opened = open();
  }
  if (!opened) return opened.error();
  auto fd = std::make_shared<const Fd>(std::move(*opened));
  std::lock_guard lock(mutex_);
  if (slot.fd_) {  // another thread opened it meanwhile: keep one, ours closes here
    lru_.splice(lru_.end(), lru_, slot.lru_);
    return slot.fd_;
  }
  if (slot.was_open_) {
    reopens_++;
    if (counter_) ++*counter_;
  }
  insert_locked(slot, fd);
  return fd;
}

void DescriptorPool::adopt(Slot& slot, Fd fd) {
  auto lease = std::make_shared<const Fd>(std::move(fd));
  std::lock_guard lock(mutex_);
  if (slot.fd_) return;
  insert_locked(slot, std::move(lease));
}

void DescriptorPool::insert_locked(Slot& slot, Lease fd) {
  slot.fd_ = std::move(fd);
  slot.was_open_ = true;
  slot.lru_ = lru_.insert(lru_.end(), &slot);
  trim_locked(capacity_);
}

void DescriptorPool::close(Slot& slot) {
  std::lock_guard lock(mutex_);
  if (!slot.fd_) return;
  lru_.erase(slot.lru_);
  slot.fd_.reset();
}

void DescriptorPool::trim_locked(size_t keep) {
  // Leases are copied only under the lock, so a use count of 1 (the slot's own) stays idle.
  for (auto it = lru_.begin(); lru_.size() > keep && it != lru_.end();) {
    Slot* slot = *it;
    if (slot->fd_.use_count() > 1) {
      ++it;
      continue;
    }
    it = lru_.erase(it);
    slot->fd_.reset();
  }
}

size_t DescriptorPool::open_count() const {
  std::lock_guard lock(mutex_);
  return lru_.size();
}

uint64_t DescriptorPool::reopens() const {
  std::lock_guard lock(mutex_);
  return reopens_;
}

}  // namespace lazystore
