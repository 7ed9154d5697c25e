// The content cache's quota: the data files it holds and their disk bytes, least recently used
// first, pins (files in use, never evicted), room reserved for fills in progress, and eviction.
// It knows data files by id; removing one from disk is the `remove` callback's work.
//
// A fill reserves its bytes first and settles them with what the data file measures after the
// write, so the bound holds while fills are in flight. A fill must fit both the bound and the
// free space of the cache's disk (a small or shared disk fills before the bound).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "stats.h"

namespace lazystore {

class CacheBudget {
 public:
  using RemoveFn = std::function<void(const std::string& id)>;
  using DiskFreeFn = std::function<uint64_t()>;  // UINT64_MAX when unknown

  CacheBudget(uint64_t max_bytes, Stats& stats, RemoveFn remove, DiskFreeFn disk_free);
  CacheBudget(const CacheBudget&) = delete;
  CacheBudget& operator=(const CacheBudget&) = delete;

  struct Existing {
    std::string id;
    uint64_t bytes = 0;
  };
  // The data files found at start, least recently used first; evicts the oldest past the bound.
  void add_existing(const std::vector<Existing>& files);

  // One more pin on `id`, which becomes the most recently used (created when unknown).
  void pin(const std::string& id);
  // One more pin on `id` if it is known, without touching its place in the LRU order.
  bool pin_if_known(const std::string& id);
  // One pin less; returns the pins left. An unpinned entry with nothing on disk is forgotten.
  int unpin(const std::string& id);
  // Evicts `id` if the caller's pin is its only one; false (the pin stays) otherwise.
  bool evict_if_only_pin(const std::string& id);

  // Reserves disk bytes for a fill of `id`, evicting unpinned files, least recently used first,
  // until the fill fits both the bound and the free disk space; false (and why) if it cannot.
  bool reserve(const std::string& id, uint64_t bytes, std::string& why);
  // Ends a reservation: `id` now measures `measured` disk bytes.
  void settle(const std::string& id, uint64_t reserved, uint64_t measured);
  // Ends a reservation that wrote nothing.
  void cancel(const std::string& id, uint64_t reserved);

  struct EvictReport {
    uint64_t files = 0;
    uint64_t bytes = 0;         // disk bytes freed
    uint64_t pinned_files = 0;  // kept because they are in use
  };
  // Evicts every file that is not pinned.
  EvictReport evict_all();

  // The known ids, least recently used first.
  std::vector<std::string> ids() const;
  size_t files() const;
  uint64_t used() const;
  uint64_t limit() const { return max_bytes_; }

 private:
  struct Entry {
    uint64_t disk_bytes = 0;     // blocks of the data file, as last measured
    uint64_t pending_bytes = 0;  // reserved for fills in progress
    int pins = 0;
    std::list<std::string>::iterator lru;
  };
  using Entries = std::unordered_map<std::string, Entry>;

  void evict_locked(Entries::iterator it);
  void forget_if_idle_locked(Entries::iterator it);

  const uint64_t max_bytes_;
  Stats& stats_;
  const RemoveFn remove_;
  const DiskFreeFn disk_free_;
  mutable std::mutex mutex_;  // guards everything below
  Entries entries_;
  std::list<std::string> lru_;  // front = least recently used
  uint64_t used_ = 0;
  uint64_t pending_ = 0;  // the sum of the entries' pending_bytes: reserved, maybe not on disk yet
};

}  // namespace lazystore
