#include "chunk_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "chunk_file.h"
#include "hash.h"
#include "log.h"

namespace lazystore {

class CachedFile {
 public:
  enum State : uint8_t { Absent, Unverified, Verified, Busy };

  CachedFile(std::string id_, uint64_t size_, uint32_t chunk_size_)
      : id(std::move(id_)), size(size_), chunk_size(chunk_size_), layout{size_, chunk_size_},
        chunks(static_cast<uint32_t>((size_ + chunk_size_ - 1) / chunk_size_)),
        state(chunks, Absent), hashes(chunks, 0) {}

  uint64_t chunk_offset(uint32_t index) const { return layout.chunk_offset(index); }
  size_t chunk_length(uint32_t index) const { return layout.chunk_length(index); }
  ChunkFile data() const { return ChunkFile(fd.get(), layout); }

  const std::string id;
  const uint64_t size;
  const uint32_t chunk_size;
  const ChunkLayout layout;
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

constexpr uint64_t kBlock = 4096;
constexpr auto kNoRoomLogInterval = std::chrono::seconds(30);
constexpr auto kTimeoutHold = std::chrono::seconds(1);

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

}  // namespace

Result<std::unique_ptr<ChunkCache>> ChunkCache::open(const ChunkCacheOptions& options, Stats& stats) {
  auto directory = DataDirectory::open(options.directory);
  if (!directory) return directory.error();
  auto found = directory->scan();
  if (!found) return found.error();
  std::unique_ptr<ChunkCache> cache(new ChunkCache(options, std::move(*directory), stats));
  std::vector<CacheBudget::Existing> existing;
  existing.reserve(found->size());
  for (const auto& f : *found) existing.push_back({f.id, f.bytes});
  cache->budget_.add_existing(existing);
  LOG_INFO("content cache %s: %zu files, %llu bytes of %llu", options.directory.c_str(),
           cache->budget_.files(), static_cast<unsigned long long>(cache->budget_.used()),
           static_cast<unsigned long long>(options.max_bytes));
  return cache;
}

ChunkCache::ChunkCache(ChunkCacheOptions options, DataDirectory directory, Stats& stats)
    : options_(std::move(options)),
      directory_(std::move(directory)),
      stats_(stats),
      budget_(options_.max_bytes, stats, [this](const std::string& id) {
                if (auto removed = directory_.remove(id); !removed) {
                  LOG_WARNING("evicting: %s", removed.error().message.c_str());
                }
              },
              [this] { return directory_.free_bytes(); }) {}

ChunkCache::~ChunkCache() { workers_.stop(); }

Result<std::shared_ptr<CachedFile>> ChunkCache::load(const std::string& id, uint64_t size) {
  auto file = std::make_shared<CachedFile>(id, size, options_.chunk_size);
  auto fd = directory_.open_file(id, false);
  if (!fd) {
    if (fd.error().code == ENOENT) return file;
    return fd.error();
  }
  futimens(fd->get(), nullptr);  // the mtime orders eviction after a restart
  for (const ChunkSlot& slot : ChunkFile(fd->get(), file->layout).read_slots()) {
    file->state[slot.index] = CachedFile::Unverified;
    file->hashes[slot.index] = slot.hash;
  }
  file->fd = std::move(*fd);
  return file;
}

Result<std::shared_ptr<CachedFile>> ChunkCache::pin(std::string_view key, uint64_t size) {
  std::string id = xxh3_128_hex(key);
  std::unique_lock lock(mutex_);
  // Pinning first keeps the entry from being evicted while it loads.
  budget_.pin(id);
  if (auto it = loaded_.find(id); it != loaded_.end()) return it->second;
  // Loading reads the slots from disk, outside the lock.
  lock.unlock();
  auto file = load(id, size);
  lock.lock();
  if (!file) {
    if (budget_.unpin(id) == 0) loaded_.erase(id);
    return file.error();
  }
  auto [it, inserted] = loaded_.emplace(id, std::move(*file));
  return it->second;
}

bool ChunkCache::pin_existing(const std::shared_ptr<CachedFile>& file) {
  std::lock_guard lock(mutex_);
  auto it = loaded_.find(file->id);
  if (it == loaded_.end() || it->second != file) return false;
  return budget_.pin_if_known(file->id);
}

void ChunkCache::release(const std::shared_ptr<CachedFile>& file) {
  std::lock_guard lock(mutex_);
  // The data file closes once the last user drops the file.
  if (budget_.unpin(file->id) == 0) loaded_.erase(file->id);
}

uint64_t ChunkCache::cached_bytes(const CachedFile& file) const {
  std::lock_guard lock(file.mutex);
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < file.chunks; ++i) {
    if (file.state[i] == CachedFile::Unverified || file.state[i] == CachedFile::Verified) {
      bytes += file.chunk_length(i);
    }
  }
  return bytes;
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

bool ChunkCache::verify_chunk(CachedFile& file, uint32_t index) {
  return file.data().verify_chunk(index, file.hashes[index]);
}

Result<ChunkCache::Fill> ChunkCache::fetch_chunk(CachedFile& file, uint32_t index, const FetchFn& fetch,
                                                 std::vector<std::byte>& data, bool background) {
  size_t length = file.chunk_length(index);
  uint64_t offset = file.chunk_offset(index);
  // Disk blocks this fill may add: its data plus the block holding its slot. Reserved before
  // fetching, so read-ahead never fetches what it could not keep.
  uint64_t reserve_bytes = round_up(length, kBlock) + kBlock;
  std::string no_room;
  bool room = budget_.reserve(file.id, reserve_bytes, no_room);
  if (!room && background) return Fill::Skipped;
  auto unreserve = [&](int fd) {
    if (room) budget_.settle(file.id, reserve_bytes, fd >= 0 ? ChunkFile::disk_bytes(fd) : 0);
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
        auto created = directory_.open_file(file.id, true);
        if (created) file.fd = std::move(*created); else written = created.error();
      }
      fd = file.fd.get();
    }
    if (fd >= 0) written = ChunkFile(fd, file.layout).write_chunk(index, data, hash);
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
                      directory_.path_of(file.id).c_str(), index);
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
    } else if (file.data().read(out, end - begin, begin) != end - begin) {
      return make_error(EIO, "cache file " + directory_.path_of(file.id) + " shrank while being read");
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

ChunkCache::VerifyReport ChunkCache::verify_all() {
  VerifyReport report;
  for (const std::string& id : budget_.ids()) {
    std::shared_ptr<CachedFile> file;
    {
      // A pin keeps the entry from being evicted while it is checked.
      std::lock_guard lock(mutex_);
      if (!budget_.pin_if_known(id)) continue;
      if (auto it = loaded_.find(id); it != loaded_.end()) file = it->second;
    }
    bool keep = true;
    if (file) verify_loaded(*file, report); else keep = verify_on_disk(id, report);
    std::lock_guard lock(mutex_);
    if (!keep && !loaded_.contains(id) && budget_.evict_if_only_pin(id)) {
      report.dropped_files++;
      continue;
    }
    if (budget_.unpin(id) == 0) loaded_.erase(id);
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
      (void)file.data().clear_slot(i);
      LOG_WARNING("cache file %s: chunk %u failed verification, dropped",
                  directory_.path_of(file.id).c_str(), i);
    }
    file.state[i] = good ? was : uint8_t{CachedFile::Absent};
    file.changed.notify_all();
  }
}

bool ChunkCache::verify_on_disk(const std::string& id, VerifyReport& report) {
  auto fd = directory_.open_file(id, false);
  if (!fd) return fd.error().code == ENOENT;  // nothing on disk: nothing to check
  report.files++;
  auto size = ChunkFile::recover_size(fd->get(), options_.chunk_size);
  if (!size) {
    LOG_WARNING("cache file %s holds no valid chunk, dropped", directory_.path_of(id).c_str());
    return false;
  }
  ChunkLayout layout{*size, options_.chunk_size};
  ChunkFile data(fd->get(), layout);
  for (const ChunkSlot& slot : data.read_slots()) {
    bool good = data.verify_chunk(slot.index, slot.hash);
    report.chunks++;
    report.bytes += layout.chunk_length(slot.index);
    if (!good) {
      report.bad_chunks++;
      stats_.verify_failures++;
      (void)data.clear_slot(slot.index);
      LOG_WARNING("cache file %s: chunk %llu failed verification, dropped", directory_.path_of(id).c_str(),
                  static_cast<unsigned long long>(slot.index));
    }
  }
  return true;
}

}  // namespace lazystore
