// Inode numbers and the kernel's lookup counts.
//
// Inode 1 is /nix/store itself. Every other inode number is the xxh3 of "<store path>/<relative
// path>", so a restarted daemon hands out the same numbers. A collision (two keys, one number)
// is resolved by rehashing with a counter; that number then depends on which key came first.
// An entry lives while the kernel holds a lookup on it and is dropped by forget().
//
// Under a supervisor every number handed out is also written, with its lookup count, to the
// mount's InodeJournal. A server that takes over after a crash loads the live ones: the kernel
// still holds those numbers (and open files and lookups on them), so find() misses are answered
// from the journal's keys (`restored_key`), and `adopt` makes such an inode live again with the
// count it had. Counts carry over between servers (raised before each reply, so a kill can
// leave one too high, never too low; lowered by the kernel's FORGET), so an entry, restored or
// live, goes when the kernel forgets it: the table and the journal hold what the kernel holds.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
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
  // Drops `count` kernel lookups; true when that was the last one (the number is forgotten).
  bool forget(uint64_t ino, uint64_t count);
  size_t size() const;  // numbers the kernel holds: live and restored

  // Records every new number in `journal` from now on, after taking over `records`, the numbers
  // an earlier server of this mount handed out. The journal outlives the table.
  void attach_journal(InodeJournal& journal, std::vector<InodeJournal::Record> records);
  size_t restored_count() const;
  std::optional<std::string> restored_key(uint64_t ino) const;
  void adopt(uint64_t ino, const StoreTreePtr& tree, uint32_t node);

 private:
  struct Entry {
    InodeRef ref;
    std::string key;
    uint64_t lookups = 0;
    uint64_t record = InodeJournal::kNoRecord;  // its place in the journal
  };
  struct Restored {  // a number an earlier server handed out, not used by this one yet
    std::string key;
    uint64_t lookups = 0;
    uint64_t record = InodeJournal::kNoRecord;
  };
  uint64_t number_locked(const std::string& key);
  void journal_locked(uint64_t ino, Entry& entry);
  void compact_locked();

  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::unordered_map<std::string, uint64_t> colliding_;  // keys that needed rehashing
  InodeJournal* journal_ = nullptr;
  std::unordered_map<uint64_t, Restored> restored_;
};

}  // namespace lazystore
