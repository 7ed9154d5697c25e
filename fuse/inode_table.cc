#include "inode_table.h"

#include "hash.h"
#include "log.h"

namespace lazystore {
namespace {

uint64_t hash_number(const std::string& key, uint64_t salt) {
  uint64_t h = salt == 0 ? xxh3_64(key) : xxh3_64(key + "\n" + std::to_string(salt));
  return h < 2 ? h + 2 : h;  // 0 is invalid and 1 is the root
}

// An adopted inode's kernel lookup count is unknown: it is kept until the mount ends.
constexpr uint64_t kAdoptedLookups = uint64_t{1} << 62;

}  // namespace

uint64_t InodeTable::number_locked(const std::string& key) {
  if (auto it = colliding_.find(key); it != colliding_.end()) return it->second;
  for (uint64_t salt = 0;; ++salt) {
    uint64_t ino = hash_number(key, salt);
    auto it = entries_.find(ino);
    if (it == entries_.end()) {
      auto restored = restored_.find(ino);
      if (restored != restored_.end() && restored->second != key) continue;  // an earlier server's
      if (salt != 0) colliding_[key] = ino;
      return ino;
    }
    if (it->second.key == key) {
      if (salt != 0) colliding_[key] = ino;
      return ino;
    }
  }
}

uint64_t InodeTable::number_of(const StoreTree& tree, uint32_t node) {
  std::lock_guard lock(mutex_);
  return number_locked(tree.key_of(node));
}

uint64_t InodeTable::number_of_key(const std::string& key) {
  std::lock_guard lock(mutex_);
  return number_locked(key);
}

uint64_t InodeTable::acquire(const StoreTreePtr& tree, uint32_t node) {
  std::string key = tree->key_of(node);
  std::lock_guard lock(mutex_);
  uint64_t ino = number_locked(key);
  Entry& entry = entries_[ino];
  if (entry.lookups == 0) {
    if (journal_ && journaled_.insert(ino).second) {
      if (auto written = journal_->append(ino, key); !written) {
        // A later server could not answer for this inode (ESTALE); this one still can.
        LOG_WARNING("%s", written.error().message.c_str());
      }
    }
    entry = Entry{InodeRef{tree, node}, std::move(key), 0};
  }
  entry.lookups++;
  return ino;
}

void InodeTable::attach_journal(InodeJournal& journal, std::vector<InodeJournal::Record> records) {
  std::lock_guard lock(mutex_);
  journal_ = &journal;
  for (auto& [ino, key] : records) {
    journaled_.insert(ino);
    restored_[ino] = std::move(key);
  }
}

std::optional<std::string> InodeTable::restored_key(uint64_t ino) const {
  std::lock_guard lock(mutex_);
  auto it = restored_.find(ino);
  if (it == restored_.end()) return std::nullopt;
  return it->second;
}

void InodeTable::adopt(uint64_t ino, const StoreTreePtr& tree, uint32_t node) {
  std::lock_guard lock(mutex_);
  auto restored = restored_.find(ino);
  if (restored == restored_.end()) return;  // adopted by a concurrent request already
  Entry& entry = entries_[ino];
  if (entry.lookups == 0) entry = Entry{InodeRef{tree, node}, std::move(restored->second), 0};
  if (hash_number(entry.key, 0) != ino) colliding_[entry.key] = ino;
  entry.lookups += kAdoptedLookups;
  restored_.erase(restored);
}

std::optional<InodeRef> InodeTable::find(uint64_t ino) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(ino);
  if (it == entries_.end()) return std::nullopt;
  return it->second.ref;
}

void InodeTable::forget(uint64_t ino, uint64_t count) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(ino);
  if (it == entries_.end()) return;
  if (it->second.lookups <= count) {
    colliding_.erase(it->second.key);
    entries_.erase(it);
  } else {
    it->second.lookups -= count;
  }
}

size_t InodeTable::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace lazystore
