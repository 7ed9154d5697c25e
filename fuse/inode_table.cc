#include "inode_table.h"

#include "hash.h"
#include "log.h"

namespace lazystore {
namespace {

uint64_t hash_number(const std::string& key, uint64_t salt) {
  uint64_t h = salt == 0 ? xxh3_64(key) : xxh3_64(key + "\n" + std::to_string(salt));
  return h < 2 ? h + 2 : h;  // 0 is invalid and 1 is the root
}

}  // namespace

uint64_t InodeTable::number_locked(const std::string& key) {
  if (auto it = colliding_.find(key); it != colliding_.end()) return it->second;
  for (uint64_t salt = 0;; ++salt) {
    uint64_t ino = hash_number(key, salt);
    auto it = entries_.find(ino);
    if (it == entries_.end()) {
      auto restored = restored_.find(ino);
      if (restored != restored_.end() && restored->second.key != key) continue;  // an earlier server's
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

void InodeTable::journal_locked(uint64_t ino, Entry& entry) {
  if (!journal_) return;
  if (entry.record != InodeJournal::kNoRecord) {
    journal_->set_lookups(entry.record, entry.lookups);
    return;
  }
  auto written = journal_->append(ino, entry.key, entry.lookups);
  if (!written) {
    // A later server could not answer for this inode (ESTALE); this one still can.
    LOG_WARNING("%s", written.error().message.c_str());
    return;
  }
  entry.record = *written;
}

uint64_t InodeTable::acquire(const StoreTreePtr& tree, uint32_t node) {
  std::string key = tree->key_of(node);
  std::lock_guard lock(mutex_);
  uint64_t ino = number_locked(key);
  Entry& entry = entries_[ino];
  if (entry.lookups == 0) {
    entry = Entry{InodeRef{tree, node}, std::move(key), 0, InodeJournal::kNoRecord};
    if (auto restored = restored_.find(ino); restored != restored_.end()) {
      // Held by the kernel since an earlier server (number_locked made sure the key is this one).
      entry.lookups = restored->second.lookups;
      entry.record = restored->second.record;
      restored_.erase(restored);
    }
  }
  entry.lookups++;
  journal_locked(ino, entry);  // before the reply: a kill leaves the count high, never low
  return ino;
}

void InodeTable::attach_journal(InodeJournal& journal, std::vector<InodeJournal::Record> records) {
  std::lock_guard lock(mutex_);
  journal_ = &journal;
  for (auto& record : records) {
    restored_[record.ino] = Restored{std::move(record.key), record.lookups, record.at};
  }
}

size_t InodeTable::restored_count() const {
  std::lock_guard lock(mutex_);
  return restored_.size();
}

std::optional<std::string> InodeTable::restored_key(uint64_t ino) const {
  std::lock_guard lock(mutex_);
  auto it = restored_.find(ino);
  if (it == restored_.end()) return std::nullopt;
  return it->second.key;
}

void InodeTable::adopt(uint64_t ino, const StoreTreePtr& tree, uint32_t node) {
  std::lock_guard lock(mutex_);
  auto restored = restored_.find(ino);
  if (restored == restored_.end()) return;  // adopted by a concurrent request already
  Entry& entry = entries_[ino];
  if (entry.lookups == 0) entry = Entry{InodeRef{tree, node}, restored->second.key, 0, restored->second.record};
  if (hash_number(entry.key, 0) != ino) colliding_[entry.key] = ino;
  entry.lookups += restored->second.lookups;
  restored_.erase(restored);
}

std::optional<InodeRef> InodeTable::find(uint64_t ino) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(ino);
  if (it == entries_.end()) return std::nullopt;
  return it->second.ref;
}

bool InodeTable::forget(uint64_t ino, uint64_t count) {
  std::lock_guard lock(mutex_);
  auto entry = entries_.find(ino);
  auto restored = entry == entries_.end() ? restored_.find(ino) : restored_.end();
  if (entry == entries_.end() && restored == restored_.end()) return false;
  uint64_t& lookups = entry != entries_.end() ? entry->second.lookups : restored->second.lookups;
  uint64_t record = entry != entries_.end() ? entry->second.record : restored->second.record;
  if (lookups > count) {
    lookups -= count;
    if (journal_) journal_->set_lookups(record, lookups);
    return false;
  }
  if (journal_) journal_->set_lookups(record, 0);
  if (entry != entries_.end()) {
    colliding_.erase(entry->second.key);
    entries_.erase(entry);
  } else {
    restored_.erase(restored);
  }
  if (journal_ && journal_->wants_compaction()) compact_locked();
  return true;
}

void InodeTable::compact_locked() {
  std::vector<InodeJournal::Live> live;
  live.reserve(entries_.size() + restored_.size());
  for (auto& [ino, entry] : entries_) {
    if (entry.record != InodeJournal::kNoRecord) live.push_back({ino, entry.key, entry.lookups, &entry.record});
  }
  for (auto& [ino, restored] : restored_) {
    if (restored.record != InodeJournal::kNoRecord) {
      live.push_back({ino, restored.key, restored.lookups, &restored.record});
    }
  }
  uint64_t before = journal_->bytes();
  if (auto compacted = journal_->compact(live); !compacted) {
    LOG_WARNING("%s", compacted.error().message.c_str());
    return;
  }
  LOG_INFO("inode journal compacted from %llu to %llu bytes (%zu numbers the kernel holds)",
           static_cast<unsigned long long>(before), static_cast<unsigned long long>(journal_->bytes()), live.size());
}

size_t InodeTable::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size() + restored_.size();
}

}  // namespace lazystore
