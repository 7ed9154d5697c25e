// Pins that do not follow open and release: the files read last, kept pinned in the content
// cache by inode number.
//
// When the kernel opens files without asking (FUSE_CAP_NO_OPEN_SUPPORT) there is no OPEN to pin a
// file's cache entry and no RELEASE to unpin it: reads arrive with fh 0 and name the file by its
// inode only. ReadPins keeps the pins of the files read most recently, so that repeated reads of
// a file neither reload its cache state nor pin and unpin per read. The promise to eviction is
// "never a file among the last N read" rather than "never an open file".
//
// Bounded two ways: at most `max_files` pins, and their files at most `max_bytes` together (so
// that pins never hold the cache's room; one file larger than that stays alone, while read). The
// least recently read pin goes first, and it is released once its last reader is done: a pin is
// a shared_ptr, whose holder (a read in progress) keeps it alive after ReadPins dropped it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "metadata_cache.h"
#include "readahead_window.h"

namespace lazystore {

class ChunkCache;
class CachedFile;

// The files kept pinned by ReadPins take at most this share of the content cache's bound.
constexpr uint64_t kReadPinsShareOfCache = 8;

// A regular file's pin on its cache entry, with the read-ahead state of its readers; released
// when the last holder drops it. An open handle (fh) or a ReadPins entry.
struct PinnedFile {
  PinnedFile(ChunkCache& cache, StoreTreePtr tree, uint32_t node, std::shared_ptr<CachedFile> file)
      : cache(cache), tree(std::move(tree)), node(node), file(std::move(file)) {}
  ~PinnedFile();
  PinnedFile(const PinnedFile&) = delete;
  PinnedFile& operator=(const PinnedFile&) = delete;

  ChunkCache& cache;
  const StoreTreePtr tree;
  const uint32_t node;
  const std::shared_ptr<CachedFile> file;  // null for an empty file
  std::mutex readahead_mutex;
  ReadaheadWindow readahead;        // guarded by readahead_mutex
  std::atomic<bool> logged{false};  // given to the mount's ReadLog (Filesystem::read) once
};

// An LRU of pins by inode number; thread-safe. `Pin` is PinnedFile in the daemon.
template <class Pin>
class ReadPins {
 public:
  ReadPins(size_t max_files, uint64_t max_bytes) : max_files_(max_files), max_bytes_(max_bytes) {}
  ~ReadPins() { clear(); }
  ReadPins(const ReadPins&) = delete;
  ReadPins& operator=(const ReadPins&) = delete;

  // The pin of `ino`, now the most recently read; null if none is kept.
  std::shared_ptr<Pin> find(uint64_t ino) {
    std::lock_guard lock(mutex_);
    auto it = index_.find(ino);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->pin;
  }

  // Keeps `pin` (of a file of `bytes` bytes) for `ino`, or returns the one a concurrent reader
  // kept first. Pins past the bounds are released, least recently read first, never this one.
  std::shared_ptr<Pin> keep(uint64_t ino, std::shared_ptr<Pin> pin, uint64_t bytes) {
    if (max_files_ == 0) return pin;            // kept by no one: a pin for this read only
    std::vector<std::shared_ptr<Pin>> dropped;  // released after the lock
    std::lock_guard lock(mutex_);
    if (auto it = index_.find(ino); it != index_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      dropped.push_back(std::move(pin));
      return it->second->pin;
    }
    order_.push_front(Entry{ino, pin, bytes});
    index_.emplace(ino, order_.begin());
    bytes_ += bytes;
    while (order_.size() > 1 && (order_.size() > max_files_ || bytes_ > max_bytes_)) {
      Entry& last = order_.back();
      bytes_ -= last.bytes;
      index_.erase(last.ino);
      dropped.push_back(std::move(last.pin));
      order_.pop_back();
    }
    return pin;
  }

  // Releases the pin of `ino` (the kernel forgot the inode).
  void erase(uint64_t ino) {
    std::shared_ptr<Pin> dropped;
    std::lock_guard lock(mutex_);
    auto it = index_.find(ino);
    if (it == index_.end()) return;
    dropped = std::move(it->second->pin);
    bytes_ -= it->second->bytes;
    order_.erase(it->second);
    index_.erase(it);
  }

  // Releases every pin (evict, unmount); returns how many there were.
  size_t clear() {
    std::list<Entry> dropped;
    {
      std::lock_guard lock(mutex_);
      dropped.swap(order_);
      index_.clear();
      bytes_ = 0;
    }
    return dropped.size();
  }

  size_t size() const {
    std::lock_guard lock(mutex_);
    return order_.size();
  }
  uint64_t bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
  }

 private:
  struct Entry {
    uint64_t ino;
    std::shared_ptr<Pin> pin;
    uint64_t bytes;
  };

  const size_t max_files_;
  const uint64_t max_bytes_;
  mutable std::mutex mutex_;
  std::list<Entry> order_;  // the most recently read first
  std::unordered_map<uint64_t, typename std::list<Entry>::iterator> index_;
  uint64_t bytes_ = 0;
};

using FileReadPins = ReadPins<PinnedFile>;

}  // namespace lazystore
