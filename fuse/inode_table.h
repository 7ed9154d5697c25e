// Inode numbers and the kernel's lookup counts.
//
// Inode 1 is /nix/store itself. Every other inode number is the xxh3 of "<store path>/<relative
// path>", so a restarted daemon hands out the same numbers. A collision (two keys, one number)
// is resolved by rehashing with a counter; that number then depends on which key came first.
// An entry lives while the kernel holds a lookup on it and is dropped by forget().
//
// Under a supervisor every number handed out is also written to an InodeJournal. A server that
// takes over after a crash loads it: the kernel still holds those numbers (and open files and
// lookups on them), so find() misses are answered from the journal's keys (`restored_key`),
// and `adopt` makes such an inode live for the rest of the mount (its lookup count is unknown).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "inode_journal.h"
#include "metadata_cache.h"

namespace lazystore {

struct InodeRef {
  StoreTreePtr tree;  // the store path this inode is in
  uint32_t node = Tree::kRoot;
};

class InodeTable {
 public:
  static constexpr uint64_t kRootInode = 1;

  // The inode number of a node, without taking a lookup reference (readdir's d_ino).
  uint64_t number_of(const StoreTree& tree, uint32_t node);
  // The same for a key "<store path>[/<relative path>]".
  uint64_t number_of_key(const std::string& key);
  // The inode of a node with one more kernel lookup reference.
  uint64_t acquire(const StoreTreePtr& tree, uint32_t node);
  std::optional<InodeRef> find(uint64_t ino) const;
  void forget(uint64_t ino, uint64_t count);
  size_t size() const;

  // Records every new number in `journal` from now on, after taking over `records`, the numbers
  // an earlier server of this mount handed out. The journal outlives the table.
  void attach_journal(InodeJournal& journal, std::vector<InodeJournal::Record> records);
  std::optional<std::string> restored_key(uint64_t ino) const;
  void adopt(uint64_t ino, const StoreTreePtr& tree, uint32_t node);

 private:
  struct Entry {
    InodeRef ref;
    std::string key;
    uint64_t lookups = 0;
  };
  uint64_t number_locked(const std::string& key);

  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::unordered_map<std::string, uint64_t> colliding_;  // keys that needed rehashing
  InodeJournal* journal_ = nullptr;
  std::unordered_set<uint64_t> journaled_;               // numbers already in the journal
  std::unordered_map<uint64_t, std::string> restored_;   // earlier servers' numbers, not adopted
};

}  // namespace lazystore
