#include "cache_budget.h"

namespace lazystore {
namespace {

// Free space left on the cache's disk for everything else there (metadata, the control socket).
constexpr uint64_t kDiskSlack = 1 << 20;

}  // namespace

CacheBudget::CacheBudget(uint64_t max_bytes, Stats& stats, RemoveFn remove, DiskFreeFn disk_free)
    : max_bytes_(max_bytes), stats_(stats), remove_(std::move(remove)), disk_free_(std::move(disk_free)) {}

void CacheBudget::add_existing(const std::vector<Existing>& files) {
  std::lock_guard lock(mutex_);
  for (const Existing& f : files) {
    Entry& entry = entries_[f.id];
    entry.disk_bytes = f.bytes;
    entry.lru = lru_.insert(lru_.end(), f.id);
    used_ += f.bytes;
  }
  while (used_ > max_bytes_ && !lru_.empty()) evict_locked(entries_.find(lru_.front()));
}

void CacheBudget::pin(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    it = entries_.emplace(id, Entry{}).first;
    it->second.lru = lru_.insert(lru_.end(), id);
  } else {
    lru_.splice(lru_.end(), lru_, it->second.lru);
  }
  it->second.pins++;
}

bool CacheBudget::pin_if_known(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return false;
  it->second.pins++;
  return true;
}

int CacheBudget::unpin(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return 0;
  int left = --it->second.pins;
  if (left == 0) forget_if_idle_locked(it);
  return left;
}

bool CacheBudget::evict_if_only_pin(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.pins != 1) return false;
  evict_locked(it);
  return true;
}

void CacheBudget::forget_if_idle_locked(Entries::iterator it) {
  if (it->second.pins == 0 && it->second.disk_bytes == 0 && it->second.pending_bytes == 0) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
}

void CacheBudget::evict_locked(Entries::iterator it) {
  remove_(it->first);
  used_ -= it->second.disk_bytes + it->second.pending_bytes;
  pending_ -= it->second.pending_bytes;
  lru_.erase(it->second.lru);
  entries_.erase(it);
  stats_.evictions++;
}

bool CacheBudget::reserve(const std::string& id, uint64_t bytes, std::string& why) {
  uint64_t free_disk = disk_free_();
  std::lock_guard lock(mutex_);
  auto self = entries_.find(id);
  if (self == entries_.end()) {
    why = "the file left the cache";
    return false;
  }
  // What other fills reserved and have not written yet is not free, whatever the disk says.
  auto over_bound = [&] { return used_ + bytes > max_bytes_; };
  auto disk_short = [&] { return free_disk != UINT64_MAX && free_disk < pending_ + bytes + kDiskSlack; };
  auto victim = lru_.begin();
  while ((over_bound() || disk_short()) && victim != lru_.end()) {
    auto it = entries_.find(*victim);
    ++victim;
    if (it->second.pins > 0 || it == self) continue;
    if (free_disk != UINT64_MAX) free_disk += it->second.disk_bytes;  // unlinked, not open: freed
    evict_locked(it);
  }
  if (over_bound()) {
    why = "the cache is full of open files (" + std::to_string(used_ >> 20) + " MiB of a " +
          std::to_string(max_bytes_ >> 20) + " MiB bound)";
    return false;
  }
  if (disk_short()) {
    why = "the cache disk is full (" + std::to_string(free_disk >> 10) + " KiB free, " + std::to_string(used_ >> 20) +
          " MiB cached, the rest in open files)";
    return false;
  }
  used_ += bytes;
  pending_ += bytes;
  self->second.pending_bytes += bytes;
  return true;
}

void CacheBudget::settle(const std::string& id, uint64_t reserved, uint64_t measured) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& entry = it->second;
  used_ -= reserved + entry.disk_bytes;
  pending_ -= reserved;
  entry.pending_bytes -= reserved;
  entry.disk_bytes = measured;
  used_ += measured;
}

void CacheBudget::cancel(const std::string& id, uint64_t reserved) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  used_ -= reserved;
  pending_ -= reserved;
  it->second.pending_bytes -= reserved;
}

CacheBudget::EvictReport CacheBudget::evict_all() {
  EvictReport report;
  std::lock_guard lock(mutex_);
  for (auto it = lru_.begin(); it != lru_.end();) {
    auto entry = entries_.find(*it);
    ++it;
    if (entry->second.pins > 0) {
      report.pinned_files++;
      continue;
    }
    report.files++;
    report.bytes += entry->second.disk_bytes;
    evict_locked(entry);
  }
  return report;
}

std::vector<std::string> CacheBudget::ids() const {
  std::lock_guard lock(mutex_);
  return {lru_.begin(), lru_.end()};
}

size_t CacheBudget::files() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

uint64_t CacheBudget::used() const {
  std::lock_guard lock(mutex_);
  return used_;
}

}  // namespace lazystore
