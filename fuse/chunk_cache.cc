#include "chunk_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_set>

#include "chunk_file.h"
#include "hash.h"
#include "io.h"
#include "log.h"
#include "scope_exit.h"
#include "tree.h"

namespace lazystore {

// The state of one pinned file. Per-chunk state exists only for chunks that are cached or being
// filled, so a file's memory follows what the cache holds of it, not the length it claims.
class CachedFile {
 public:
  // A chunk with no entry in `chunks` is absent: not cached.
  enum class State : uint8_t { Unverified, Verified, Busy };
  struct Chunk {
    State state = State::Busy;
    uint64_t hash = 0;  // the xxh3 of its bytes, from its slot (Unverified, Verified)
  };
  static constexpr uint64_t kNone = UINT64_MAX;

  CachedFile(std::string id_, ChunkLayout layout_, std::shared_ptr<DescriptorPool> pool)
      : id(std::move(id_)), layout(layout_), slot(std::move(pool)) {}
  const Chunk* find(uint64_t index) const {
    auto it = chunks.find(index);
    return it == chunks.end() ? nullptr : &it->second;
  }

  const std::string id;
  const ChunkLayout layout;
  // The data file's descriptor, when it exists (the first fill creates it): open while in use
  // or recently used, else reopened on demand (ChunkCache::descriptor).
  DescriptorPool::Slot slot;

  mutable std::mutex mutex;  // guards everything below
  std::condition_variable changed;
  std::unordered_map<uint64_t, Chunk> chunks;
  // The data file the chunks are in (device, inode): a reopen that finds another file finds
  // the chunks gone (the file was removed or replaced outside lazystore).
  std::optional<std::pair<dev_t, ino_t>> identity;
  // Chunks with a background fill queued: read-ahead asks for each one once.
  std::unordered_set<uint64_t> queued;
  // The last chunk that had to be served uncached, so that the rest of a sequential read
  // through it does not fetch it again.
  uint64_t spilled_index = kNone;
  std::vector<std::byte> spilled;
  // The last failed fetch. When it timed out, the readers that waited for it get its error
  // instead of each fetching again in turn (one deadline per failure, not one per waiting
  // reader), and so do new readers of that chunk for kTimeoutHold (the kernel retries a failed
  // read-ahead at once: without it, one read() would wait out two deadlines). A quick failure
  // (a reset connection) is cheap to retry: waiters fetch again.
  uint64_t failures = 0;
  uint64_t failed_index = kNone;
  Error failed_error;
  std::chrono::steady_clock::time_point failed_at;
};

namespace {

constexpr uint64_t kBlock = 4096;
constexpr auto kNoRoomLogInterval = std::chrono::seconds(30);
constexpr auto kTimeoutHold = std::chrono::seconds(1);

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// A chunk one thread marked Busy to fetch or verify it. However that work ends (settled, an
// error, an exception), the chunk leaves Busy, to what it was unless settled, and the readers
// waiting for it are woken.
class BusyChunk {
 public:
  using State = CachedFile::State;

  // `lock` holds file.mutex and outlives this.
  BusyChunk(CachedFile& file, std::unique_lock<std::mutex>& lock, uint64_t index)
      : file_(file), lock_(lock), index_(index) {
    auto [it, inserted] = file.chunks.try_emplace(index);
    if (!inserted) before_ = it->second;
    it->second.state = State::Busy;
  }
  ~BusyChunk() {
    if (settled_) return;
    if (!lock_.owns_lock()) lock_.lock();
    if (before_)
      file_.chunks[index_] = *before_;
    else
      file_.chunks.erase(index_);
    file_.changed.notify_all();
  }
  BusyChunk(const BusyChunk&) = delete;
  BusyChunk& operator=(const BusyChunk&) = delete;

  // With the lock held: the chunk is `state` now, with the hash it has.
  void settle(State state) {
    file_.chunks.at(index_).state = state;
    end();
  }
  // With the lock held: the chunk is absent now.
  void settle_absent() {
    file_.chunks.erase(index_);
    end();
  }

 private:
  void end() {
    settled_ = true;
    file_.changed.notify_all();
  }

