#include "nar_spool_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "log.h"

namespace lazystore {

void NarSpoolStore::scan_locked() {
  if (scanned_) return;
  scanned_ = true;
  struct Found {
    std::string hash;
    uint64_t bytes;
    int64_t mtime;
  };
  std::vector<Found> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(directory_, ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(".tmp-") && name.size() == 11) {  // a download cut off by a crash (NarSpool::create)
      ::unlink(entry.path().c_str());
      continue;
    }
    struct stat st {};
    if (name.size() != 32 + 4 || !name.ends_with(".nar") || ::stat(entry.path().c_str(), &st) != 0) continue;
    found.push_back({name.substr(0, 32), static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime)});
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.mtime < b.mtime; });
  for (const Found& f : found) add_locked(f.hash, f.bytes);  // the newest ends up first
  evict_locked(0, "");
}

void NarSpoolStore::add_locked(const std::string& hash, uint64_t bytes) {
  remove_locked(hash);
  recent_.push_front(hash);
  kept_[hash] = Kept{bytes, recent_.begin()};
  bytes_ += bytes;
}

void NarSpoolStore::touch_locked(const std::string& hash) {
  if (auto it = kept_.find(hash); it != kept_.end()) recent_.splice(recent_.begin(), recent_, it->second.recent);
}

void NarSpoolStore::remove_locked(const std::string& hash) {
  open_.erase(hash);
  auto it = kept_.find(hash);
  if (it == kept_.end()) return;
  bytes_ -= it->second.bytes;
  recent_.erase(it->second.recent);
  kept_.erase(it);
}

void NarSpoolStore::evict_locked(uint64_t bytes, const std::string& keep) {
  while (!recent_.empty() && bytes_ + bytes > max_bytes_) {
    std::string victim = recent_.back();
    if (victim == keep) {
      if (recent_.size() == 1) return;
      victim = *std::next(recent_.rbegin());
    }
    // A reader holding it keeps its descriptor: the bytes go when it lets go.
    ::unlink(path_of(victim).c_str());
    remove_locked(victim);
  }
}

void NarSpoolStore::forget(const std::string& hash) {
  std::lock_guard lock(mutex_);
  if (kept_.contains(hash)) ::unlink(path_of(hash).c_str());
  remove_locked(hash);
}

uint64_t NarSpoolStore::kept_bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

Result<NarSpoolStore::SpoolPtr> NarSpoolStore::get(const std::string& hash, const NarInfo& info,
                                                   std::chrono::milliseconds wait, const Download& download) {
  {
    std::lock_guard lock(mutex_);
    scan_locked();
    if (auto it = open_.find(hash); it != open_.end()) {
      touch_locked(hash);
      return it->second;
    }
  }
  return flights_.run(hash, wait, [&] { return open_or_download(hash, info, download); });
}

Result<NarSpoolStore::SpoolPtr> NarSpoolStore::open_or_download(const std::string& hash, const NarInfo& info,
                                                                const Download& download) {
  bool on_disk;
  {
    std::lock_guard lock(mutex_);
    if (auto it = open_.find(hash); it != open_.end()) return it->second;  // finished just before us
    on_disk = kept_.contains(hash);
  }
  std::unique_ptr<NarSpool> spool;
  if (on_disk) {
    auto kept = NarSpool::open_kept(path_of(hash), info.nar_size, info.nar_sha256);
    if (kept) {
      spool = std::move(*kept);
    } else {
      LOG_WARNING("%s: %s: downloading it again", path_of(hash).c_str(), kept.error().message.c_str());
      std::lock_guard lock(mutex_);
      remove_locked(hash);
    }
  }
  if (!spool) {
    {
      std::lock_guard lock(mutex_);
      evict_locked(info.nar_size, hash);
    }
    auto downloaded = download();
    if (!downloaded) return downloaded.error();
    spool = std::move(*downloaded);
    if (auto st = spool->keep(path_of(hash)); !st) {
      // Still verified and readable through its descriptor; only a restart will fetch it again.
      LOG_WARNING("%s", st.error().message.c_str());
    } else {
      std::lock_guard lock(mutex_);
      add_locked(hash, spool->size());
      evict_locked(0, hash);
    }
  }
  SpoolPtr shared(std::move(spool));
  std::lock_guard lock(mutex_);
  touch_locked(hash);
  if (open_.size() >= kMaxOpen) open_.erase(open_.begin());
  open_[hash] = shared;
  return shared;
}

}  // namespace lazystore
