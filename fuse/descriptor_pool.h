// A bound on the descriptors the content cache keeps open. Every pinned file has a Slot; a slot
// holds its data file's descriptor while a lease on it is alive or while it is among the
// `capacity` most recently used, and is closed otherwise, to be reopened on demand. A lease keeps
// its descriptor open until it is dropped, e.g. until a reply spliced from it has been written.
//
// Descriptors beyond the capacity exist only while leased, so the pool holds at most
// max(capacity, leases alive), and leases live for the length of one operation.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>

#include "fd.h"
#include "result.h"

namespace lazystore {

class DescriptorPool {
 public:
  using Lease = std::shared_ptr<const Fd>;
  using OpenFn = std::function<Result<Fd>()>;

  // `reopens`, when given, counts the reopens (see reopens()).
  static std::shared_ptr<DescriptorPool> make(size_t capacity, std::atomic<uint64_t>* reopens = nullptr);
  // A capacity for this process: a quarter of RLIMIT_NOFILE's soft limit, from 16 to 16384.
  static size_t default_capacity();

  // One file's place in the pool; its descriptor closes with it (once no lease holds it).
  class Slot {
   public:
    explicit Slot(std::shared_ptr<DescriptorPool> pool) : pool_(std::move(pool)) {}
    ~Slot() { pool_->close(*this); }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    friend class DescriptorPool;
    const std::shared_ptr<DescriptorPool> pool_;
    Lease fd_;                        // null while closed
    std::list<Slot*>::iterator lru_;  // valid while fd_ is set
    bool was_open_ = false;           // opened before: opening again is a reopen
  };

  // The slot's descriptor; when it is closed, `open` opens it again (outside the pool's lock).
  // When that fails for want of descriptors (EMFILE, ENFILE), idle ones are closed and it is
  // tried once more.
  Result<Lease> acquire(Slot& slot, const OpenFn& open);
  // Puts an open descriptor in the slot (one the caller had to open anyway).
  void adopt(Slot& slot, Fd fd);
  // Closes the slot's descriptor (now, or when its last lease is dropped).
  void close(Slot& slot);

  size_t capacity() const { return capacity_; }
  // Descriptors in slots now, leased or idle.
  size_t open_count() const;
  // Times a slot had to be opened again after its descriptor was closed to stay in the bound.
  uint64_t reopens() const;

 private:
  DescriptorPool(size_t capacity, std::atomic<uint64_t>* counter) : capacity_(capacity), counter_(counter) {}
  void insert_locked(Slot& slot, Lease fd);
  // Closes idle descriptors, least recently used first, until at most `keep` are open.
  void trim_locked(size_t keep);

  const size_t capacity_;
  std::atomic<uint64_t>* const counter_;
  mutable std::mutex mutex_;  // guards every slot's fd_ and lru_, and the members below
  std::list<Slot*> lru_;      // open slots, least recently used first
  uint64_t reopens_ = 0;
};

}  // namespace lazystore