  CachedFile& file_;
  std::unique_lock<std::mutex>& lock_;
  const uint64_t index_;
  std::optional<CachedFile::Chunk> before_;
  bool settled_ = false;
};

// A chunk queued for a background fill, and the pin on its file: both end with the task, run
// or dropped unrun by a stopping pool.
class QueuedFill {
 public:
  QueuedFill(ChunkCache& cache, std::shared_ptr<CachedFile> file, uint64_t index)
      : cache(cache), file(std::move(file)), index(index) {}
  ~QueuedFill() {
    {
      std::lock_guard lock(file->mutex);
      file->queued.erase(index);
    }
    cache.release(file);
  }
  QueuedFill(const QueuedFill&) = delete;
  QueuedFill& operator=(const QueuedFill&) = delete;

  ChunkCache& cache;
  const std::shared_ptr<CachedFile> file;
  const uint64_t index;
};

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
  LOG_INFO("content cache %s: %zu files, %llu bytes of %llu; up to %zu data files kept open", options.directory.c_str(),
           cache->budget_.files(), static_cast<unsigned long long>(cache->budget_.used()),
           static_cast<unsigned long long>(options.max_bytes), cache->descriptors_->capacity());
  return cache;
}

ChunkCache::ChunkCache(ChunkCacheOptions options, DataDirectory directory, Stats& stats)
    : options_(std::move(options)),
      directory_(std::move(directory)),
      stats_(stats),
      descriptors_(DescriptorPool::make(
          options_.descriptors > 0 ? options_.descriptors : DescriptorPool::default_capacity(), &stats.cache_reopens)),
      budget_(
          options_.max_bytes, stats,
          [this](const std::string& id) {
            if (auto removed = directory_.remove(id); !removed) {
              LOG_WARNING("evicting: %s", removed.error().message.c_str());
            }
          },
          [this] { return directory_.free_bytes(); }) {}

ChunkCache::~ChunkCache() { workers_.stop(); }

Result<std::shared_ptr<CachedFile>> ChunkCache::load(const std::string& id, uint64_t size) {
  auto file = std::make_shared<CachedFile>(id, ChunkLayout{size, options_.chunk_size}, descriptors_);
  auto fd = directory_.open_file(id, false);
  if (!fd) {
    if (fd.error().code == ENOENT) return file;
    return fd.error();
  }
  struct stat st {};
  if (fstat(fd->get(), &st) != 0) return errno_error("cache file " + directory_.path_of(id));
  futimens(fd->get(), nullptr);  // the mtime orders eviction after a restart
  for (const ChunkSlot& slot : ChunkFile(fd->get(), file->layout).read_slots()) {
    file->chunks.emplace(slot.index, CachedFile::Chunk{CachedFile::State::Unverified, slot.hash});
  }
  file->identity = {st.st_dev, st.st_ino};
  descriptors_->adopt(file->slot, std::move(*fd));
  return file;
}

Result<DescriptorPool::Lease> ChunkCache::descriptor(CachedFile& file, bool create) {
  return descriptors_->acquire(file.slot, [&]() -> Result<Fd> {
    auto fd = directory_.open_file(file.id, create);
    std::optional<std::pair<dev_t, ino_t>> identity;
    if (fd) {
      struct stat st {};
      if (fstat(fd->get(), &st) != 0) return errno_error("cache file " + directory_.path_of(file.id));
      identity.emplace(st.st_dev, st.st_ino);
    } else if (fd.error().code != ENOENT) {
      return fd.error();
    }
    std::lock_guard lock(file.mutex);
    if (file.identity && file.identity != identity) {
      // Removed or replaced outside lazystore: what it held is gone. Chunks being filled now
      // go to the new file.
      size_t lost =
          std::erase_if(file.chunks, [](const auto& entry) { return entry.second.state != CachedFile::State::Busy; });
      LOG_WARNING("cache file %s was %s outside lazystore: %zu chunk(s) fetched again",
                  directory_.path_of(file.id).c_str(), identity ? "replaced" : "removed", lost);
    }
    file.identity = identity;
    if (!fd) return fd.error();
    return std::move(*fd);
  });
}

Result<std::shared_ptr<CachedFile>> ChunkCache::pin(std::string_view key, uint64_t size) {
  if (auto bounded = Tree::check_file_size(size, key); !bounded) return bounded.error();
  std::string id = xxh3_128_hex(key);
  std::unique_lock lock(mutex_);
  // Pinning first keeps the entry from being evicted while it loads.
  budget_.pin(id);
  if (auto it = loaded_.find(id); it != loaded_.end()) return it->second;
  // Loading reads the slots from disk, outside the lock.
  lock.unlock();
  ScopeExit unpin([this, &id] { release_id(id); });  // unless loaded: an error, an exception
  auto file = load(id, size);
  if (!file) return file.error();
  unpin.release();
  lock.lock();
  auto [it, inserted] = loaded_.emplace(id, std::move(*file));
  return it->second;
}

bool ChunkCache::pin_existing(const std::shared_ptr<CachedFile>& file) {
  std::lock_guard lock(mutex_);
  auto it = loaded_.find(file->id);
  if (it == loaded_.end() || it->second != file) return false;
  return budget_.pin_if_known(file->id);
}

void ChunkCache::release(const std::shared_ptr<CachedFile>& file) { release_id(file->id); }

void ChunkCache::release_id(const std::string& id) {
  std::lock_guard lock(mutex_);
  // The data file closes once the last user drops the file.
  if (budget_.unpin(id) == 0) loaded_.erase(id);
}

uint64_t ChunkCache::cached_bytes(const CachedFile& file) const {
  std::lock_guard lock(file.mutex);
  uint64_t bytes = 0;
  for (const auto& [index, chunk] : file.chunks) {
    if (chunk.state != CachedFile::State::Busy) bytes += file.layout.chunk_length(index);
  }
  return bytes;
}

void ChunkCache::note_uncached(const std::string& why) {
  stats_.uncached_chunks++;
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(log_mutex_);
  uncached_since_log_++;
  if (now < next_no_room_log_) return;
  LOG_WARNING(
      "content cache %s: %s: serving from the upstream without caching (%llu chunk(s) "
      "since the last such message)",
      options_.directory.c_str(), why.c_str(), static_cast<unsigned long long>(uncached_since_log_));
  uncached_since_log_ = 0;
  next_no_room_log_ = now + kNoRoomLogInterval;
}

Result<ChunkCache::Fill> ChunkCache::fetch_chunk(CachedFile& file, uint64_t index, const FetchFn& fetch,
                                                 std::vector<std::byte>& data, bool background) {
  size_t length = file.layout.chunk_length(index);
  uint64_t offset = file.layout.chunk_offset(index);
  // Disk blocks this fill may add: its data plus the block holding its slot. Reserved before
  // fetching, so read-ahead never fetches what it could not keep.
  uint64_t reserve_bytes = round_up(length, kBlock) + kBlock;
  std::string no_room;
  bool room = budget_.reserve(file.id, reserve_bytes, no_room);
  if (!room && background) return Fill::Skipped;
  // The reservation ends on every path, an exception included: measured once written, else
  // given back.
  ScopeExit unreserve([&] {
    if (room) budget_.cancel(file.id, reserve_bytes);
  });

  data.resize(length);
  stats_.chunk_misses++;
  size_t done = 0;
  while (done < length) {
    auto got = fetch(offset + done, std::span(data).subspan(done));
    if (!got || *got == 0) {
      if (!got) return got.error();
      return make_error(EIO, "upstream file is shorter than its listing (" + std::to_string(offset + done) + " of " +
                                 std::to_string(file.layout.size) + " bytes)");
    }
    done += *got;
  }
  uint64_t hash = xxh3_64(std::span<const std::byte>(data));

  Status written = make_error(ENOSPC, no_room);
  if (room) {
    auto lease = descriptor(file, true);
    if (lease) {
      written = ChunkFile((*lease)->get(), file.layout).write_chunk(index, data, hash);
      unreserve.release();
      budget_.settle(file.id, reserve_bytes, ChunkFile::disk_bytes((*lease)->get()));
    } else {
      written = lease.error();
    }
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
  file.chunks.at(index).hash = hash;
  return Fill::Cached;
}

Result<ChunkCache::Fill> ChunkCache::ensure_chunk(CachedFile& file, uint64_t index, const FetchFn& fetch,
                                                  std::vector<std::byte>& uncached, bool background) {
  using State = CachedFile::State;
  std::unique_lock lock(file.mutex);
  bool waited = false;
  std::chrono::steady_clock::time_point deadline;
  for (;;) {
    auto it = file.chunks.find(index);
    if (it == file.chunks.end()) {  // absent
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
      BusyChunk busy(file, lock, index);
      lock.unlock();
      auto filled = fetch_chunk(file, index, fetch, uncached, background);
      lock.lock();
      if (filled && *filled == Fill::Cached)
        busy.settle(State::Verified);
      else
        busy.settle_absent();
      if (!filled) {
        file.failures++;
        file.failed_index = index;
        file.failed_error = filled.error();
        file.failed_at = std::chrono::steady_clock::now();
      }
      return filled;
    }
    switch (it->second.state) {
      case State::Verified:
        if (!waited) stats_.chunk_hits++;
        return Fill::Cached;
      case State::Busy: {
        if (!waited) {
          stats_.merged_misses++;
          deadline = std::chrono::steady_clock::now() + options_.wait_timeout;
        }
        waited = true;
        uint64_t failures_before = file.failures;
        bool timed_out = file.changed.wait_until(lock, deadline) == std::cv_status::timeout;
        const CachedFile::Chunk* now = file.find(index);
        if (!now && file.failures != failures_before && file.failed_index == index &&
            file.failed_error.code == ETIMEDOUT) {
          return file.failed_error;
        }
        if (timed_out && now && now->state == State::Busy) {
          return make_error(ETIMEDOUT, "waited " + std::to_string(options_.wait_timeout.count()) +
                                           " ms for another fetch of chunk " + std::to_string(index) +
                                           " of cache file " + directory_.path_of(file.id));
        }
        continue;
      }
      case State::Unverified: {
        uint64_t hash = it->second.hash;
        BusyChunk busy(file, lock, index);
        lock.unlock();
        auto lease = descriptor(file, false);
        bool good = lease && ChunkFile((*lease)->get(), file.layout).verify_chunk(index, hash);
        lock.lock();
        if (good)
          busy.settle(State::Verified);
        else
          busy.settle_absent();
        if (!good) {
          stats_.verify_failures++;
          LOG_WARNING("cache file %s: chunk %llu failed verification, refetching", directory_.path_of(file.id).c_str(),
                      static_cast<unsigned long long>(index));
        }
        continue;
      }
    }
  }
}

Result<ChunkCache::ReadReply> ChunkCache::read(CachedFile& file, uint64_t offset, size_t length, const FetchFn& fetch) {
  const ChunkLayout& layout = file.layout;
  if (offset >= layout.size || length == 0) return ReadReply{};
  length = static_cast<size_t>(std::min<uint64_t>(length, layout.size - offset));
  uint64_t first = layout.chunk_of(offset), last = layout.chunk_of(offset + length - 1);
  for (int attempt = 0; attempt < 3; ++attempt) {
    // Leased first: the chunks found or filled below are in the file this descriptor reads.
    DescriptorPool::Lease lease;
    if (auto early = descriptor(file, false)) {
      lease = *early;
    } else if (early.error().code != ENOENT) {  // ENOENT: no data file yet, a fill creates it
      return early.error();
    }
    std::vector<std::vector<std::byte>> uncached(static_cast<size_t>(last - first + 1));
    bool all_cached = true, any_cached = false;
    for (uint64_t i = first; i <= last; ++i) {
      auto filled = ensure_chunk(file, i, fetch, uncached[i - first], false);
      if (!filled) return filled.error();
      if (*filled == Fill::Uncached) {
        all_cached = false;
      } else {
        any_cached = true;
        uncached[i - first].clear();
      }
    }
    if (any_cached && !lease) {
      // The data file was created by a fill above: lease it now, and make sure it still holds
      // those chunks (it could have been replaced in between).
      auto late = descriptor(file, false);
      if (!late) return late.error();
      lease = *late;
      std::lock_guard lock(file.mutex);
      bool kept = true;
      for (uint64_t i = first; i <= last && kept; ++i) {
        if (uncached[i - first].empty()) kept = file.find(i) != nullptr;
      }
      if (!kept) continue;
    }
    ReadReply reply;
    if (all_cached) {
      reply.fd = lease->get();
      reply.fd_offset = offset;
      reply.length = length;
      reply.lease = std::move(lease);
      return reply;
    }
    reply.memory.resize(length);
    for (uint64_t i = first; i <= last; ++i) {
      uint64_t begin = std::max<uint64_t>(offset, layout.chunk_offset(i));
      uint64_t end = std::min<uint64_t>(offset + length, layout.chunk_offset(i) + layout.chunk_length(i));
      std::byte* out = reply.memory.data() + (begin - offset);
      const auto& data = uncached[i - first];
      if (!data.empty()) {
        std::memcpy(out, data.data() + (begin - layout.chunk_offset(i)), end - begin);
      } else if (ChunkFile(lease->get(), layout).read(out, end - begin, begin) != end - begin) {
        return make_error(EIO, "cache file " + directory_.path_of(file.id) + " shrank while being read");
      }
    }
    return reply;
  }
  return make_error(EIO, "cache file " + directory_.path_of(file.id) + " keeps being replaced");
}

void ChunkCache::prefetch(const std::shared_ptr<CachedFile>& file, uint64_t offset, unsigned chunks, FetchFn fetch) {
  if (offset >= file->layout.size) return;
  uint64_t first = file->layout.chunk_of(offset);
  uint64_t end = std::min<uint64_t>(file->layout.chunks(), first + chunks);
  for (uint64_t i = first; i < end; ++i) {
    {
      std::lock_guard lock(file->mutex);
      if (file->find(i) || !file->queued.insert(i).second) continue;
    }
    ScopeExit unmark([&] {
      std::lock_guard lock(file->mutex);
      file->queued.erase(i);
    });
    if (!pin_existing(file)) return;
    ScopeExit unpin([&] { release(file); });
    auto queued = std::make_shared<QueuedFill>(*this, file, i);
    unpin.release();
    unmark.release();  // both are the QueuedFill's now
    bool taken = workers_.submit([this, queued, fetch] {
      std::vector<std::byte> scratch;
      auto filled = ensure_chunk(*queued->file, queued->index, fetch, scratch, true);
      if (filled && *filled == Fill::Cached) stats_.readahead_chunks++;
    });
    if (!taken) return;
  }
}

Status ChunkCache::fill(CachedFile& file, const FetchFn& fetch) {
  std::vector<std::byte> scratch;
  for (uint64_t i = 0; i < file.layout.chunks(); ++i) {
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
    ScopeExit unpin([this, &id] { release_id(id); });
    bool keep = true;
    if (file)
      verify_loaded(*file, report);
    else
      keep = verify_on_disk(id, report);
    std::lock_guard lock(mutex_);
    if (!keep && !loaded_.contains(id) && budget_.evict_if_only_pin(id)) {
      report.dropped_files++;
      unpin.release();
    }
  }
  return report;
}

void ChunkCache::verify_loaded(CachedFile& file, VerifyReport& report) {
  using State = CachedFile::State;
  report.files++;
  std::unique_lock lock(file.mutex);
  std::vector<uint64_t> indices;
  for (const auto& [index, chunk] : file.chunks) {
    if (chunk.state != State::Busy) indices.push_back(index);
  }
  std::sort(indices.begin(), indices.end());
  for (uint64_t i : indices) {
    auto it = file.chunks.find(i);
    if (it == file.chunks.end() || it->second.state == State::Busy) continue;
    State was = it->second.state;
    uint64_t hash = it->second.hash;
    BusyChunk busy(file, lock, i);
    lock.unlock();
    auto lease = descriptor(file, false);
    bool good = lease && ChunkFile((*lease)->get(), file.layout).verify_chunk(i, hash);
    if (!good && lease) (void)ChunkFile((*lease)->get(), file.layout).clear_slot(i);
    lock.lock();
    report.chunks++;
    report.bytes += file.layout.chunk_length(i);
    if (good) {
      busy.settle(was);
    } else {
      report.bad_chunks++;
      stats_.verify_failures++;
      busy.settle_absent();
      LOG_WARNING("cache file %s: chunk %llu failed verification, dropped", directory_.path_of(file.id).c_str(),
                  static_cast<unsigned long long>(i));
    }
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
