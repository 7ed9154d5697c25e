#include "chunk_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "hash.h"
#include "io.h"
#include "little_endian.h"
#include "log.h"

namespace lazystore {

class CachedFile {
 public:
  enum State : uint8_t { Absent, Unverified, Verified, Busy };

  CachedFile(std::string id_, uint64_t size_, uint32_t chunk_size_)
      : id(std::move(id_)), size(size_), chunk_size(chunk_size_),
        chunks(static_cast<uint32_t>((size_ + chunk_size_ - 1) / chunk_size_)),
        state(chunks, Absent), hashes(chunks, 0) {}

  uint64_t chunk_offset(uint32_t index) const { return uint64_t{index} * chunk_size; }
  size_t chunk_length(uint32_t index) const {
    return static_cast<size_t>(std::min<uint64_t>(chunk_size, size - chunk_offset(index)));
  }

  const std::string id;
  const uint64_t size;
  const uint32_t chunk_size;
  const uint32_t chunks;

  mutable std::mutex mutex;  // guards state, hashes, fd creation
  std::condition_variable changed;
  std::vector<uint8_t> state;
  std::vector<uint64_t> hashes;
  Fd fd;  // the data file; opened when it exists, created by the first fill
  // The last chunk that had to be served uncached, so that the rest of a sequential read
  // through it does not fetch it again.
  uint32_t spilled_index = UINT32_MAX;
  std::vector<std::byte> spilled;
  // The last failed fetch. When it timed out, the readers that waited for it get its error
  // instead of each fetching again in turn (one deadline per failure, not one per waiting
  // reader), and so do new readers of that chunk for kTimeoutHold (the kernel retries a failed
  // read-ahead at once: without it, one read() would wait out two deadlines). A quick failure
  // (a reset connection) is cheap to retry: waiters fetch again.
  uint64_t failures = 0;
  uint32_t failed_index = UINT32_MAX;
  Error failed_error;
  std::chrono::steady_clock::time_point failed_at;
};

namespace {

constexpr size_t kSlotSize = 24;
constexpr uint64_t kBlock = 4096;
// Free space left on the cache's disk for everything else there (metadata, the control socket).
constexpr uint64_t kDiskSlack = 1 << 20;
constexpr auto kNoRoomLogInterval = std::chrono::seconds(30);
constexpr auto kTimeoutHold = std::chrono::seconds(1);

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// The check binds a slot to its index, the file's size and the chunk size.
uint64_t slot_check(uint64_t index, uint64_t hash, uint64_t size, uint32_t chunk_size) {
  uint64_t words[4] = {index, hash, size, chunk_size};
  return xxh3_64(std::as_bytes(std::span(words)));
}


// A cleared slot (a chunk that failed verify_all): never valid, yet it still tells the file's
// size to a later verify_all when it is the last slot.
uint64_t tombstone_check(uint64_t index, uint64_t size, uint32_t chunk_size) {
  return ~slot_check(index, 0, size, chunk_size);
}

Status clear_slot(int fd, uint64_t index, uint64_t size, uint32_t chunk_size) {
  std::byte slot[kSlotSize];
  put_u64_le(slot, index);
  put_u64_le(slot + 8, 0);
  put_u64_le(slot + 16, tombstone_check(index, size, chunk_size));
  return pwrite_all(fd, slot, size + index * kSlotSize);
}

size_t read_full(int fd, std::byte* data, size_t length, uint64_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

uint64_t disk_bytes_of(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

bool is_cache_id(std::string_view name) {
  return name.size() == 32 &&
         std::all_of(name.begin(), name.end(), [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

}  // namespace

Result<std::unique_ptr<ChunkCache>> ChunkCache::open(const ChunkCacheOptions& options, Stats& stats) {
  std::error_code ec;
  std::filesystem::create_directories(options.directory, ec);
  if (ec) return make_error(ec.value(), "cache directory " + options.directory + ": " + ec.message());
  std::unique_ptr<ChunkCache> cache(new ChunkCache(options, stats));
  if (auto scanned = cache->scan(); !scanned) return scanned.error();
  return cache;
}

ChunkCache::~ChunkCache() { workers_.stop(); }

std::string ChunkCache::data_path(const std::string& id) const {
  return options_.directory + "/" + id.substr(0, 2) + "/" + id;
}

// Measures every data file left by earlier runs; least recently opened (mtime) evicted first.
Status ChunkCache::scan() {
  struct Found {
    std::string id;
    uint64_t bytes;
    struct timespec mtime;
  };
  std::vector<Found> found;
  std::error_code ec;
  for (const auto& sub : std::filesystem::directory_iterator(options_.directory, ec)) {
    if (!sub.is_directory(ec)) continue;
    for (const auto& file : std::filesystem::directory_iterator(sub.path(), ec)) {
      std::string name = file.path().filename().string();
      struct stat st {};
      if (lstat(file.path().c_str(), &st) != 0) continue;
      if (!S_ISREG(st.st_mode) || !is_cache_id(name) || name.substr(0, 2) != sub.path().filename()) {
        LOG_WARNING("removing stray file %s from the cache", file.path().c_str());
        std::filesystem::remove_all(file.path(), ec);
        continue;
      }
      found.push_back({name, static_cast<uint64_t>(st.st_blocks) * 512, st.st_mtim});
    }
  }
  if (ec) return make_error(ec.value(), "scanning cache " + options_.directory + ": " + ec.message());
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return std::tie(a.mtime.tv_sec, a.mtime.tv_nsec) < std::tie(b.mtime.tv_sec, b.mtime.tv_nsec);
  });
  std::lock_guard lock(mutex_);
  for (Found& f : found) {
    Entry& entry = entries_[f.id];
    entry.disk_bytes = f.bytes;
    entry.lru = lru_.insert(lru_.end(), f.id);
    used_ += f.bytes;
  }
  while (used_ > options_.max_bytes && !lru_.empty()) evict_locked(entries_.find(lru_.front()));
  LOG_INFO("content cache %s: %zu files, %llu bytes of %llu", options_.directory.c_str(),
           entries_.size(), static_cast<unsigned long long>(used_),
           static_cast<unsigned long long>(options_.max_bytes));
  return {};
}

void ChunkCache::evict_locked(std::unordered_map<std::string, Entry>::iterator it) {
  if (::unlink(data_path(it->first).c_str()) != 0 && errno != ENOENT) {
    LOG_WARNING("evicting %s: %s", data_path(it->first).c_str(), std::strerror(errno));
  }
  used_ -= it->second.disk_bytes + it->second.pending_bytes;
  pending_ -= it->second.pending_bytes;
  lru_.erase(it->second.lru);
  entries_.erase(it);
  stats_.evictions++;
}

Result<std::shared_ptr<CachedFile>> ChunkCache::load(const std::string& id, uint64_t size) {
  auto file = std::make_shared<CachedFile>(id, size, options_.chunk_size);
  Fd fd(::open(data_path(id).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return file;
    return make_error(errno, "cache file " + data_path(id) + ": " + std::strerror(errno));
  }
  futimens(fd.get(), nullptr);  // the mtime orders eviction after a restart
  std::vector<std::byte> slots(size_t{file->chunks} * kSlotSize);
  size_t got = read_full(fd.get(), slots.data(), slots.size(), size);
  for (uint32_t i = 0; i < file->chunks && (i + 1) * kSlotSize <= got; ++i) {
    const std::byte* slot = slots.data() + size_t{i} * kSlotSize;
    uint64_t index = get_u64_le(slot), hash = get_u64_le(slot + 8), check = get_u64_le(slot + 16);
    if (index == i && check == slot_check(index, hash, size, options_.chunk_size)) {
      file->state[i] = CachedFile::Unverified;
      file->hashes[i] = hash;
    }
  }
  file->fd = std::move(fd);
  return file;
}

Result<std::shared_ptr<CachedFile>> ChunkCache::pin(std::string_view key, uint64_t size) {
  std::string id = xxh3_128_hex(key);
  std::unique_lock lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    it = entries_.emplace(id, Entry{}).first;
    it->second.lru = lru_.insert(lru_.end(), id);
  } else {
    lru_.splice(lru_.end(), lru_, it->second.lru);
  }
  Entry& entry = it->second;
  if (!entry.file) {
    // Loading reads the slots from disk; pinning first keeps the entry from being evicted.
    entry.pins++;
    lock.unlock();
    auto loaded = load(id, size);
    lock.lock();
    Entry& again = entries_.at(id);
    if (!loaded) {
      again.pins--;
      return loaded.error();
    }
    if (!again.file) again.file = std::move(*loaded);
    return again.file;
  }
  entry.pins++;
  return entry.file;
}

bool ChunkCache::pin_existing(const std::shared_ptr<CachedFile>& file) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(file->id);
  if (it == entries_.end() || it->second.file != file) return false;
  it->second.pins++;
  return true;
}

void ChunkCache::release(const std::shared_ptr<CachedFile>& file) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(file->id);
  if (it == entries_.end()) return;
  if (--it->second.pins == 0) {
    it->second.file.reset();  // closes the data file once the last user drops it
    if (it->second.disk_bytes == 0 && it->second.pending_bytes == 0) {
      lru_.erase(it->second.lru);
      entries_.erase(it);
    }
  }
}

uint64_t ChunkCache::used_bytes() const {
  std::lock_guard lock(mutex_);
  return used_;
}

uint64_t ChunkCache::cached_bytes(const CachedFile& file) const {
  const CachedFile& f = file;
  std::lock_guard lock(f.mutex);
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < f.chunks; ++i) {
    if (f.state[i] == CachedFile::Unverified || f.state[i] == CachedFile::Verified) {
      bytes += f.chunk_length(i);
    }
  }
  return bytes;
}

uint64_t ChunkCache::disk_free() const {
  struct statvfs st {};
  if (::statvfs(options_.directory.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

bool ChunkCache::reserve(const std::string& id, uint64_t bytes, std::string& why) {
  uint64_t free_disk = disk_free();
  std::lock_guard lock(mutex_);
  auto self = entries_.find(id);
  if (self == entries_.end()) {
    why = "the file left the cache";
    return false;
  }
  // The disk may fill before the bound does (a small disk, other files on it): a fill must fit
  // the disk's free space too, minus what other fills reserved and have not written yet.
  auto over_bound = [&] { return used_ + bytes > options_.max_bytes; };
  auto disk_short = [&] {
    return free_disk != UINT64_MAX && free_disk < pending_ + bytes + kDiskSlack;
  };
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
          std::to_string(options_.max_bytes >> 20) + " MiB bound)";
    return false;
  }
  if (disk_short()) {
    why = "the cache disk is full (" + std::to_string(free_disk >> 10) + " KiB free, " +
          std::to_string(used_ >> 20) + " MiB cached, the rest in open files)";
    return false;
  }
  used_ += bytes;
  pending_ += bytes;
  self->second.pending_bytes += bytes;
  return true;
}

void ChunkCache::note_uncached(const std::string& why) {
  stats_.uncached_chunks++;
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(log_mutex_);
  uncached_since_log_++;
  if (now < next_no_room_log_) return;
  LOG_WARNING("content cache %s: %s: serving from the upstream without caching (%llu chunk(s) "
              "since the last such message)", options_.directory.c_str(), why.c_str(),
              static_cast<unsigned long long>(uncached_since_log_));
  uncached_since_log_ = 0;
  next_no_room_log_ = now + kNoRoomLogInterval;
}

void ChunkCache::settle(const std::string& id, uint64_t reserved, int fd) {
  uint64_t measured = fd >= 0 ? disk_bytes_of(fd) : 0;
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

bool ChunkCache::verify_chunk(CachedFile& file, uint32_t index) {
  size_t length = file.chunk_length(index);
  std::vector<std::byte> data(length);
  if (read_full(file.fd.get(), data.data(), length, file.chunk_offset(index)) != length) return false;
  return xxh3_64(std::span<const std::byte>(data)) == file.hashes[index];
}

Result<ChunkCache::Fill> ChunkCache::fetch_chunk(CachedFile& file, uint32_t index, const FetchFn& fetch,
                                                 std::vector<std::byte>& data, bool background) {
  size_t length = file.chunk_length(index);
  uint64_t offset = file.chunk_offset(index);
  // Disk blocks this fill may add: its data plus the block holding its slot. Reserved before
  // fetching, so read-ahead never fetches what it could not keep.
  uint64_t reserve_bytes = round_up(length, kBlock) + kBlock;
  std::string no_room;
  bool room = reserve(file.id, reserve_bytes, no_room);
  if (!room && background) return Fill::Skipped;
  auto unreserve = [&](int fd) {
    if (room) settle(file.id, reserve_bytes, fd);
  };

  data.resize(length);
  stats_.chunk_misses++;
  size_t done = 0;
  while (done < length) {
    auto got = fetch(offset + done, std::span(data).subspan(done));
    if (!got || *got == 0) {
      unreserve(file.fd.get());
      if (!got) return got.error();
      return make_error(EIO, "upstream file is shorter than its listing (" + std::to_string(offset + done) +
                                 " of " + std::to_string(file.size) + " bytes)");
    }
    done += *got;
  }
  uint64_t hash = xxh3_64(std::span<const std::byte>(data));

  Status written = make_error(ENOSPC, no_room);
  int fd = -1;
  if (room) {
    {
      std::lock_guard lock(file.mutex);
      if (!file.fd) {
        std::string path = data_path(file.id);
        std::error_code ec;
        std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
        file.fd.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
      }
      fd = file.fd.get();
    }
    written = fd < 0 ? Status(make_error(errno, std::strerror(errno))) : pwrite_all(fd, std::span(data.data(), length), offset);
    if (written) {
      std::byte slot[kSlotSize];
      put_u64_le(slot, index);
      put_u64_le(slot + 8, hash);
      put_u64_le(slot + 16, slot_check(index, hash, file.size, file.chunk_size));
      written = pwrite_all(fd, slot, file.size + uint64_t{index} * kSlotSize);
    }
    unreserve(fd);
    if (!written) {
      stats_.cache_write_errors++;
      written = make_error(written.error().code, "cannot write to the cache (" + written.error().message + ")");
    }
  }
  if (!written) note_uncached(written.error().message);
  std::lock_guard lock(file.mutex);
  if (!written) {
    file.spilled_index = index;
    file.spilled = data;
    return Fill::Uncached;
  }
  file.hashes[index] = hash;
  return Fill::Cached;
}

Result<ChunkCache::Fill> ChunkCache::ensure_chunk(CachedFile& file, uint32_t index,
                                                  const FetchFn& fetch,
                                                  std::vector<std::byte>& uncached, bool background) {
  std::unique_lock lock(file.mutex);
  bool waited = false;
  for (;;) {
    switch (file.state[index]) {
      case CachedFile::Verified:
        if (!waited) stats_.chunk_hits++;
        return Fill::Cached;
      case CachedFile::Busy: {
        if (!waited) stats_.merged_misses++;
        waited = true;
        uint64_t failures_before = file.failures;
        file.changed.wait(lock);
        if (file.state[index] == CachedFile::Absent && file.failures != failures_before &&
            file.failed_index == index && file.failed_error.code == ETIMEDOUT) {
          return file.failed_error;
        }
        continue;
      }
      case CachedFile::Unverified: {
        file.state[index] = CachedFile::Busy;
        lock.unlock();
        bool good = verify_chunk(file, index);
        lock.lock();
        file.state[index] = good ? CachedFile::Verified : CachedFile::Absent;
        file.changed.notify_all();
        if (!good) {
          stats_.verify_failures++;
          LOG_WARNING("cache file %s: chunk %u failed verification, refetching",
                      data_path(file.id).c_str(), index);
        }
        continue;
      }
      case CachedFile::Absent: {
        if (file.failed_index == index && file.failed_error.code == ETIMEDOUT &&
            std::chrono::steady_clock::now() - file.failed_at < kTimeoutHold) {
          return file.failed_error;
        }
        if (file.spilled_index == index) {
          if (background) return Fill::Skipped;
          stats_.chunk_hits++;
          uncached = file.spilled;
          return Fill::Uncached;
        }
        file.state[index] = CachedFile::Busy;
        lock.unlock();
        auto filled = fetch_chunk(file, index, fetch, uncached, background);
        lock.lock();
        file.state[index] = filled && *filled == Fill::Cached ? CachedFile::Verified : CachedFile::Absent;
        if (!filled) {
          file.failures++;
          file.failed_index = index;
          file.failed_error = filled.error();
          file.failed_at = std::chrono::steady_clock::now();
        }
        file.changed.notify_all();
        return filled;
      }
    }
  }
}

Result<ChunkCache::ReadReply> ChunkCache::read(CachedFile& file, uint64_t offset, size_t length,
                                               const FetchFn& fetch) {
  ReadReply reply;
  if (offset >= file.size || length == 0) return reply;
  length = static_cast<size_t>(std::min<uint64_t>(length, file.size - offset));
  auto first = static_cast<uint32_t>(offset / file.chunk_size);
  auto last = static_cast<uint32_t>((offset + length - 1) / file.chunk_size);
  std::vector<std::vector<std::byte>> uncached(last - first + 1);
  bool all_cached = true;
  for (uint32_t i = first; i <= last; ++i) {
    auto filled = ensure_chunk(file, i, fetch, uncached[i - first], false);
    if (!filled) return filled.error();
    if (*filled == Fill::Uncached) all_cached = false; else uncached[i - first].clear();
  }
  if (all_cached) {
    reply.fd = file.fd.get();
    reply.fd_offset = offset;
    reply.length = length;
    return reply;
  }
  reply.memory.resize(length);
  for (uint32_t i = first; i <= last; ++i) {
    uint64_t begin = std::max<uint64_t>(offset, file.chunk_offset(i));
    uint64_t end = std::min<uint64_t>(offset + length, file.chunk_offset(i) + file.chunk_length(i));
    std::byte* out = reply.memory.data() + (begin - offset);
    const auto& data = uncached[i - first];
    if (!data.empty()) {
      std::memcpy(out, data.data() + (begin - file.chunk_offset(i)), end - begin);
    } else if (read_full(file.fd.get(), out, end - begin, begin) != end - begin) {
      return make_error(EIO, "cache file " + data_path(file.id) + " shrank while being read");
    }
  }
  return reply;
}

void ChunkCache::prefetch(const std::shared_ptr<CachedFile>& file, uint64_t offset, unsigned chunks,
                          FetchFn fetch) {
  if (offset >= file->size) return;
  auto first = static_cast<uint32_t>(offset / file->chunk_size);
  uint32_t end = std::min<uint32_t>(file->chunks, first + chunks);
  for (uint32_t i = first; i < end; ++i) {
    {
      std::lock_guard lock(file->mutex);
      if (file->state[i] != CachedFile::Absent) continue;
    }
    auto pinned = pin_existing(file);
    if (!pinned) return;
    bool queued = workers_.submit([this, file, i, fetch] {
      std::vector<std::byte> scratch;
      auto filled = ensure_chunk(*file, i, fetch, scratch, true);
      if (filled && *filled == Fill::Cached) stats_.readahead_chunks++;
      release(file);
    });
    if (!queued) {
      release(file);
      return;
    }
  }
}

Status ChunkCache::fill(CachedFile& file, const FetchFn& fetch) {
  std::vector<std::byte> scratch;
  for (uint32_t i = 0; i < file.chunks; ++i) {
    auto filled = ensure_chunk(file, i, fetch, scratch, true);
    if (!filled) return filled.error();
    if (*filled != Fill::Cached) return make_error(ENOSPC, "the content cache has no room left");
  }
  return {};
}

ChunkCache::EvictReport ChunkCache::evict_all() {
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

ChunkCache::VerifyReport ChunkCache::verify_all() {
  VerifyReport report;
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mutex_);
    ids.assign(lru_.begin(), lru_.end());
  }
  for (const std::string& id : ids) {
    std::shared_ptr<CachedFile> file;
    {
      // A pin keeps the entry from being evicted while it is checked.
      std::lock_guard lock(mutex_);
      auto it = entries_.find(id);
      if (it == entries_.end()) continue;
      it->second.pins++;
      file = it->second.file;
    }
    bool keep = true;
    if (file) verify_loaded(*file, report); else keep = verify_on_disk(id, report);
    std::lock_guard lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) continue;
    if (!keep && it->second.pins == 1 && !it->second.file) {
      report.dropped_files++;
      evict_locked(it);
      continue;
    }
    if (--it->second.pins == 0 && !it->second.file && it->second.disk_bytes == 0 &&
        it->second.pending_bytes == 0) {
      lru_.erase(it->second.lru);
      entries_.erase(it);
    }
  }
  return report;
}

void ChunkCache::verify_loaded(CachedFile& file, VerifyReport& report) {
  report.files++;
  std::unique_lock lock(file.mutex);
  for (uint32_t i = 0; i < file.chunks; ++i) {
    uint8_t was = file.state[i];
    if (was != CachedFile::Unverified && was != CachedFile::Verified) continue;
    file.state[i] = CachedFile::Busy;
    lock.unlock();
    bool good = verify_chunk(file, i);
    lock.lock();
    report.chunks++;
    report.bytes += file.chunk_length(i);
    if (!good) {
      report.bad_chunks++;
      stats_.verify_failures++;
      (void)clear_slot(file.fd.get(), i, file.size, file.chunk_size);
      LOG_WARNING("cache file %s: chunk %u failed verification, dropped", data_path(file.id).c_str(), i);
    }
    file.state[i] = good ? was : uint8_t{CachedFile::Absent};
    file.changed.notify_all();
  }
}

bool ChunkCache::verify_on_disk(const std::string& id, VerifyReport& report) {
  Fd fd(::open(data_path(id).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return errno == ENOENT;  // nothing on disk: nothing to check
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return true;
  auto length = static_cast<uint64_t>(st.st_size);
  report.files++;
  // Find the size: the highest slot k ends the file, and its check binds the size.
  uint64_t size = 0;
  bool found = false;
  for (uint64_t k = 0; (k + 1) * kSlotSize <= length && !found; ++k) {
    uint64_t candidate = length - (k + 1) * kSlotSize;
    if ((candidate + options_.chunk_size - 1) / options_.chunk_size <= k) break;
    std::byte slot[kSlotSize];
    if (read_full(fd.get(), slot, kSlotSize, candidate + k * kSlotSize) != kSlotSize) break;
    uint64_t index = get_u64_le(slot), hash = get_u64_le(slot + 8), check = get_u64_le(slot + 16);
    if (index == k && (check == slot_check(index, hash, candidate, options_.chunk_size) ||
                       check == tombstone_check(index, candidate, options_.chunk_size))) {
      size = candidate;
      found = true;
    }
  }
  if (!found) {
    LOG_WARNING("cache file %s holds no valid chunk, dropped", data_path(id).c_str());
    return false;
  }
  CachedFile file(id, size, options_.chunk_size);
  std::vector<std::byte> slots(size_t{file.chunks} * kSlotSize);
  size_t got = read_full(fd.get(), slots.data(), slots.size(), size);
  std::vector<std::byte> data;
  for (uint32_t i = 0; i < file.chunks && (i + 1) * kSlotSize <= got; ++i) {
    const std::byte* slot = slots.data() + size_t{i} * kSlotSize;
    uint64_t index = get_u64_le(slot), hash = get_u64_le(slot + 8), check = get_u64_le(slot + 16);
    if (index != i || check != slot_check(index, hash, size, options_.chunk_size)) continue;
    size_t chunk = file.chunk_length(i);
    data.resize(chunk);
    bool good = read_full(fd.get(), data.data(), chunk, file.chunk_offset(i)) == chunk &&
                xxh3_64(std::span<const std::byte>(data)) == hash;
    report.chunks++;
    report.bytes += chunk;
    if (!good) {
      report.bad_chunks++;
      stats_.verify_failures++;
      (void)clear_slot(fd.get(), i, size, options_.chunk_size);
      LOG_WARNING("cache file %s: chunk %u failed verification, dropped", data_path(id).c_str(), i);
    }
  }
  return true;
}

}  // namespace lazystore
