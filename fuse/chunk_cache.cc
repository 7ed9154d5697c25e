#include "chunk_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
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

// The state of one pinned file. Per-block state exists only for groups of blocks of which some
// are cached or being filled, so a file's memory follows what the cache holds of it, not the
// length it claims.
class CachedFile {
 public:
  enum class State : uint8_t { Absent, Unverified, Verified, Busy };
  struct Block {
    State state = State::Absent;
    uint64_t hash = 0;  // the xxh3 of its bytes, from its slot (Unverified, Verified)
  };
  static constexpr uint64_t kNone = UINT64_MAX;
  static constexpr uint64_t kGroup = 256;  // blocks per entry of `groups` (1 MiB)

  CachedFile(std::string id_, ChunkLayout layout_, uint64_t blocks_per_chunk_, std::shared_ptr<DescriptorPool> pool)
      : id(std::move(id_)), layout(layout_), blocks_per_chunk(blocks_per_chunk_), slot(std::move(pool)) {}

  // With `mutex` held, these two read and change one block's state.
  Block block(uint64_t index) const {
    auto it = groups.find(index / kGroup);
    if (it == groups.end()) return {};
    return {it->second.state[index % kGroup], it->second.hash[index % kGroup]};
  }
  void set(uint64_t index, Block value) {
    auto it = groups.find(index / kGroup);
    if (it == groups.end()) {
      if (value.state == State::Absent) return;
      it = groups.try_emplace(index / kGroup).first;
    }
    Group& group = it->second;
    State& state = group.state[index % kGroup];
    group.used += static_cast<int>(value.state != State::Absent) - static_cast<int>(state != State::Absent);
    state = value.state;
    group.hash[index % kGroup] = value.hash;
    if (group.used == 0) groups.erase(it);
  }
  // Calls f(index, block) for every block that is not Absent, in no particular order.
  template <class F>
  void for_each(F f) const {
    for (const auto& [g, group] : groups) {
      for (uint64_t i = 0; i < kGroup; ++i) {
        if (group.state[i] != State::Absent) f(g * kGroup + i, Block{group.state[i], group.hash[i]});
      }
    }
  }
  // One lookup per group, not per block: read-ahead asks this of every chunk ahead on each read.
  bool any_absent(uint64_t first, uint64_t end) const {
    for (uint64_t g = first / kGroup; first < end; ++g) {
      uint64_t stop = std::min(end, (g + 1) * kGroup);
      auto it = groups.find(g);
      if (it == groups.end()) return true;
      for (uint64_t i = first; i < stop; ++i) {
        if (it->second.state[i % kGroup] == State::Absent) return true;
      }
      first = stop;
    }
    return false;
  }
  bool failed_at_timeout(uint64_t index) const {
    return index >= failed_first && index < failed_end && failed_error.code == ETIMEDOUT;
  }

  const std::string id;
  const ChunkLayout layout;  // of the data file: its unit is a block
  const uint64_t blocks_per_chunk;
  // The data file's descriptor, when it exists (the first fill creates it): open while in use
  // or recently used, else reopened on demand (ChunkCache::descriptor).
  DescriptorPool::Slot slot;

  // Held around writes to the data file: the kernel serialises writers of one inode anyway, and
  // its lock spins (a third of the daemon's CPU in a cold stream, four fills writing at once).
  std::mutex write_mutex;

  mutable std::mutex mutex;  // guards everything below
  std::condition_variable changed;
  // The data file the blocks are in (device, inode): a reopen that finds another file finds
  // the blocks gone (the file was removed or replaced outside lazystore).
  std::optional<std::pair<dev_t, ino_t>> identity;
  // Chunks with a background fill queued: read-ahead asks for each one once.
  std::unordered_set<uint64_t> queued;
  // The last run of blocks that had to be served uncached, so that the rest of a sequential
  // read through it does not fetch it again.
  uint64_t spilled_first = kNone;
  std::vector<std::byte> spilled;
  // The last failed fetch, of blocks [failed_first, failed_end). When it timed out, the readers
  // that waited for it get its error instead of each fetching again in turn (one deadline per
  // failure, not one per waiting reader), and so do new readers of those blocks for
  // kTimeoutHold (the kernel retries a failed read-ahead at once: without it, one read() would
  // wait out two deadlines). A quick failure (a reset connection) is cheap to retry: waiters
  // fetch again.
  uint64_t failures = 0;
  uint64_t failed_first = kNone, failed_end = kNone;
  Error failed_error;
  std::chrono::steady_clock::time_point failed_at;

 private:
  struct Group {
    std::array<State, kGroup> state{};
    std::array<uint64_t, kGroup> hash{};
    int used = 0;  // blocks not Absent
  };
  std::unordered_map<uint64_t, Group> groups;
};

namespace {

constexpr uint64_t kBlock = ChunkCache::kBlockSize;
constexpr auto kNoRoomLogInterval = std::chrono::seconds(30);
constexpr auto kTimeoutHold = std::chrono::seconds(1);
// A data file up to this size is read ahead whole when loaded (see load).
constexpr off_t kReadAheadWholeFile = 1 << 20;

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// Blocks [first, end) one thread marked Busy to fetch or verify them. However that work ends
// (settled, an error, an exception), they leave Busy, to what they were unless settled, and the
// readers waiting for them are woken.
class BusyRun {
 public:
  using Block = CachedFile::Block;
  using State = CachedFile::State;

  // `lock` holds file.mutex and outlives this.
  BusyRun(CachedFile& file, std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t end)
      : file_(file), lock_(lock), first_(first) {
    before_.reserve(static_cast<size_t>(end - first));
    for (uint64_t i = first; i < end; ++i) {
      Block b = file.block(i);
      before_.push_back(b);
      file.set(i, {State::Busy, b.hash});
    }
  }
  ~BusyRun() {
    if (settled_) return;
    if (!lock_.owns_lock()) lock_.lock();
    for (size_t i = 0; i < before_.size(); ++i) file_.set(first_ + i, before_[i]);
    file_.changed.notify_all();
  }
  BusyRun(const BusyRun&) = delete;
  BusyRun& operator=(const BusyRun&) = delete;

  const std::vector<Block>& before() const { return before_; }
  // With the lock held: the blocks are Verified now, with these hashes.
  void settle_verified(std::span<const uint64_t> hashes) {
    for (size_t i = 0; i < before_.size(); ++i) file_.set(first_ + i, {State::Verified, hashes[i]});
    end();
  }
  // With the lock held: the blocks are absent now.
  void settle_absent() {
    for (size_t i = 0; i < before_.size(); ++i) file_.set(first_ + i, {});
    end();
  }
  // With the lock held: block i of the run is absent unless good, else Verified if `verified`,
  // or what it was.
  void settle_checked(const std::vector<bool>& good, bool verified) {
    for (size_t i = 0; i < before_.size(); ++i) {
      Block b = before_[i];
      if (verified) b.state = State::Verified;
      file_.set(first_ + i, good[i] ? b : Block{});
    }
    end();
  }

 private:
  void end() {
    settled_ = true;
    file_.changed.notify_all();
  }

  CachedFile& file_;
  std::unique_lock<std::mutex>& lock_;
  const uint64_t first_;
  std::vector<Block> before_;
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
  auto file =
      std::make_shared<CachedFile>(id, ChunkLayout{size, kBlockSize}, options_.chunk_size / kBlockSize, descriptors_);
  auto fd = directory_.open_file(id, false);
  if (!fd) {
    if (fd.error().code == ENOENT) return file;
    return fd.error();
  }
  struct stat st {};
  if (fstat(fd->get(), &st) != 0) return errno_error("cache file " + directory_.path_of(id));
  futimens(fd->get(), nullptr);  // the mtime orders eviction after a restart
  // A small file's slots sit right after its bytes, which the read that loads it wants next:
  // one disk read for both instead of two after each other (a cold page cache, a restart).
  if (st.st_size <= kReadAheadWholeFile) {
    (void)posix_fadvise(fd->get(), 0, st.st_size, POSIX_FADV_WILLNEED);
  }
  for (const ChunkSlot& slot : ChunkFile(fd->get(), file->layout).read_slots()) {
    file->set(slot.index, {CachedFile::State::Unverified, slot.hash});
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
      // Removed or replaced outside lazystore: what it held is gone. Blocks being filled now
      // go to the new file.
      std::vector<uint64_t> gone;
      file.for_each([&](uint64_t index, CachedFile::Block b) {
        if (b.state != CachedFile::State::Busy) gone.push_back(index);
      });
      for (uint64_t index : gone) file.set(index, {});
      size_t lost = gone.size();
      LOG_WARNING("cache file %s was %s outside lazystore: %zu block(s) fetched again",
                  directory_.path_of(file.id).c_str(), identity ? "replaced" : "removed", lost);
    }
    file.identity = identity;
    if (!fd) return fd.error();
    return std::move(*fd);
  });
}

std::string ChunkCache::id_of(std::string_view key) {
  std::string id = xxh3_128_hex(key);
  std::string store = xxh3_128_hex(key.substr(0, key.find('/')));
  id[0] = store[0];
  id[1] = store[1];
  return id;
}

Result<std::shared_ptr<CachedFile>> ChunkCache::pin(std::string_view key, uint64_t size) {
  if (auto bounded = Tree::check_file_size(size, key); !bounded) return bounded.error();
  std::string id = id_of(key);
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
  file.for_each([&](uint64_t index, CachedFile::Block b) {
    if (b.state != CachedFile::State::Busy) bytes += file.layout.chunk_length(index);
  });
  return bytes;
}

std::pair<uint64_t, uint64_t> ChunkCache::blocks_of_chunk(const CachedFile& file, uint64_t index) const {
  uint64_t first = index * file.blocks_per_chunk;
  return {first, std::min(file.layout.chunks(), first + file.blocks_per_chunk)};
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

Result<ChunkCache::Fill> ChunkCache::fetch_run(CachedFile& file, uint64_t first, uint64_t end, const FetchFn& fetch,
                                               std::vector<std::byte>& data, std::vector<uint64_t>& hashes,
                                               bool background) {
  const ChunkLayout& layout = file.layout;
  uint64_t offset = layout.chunk_offset(first);
  auto length = static_cast<size_t>(layout.chunk_offset(end - 1) + layout.chunk_length(end - 1) - offset);
  // Disk blocks this fill may add: its data plus the blocks holding its slots. Reserved before
  // fetching, so read-ahead never fetches what it could not keep.
  uint64_t reserve_bytes = round_up(length, kBlock) + round_up((end - first) * ChunkLayout::kSlotSize, kBlock) + kBlock;
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
                                 std::to_string(layout.size) + " bytes)");
    }
    done += *got;
  }
  hashes.resize(static_cast<size_t>(end - first));
  for (uint64_t i = first; i < end; ++i) {
    auto bytes = std::span<const std::byte>(data).subspan(static_cast<size_t>(layout.chunk_offset(i) - offset),
                                                          layout.chunk_length(i));
    hashes[i - first] = xxh3_64(bytes);
  }

  Status written = make_error(ENOSPC, no_room);
  if (room) {
    auto lease = descriptor(file, true);
    if (lease) {
      {
        std::lock_guard serial(file.write_mutex);
        written = ChunkFile((*lease)->get(), layout).write_run(first, data, hashes);
      }
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
  if (!written) {
    note_uncached(written.error().message);
    return Fill::Uncached;
  }
  return Fill::Cached;
}

std::vector<bool> ChunkCache::check_run(CachedFile& file, std::unique_lock<std::mutex>& lock, uint64_t first,
                                        uint64_t end, bool promote) {
  BusyRun busy(file, lock, first, end);
  std::vector<uint64_t> hashes;
  for (const auto& b : busy.before()) hashes.push_back(b.hash);
  lock.unlock();
  std::vector<bool> good(hashes.size(), false);
  if (auto lease = descriptor(file, false)) {
    ChunkFile data((*lease)->get(), file.layout);
    good = data.verify_run(first, hashes);
    for (size_t i = 0; i < good.size(); ++i) {
      // A tombstone: the bad slot is no slot after a restart either.
      if (!good[i]) (void)data.clear_slot(first + i);
    }
  }
  lock.lock();
  busy.settle_checked(good, promote);
  return good;
}

void ChunkCache::verify_run(CachedFile& file, std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t end) {
  auto good = check_run(file, lock, first, end, true);
  auto bad = static_cast<size_t>(std::count(good.begin(), good.end(), false));
  if (bad > 0) {
    stats_.verify_failures += bad;
    LOG_WARNING("cache file %s: %zu block(s) from %llu failed verification, refetching",
                directory_.path_of(file.id).c_str(), bad, static_cast<unsigned long long>(first));
  }
}

Result<ChunkCache::Fill> ChunkCache::ensure(CachedFile& file, BlockSpan need, BlockSpan reach, const FetchFn& fetch,
                                            std::vector<Spill>& uncached, bool background) {
  using State = CachedFile::State;
  Fill result = Fill::Cached;
  bool fetched = false, waited = false;
  std::chrono::steady_clock::time_point deadline;
  std::unique_lock lock(file.mutex);
  for (uint64_t b = need.first; b < need.end;) {
    State state = file.block(b).state;
    if (state == State::Verified) {
      ++b;
      continue;
    }
    if (state == State::Busy) {
      if (!waited) {
        stats_.merged_misses++;
        deadline = std::chrono::steady_clock::now() + options_.wait_timeout;
      }
      waited = true;
      uint64_t failures_before = file.failures;
      bool timed_out = file.changed.wait_until(lock, deadline) == std::cv_status::timeout;
      State now = file.block(b).state;
      if (now == State::Absent && file.failures != failures_before && file.failed_at_timeout(b)) {
        return file.failed_error;
      }
      if (timed_out && now == State::Busy) {
        return make_error(ETIMEDOUT, "waited " + std::to_string(options_.wait_timeout.count()) +
                                         " ms for another fetch of block " + std::to_string(b) + " of cache file " +
                                         directory_.path_of(file.id));
      }
      continue;
    }
    // A run of blocks in this state from b on: one verification, or one fetch (which reaches
    // over the absent blocks around it, up to `reach`).
    uint64_t run_end = b + 1;
    const uint64_t limit = state == State::Absent ? reach.end : need.end;
    while (run_end < limit && file.block(run_end).state == state) ++run_end;
    if (state == State::Unverified) {
      verify_run(file, lock, b, run_end);
      continue;  // b again: verified now, or absent and fetched next
    }
    // Absent.
    if (file.failed_at_timeout(b) && std::chrono::steady_clock::now() - file.failed_at < kTimeoutHold) {
      return file.failed_error;
    }
    const uint64_t spill_end =
        file.spilled_first == CachedFile::kNone ? 0 : file.spilled_first + (file.spilled.size() + kBlock - 1) / kBlock;
    if (b >= file.spilled_first && b < spill_end) {
      if (background) return Fill::Skipped;
      uint64_t stop = std::min(run_end, spill_end);
      size_t begin = static_cast<size_t>((b - file.spilled_first) * kBlock);
      size_t last = std::min(file.spilled.size(), static_cast<size_t>((stop - file.spilled_first) * kBlock));
      uncached.push_back({b, std::vector<std::byte>(file.spilled.begin() + static_cast<ptrdiff_t>(begin),
                                                    file.spilled.begin() + static_cast<ptrdiff_t>(last))});
      result = Fill::Uncached;
      b = stop;
      continue;
    }
    uint64_t run_first = b;
    while (run_first > reach.first && file.block(run_first - 1).state == State::Absent) --run_first;
    // Never over the spilled blocks: their bytes are at hand.
    if (b < file.spilled_first) run_end = std::min(run_end, file.spilled_first);
    if (spill_end <= b) run_first = std::max(run_first, spill_end);
    BusyRun busy(file, lock, run_first, run_end);
    lock.unlock();
    std::vector<std::byte> data;
    std::vector<uint64_t> hashes;
    auto filled = fetch_run(file, run_first, run_end, fetch, data, hashes, background);
    lock.lock();
    if (filled && *filled == Fill::Cached)
      busy.settle_verified(hashes);
    else
      busy.settle_absent();
    if (!filled) {
      file.failures++;
      file.failed_first = run_first;
      file.failed_end = run_end;
      file.failed_error = filled.error();
      file.failed_at = std::chrono::steady_clock::now();
      return filled.error();
    }
    if (*filled == Fill::Skipped) return Fill::Skipped;
    fetched = true;
    if (*filled == Fill::Uncached) {
      file.spilled_first = run_first;
      file.spilled = data;
      uncached.push_back({run_first, std::move(data)});
      result = Fill::Uncached;
    }
    b = run_end;
  }
  if (!fetched && !waited && !background) stats_.chunk_hits++;
  return result;
}

Result<ChunkCache::ReadReply> ChunkCache::read(CachedFile& file, uint64_t offset, size_t length, const FetchFn& fetch,
                                               ReadShape shape) {
  const ChunkLayout& layout = file.layout;
  if (offset >= layout.size || length == 0) return ReadReply{};
  length = static_cast<size_t>(std::min<uint64_t>(length, layout.size - offset));
  const uint64_t read_end = offset + length;
  // The blocks this read needs, and how far a fetch of the missing ones reaches: the whole
  // chunks around them for a stream, the read's own blocks rounded out to the upstream's unit
  // for a random read.
  BlockSpan need{offset / kBlock, (read_end + kBlock - 1) / kBlock}, reach = need;
  if (shape.stream) {
    reach = {blocks_of_chunk(file, offset / options_.chunk_size).first,
             blocks_of_chunk(file, (read_end - 1) / options_.chunk_size).second};
  } else if (shape.alignment) {
    bool missing = false;
    {
      std::lock_guard lock(file.mutex);
      missing = file.any_absent(need.first, need.end);
    }
    uint64_t unit = missing ? std::max<uint64_t>(1, shape.alignment() / kBlock) : 1;
    need = reach = {need.first / unit * unit, std::min(layout.chunks(), round_up(need.end, unit))};
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    // Leased first: the blocks found or filled below are in the file this descriptor reads.
    DescriptorPool::Lease lease;
    if (auto early = descriptor(file, false)) {
      lease = *early;
    } else if (early.error().code != ENOENT) {  // ENOENT: no data file yet, a fill creates it
      return early.error();
    }
    std::vector<Spill> uncached;
    auto filled = ensure(file, need, reach, fetch, uncached, false);
    if (!filled) return filled.error();
    // The bytes of [offset, read_end) that come from the data file: all but the spilled ones.
    std::vector<std::pair<uint64_t, uint64_t>> on_disk;
    uint64_t pos = offset;
    for (const Spill& spill : uncached) {
      uint64_t begin = layout.chunk_offset(spill.first), stop = begin + spill.bytes.size();
      if (begin > pos && pos < read_end) on_disk.emplace_back(pos, std::min(begin, read_end));
      pos = std::max(pos, std::min(stop, read_end));
    }
    if (pos < read_end) on_disk.emplace_back(pos, read_end);
    if (!on_disk.empty() && !lease) {
      // The data file was created by a fill above: lease it now, and make sure it still holds
      // those blocks (it could have been replaced in between).
      auto late = descriptor(file, false);
      if (!late) return late.error();
      lease = *late;
      std::lock_guard lock(file.mutex);
      bool kept = true;
      for (auto [begin, stop] : on_disk) {
        for (uint64_t b = begin / kBlock; b <= (stop - 1) / kBlock && kept; ++b) {
          kept = file.block(b).state != CachedFile::State::Absent;
        }
      }
      if (!kept) continue;
    }
    ReadReply reply;
    if (uncached.empty()) {
      reply.fd = lease->get();
      reply.fd_offset = offset;
      reply.length = length;
      reply.lease = std::move(lease);
      return reply;
    }
    reply.memory.resize(length);
    for (const Spill& spill : uncached) {
      uint64_t begin = std::max(offset, layout.chunk_offset(spill.first));
      uint64_t stop = std::min(read_end, layout.chunk_offset(spill.first) + spill.bytes.size());
      if (begin >= stop) continue;
      std::memcpy(reply.memory.data() + (begin - offset),
                  spill.bytes.data() + (begin - layout.chunk_offset(spill.first)), stop - begin);
    }
    for (auto [begin, stop] : on_disk) {
      if (ChunkFile(lease->get(), layout).read(reply.memory.data() + (begin - offset), stop - begin, begin) !=
          stop - begin) {
        return make_error(EIO, "cache file " + directory_.path_of(file.id) + " shrank while being read");
      }
    }
    return reply;
  }
  return make_error(EIO, "cache file " + directory_.path_of(file.id) + " keeps being replaced");
}

void ChunkCache::prefetch(const std::shared_ptr<CachedFile>& file, uint64_t offset, unsigned chunks, FetchFn fetch) {
  if (offset >= file->layout.size) return;
  uint64_t first = offset / options_.chunk_size;
  uint64_t end = std::min<uint64_t>((file->layout.size - 1) / options_.chunk_size + 1, first + chunks);
  for (uint64_t i = first; i < end; ++i) {
    {
      std::lock_guard lock(file->mutex);
      auto [from, to] = blocks_of_chunk(*file, i);
      if (!file->any_absent(from, to) || !file->queued.insert(i).second) continue;
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
      std::vector<Spill> none;
      auto [from, to] = blocks_of_chunk(*queued->file, queued->index);
      auto filled = ensure(*queued->file, {from, to}, {from, to}, fetch, none, true);
      if (filled && *filled == Fill::Cached) stats_.readahead_chunks++;
    });
    if (!taken) return;
  }
}

Status ChunkCache::fill(CachedFile& file, const FetchFn& fetch) {
  if (file.layout.size == 0) return {};
  for (uint64_t i = 0; i <= (file.layout.size - 1) / options_.chunk_size; ++i) {
    std::vector<Spill> none;
    auto [from, to] = blocks_of_chunk(file, i);
    auto filled = ensure(file, {from, to}, {from, to}, fetch, none, true);
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

namespace {

// The runs of consecutive indices in a sorted list, at most `longest` long: calls f(first, end).
template <class F>
void for_each_run(const std::vector<uint64_t>& sorted, uint64_t longest, F f) {
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1 && j - i < longest) ++j;
    f(sorted[i], sorted[j - 1] + 1);
    i = j;
  }
}

}  // namespace

void ChunkCache::verify_loaded(CachedFile& file, VerifyReport& report) {
  using State = CachedFile::State;
  report.files++;
  std::unique_lock lock(file.mutex);
  std::vector<uint64_t> indices;
  file.for_each([&](uint64_t index, CachedFile::Block b) {
    if (b.state != State::Busy) indices.push_back(index);
  });
  std::sort(indices.begin(), indices.end());
  for_each_run(indices, CachedFile::kGroup, [&](uint64_t first, uint64_t end) {
    // Each block is checked as it is now: one that went Busy or Absent since is left alone.
    for (uint64_t i = first; i < end; ++i) {
      if (file.block(i).state == State::Busy || file.block(i).state == State::Absent) return;
    }
    count_checked(file.id, file.layout, first, check_run(file, lock, first, end, false), report);
  });
}

void ChunkCache::count_checked(const std::string& id, const ChunkLayout& layout, uint64_t first,
                               const std::vector<bool>& good, VerifyReport& report) {
  for (size_t i = 0; i < good.size(); ++i) {
    report.blocks++;
    report.bytes += layout.chunk_length(first + i);
    if (good[i]) continue;
    report.bad_blocks++;
    stats_.verify_failures++;
    LOG_WARNING("cache file %s: block %llu failed verification, dropped", directory_.path_of(id).c_str(),
                static_cast<unsigned long long>(first + i));
  }
}

bool ChunkCache::verify_on_disk(const std::string& id, VerifyReport& report) {
  auto fd = directory_.open_file(id, false);
  if (!fd) return fd.error().code == ENOENT;  // nothing on disk: nothing to check
  report.files++;
  auto size = ChunkFile::recover_size(fd->get(), kBlockSize);
  if (!size) {
    LOG_WARNING("cache file %s holds no valid block, dropped", directory_.path_of(id).c_str());
    return false;
  }
  ChunkLayout layout{*size, kBlockSize};
  ChunkFile data(fd->get(), layout);
  // The valid slots in index order: a run of consecutive blocks is a run of consecutive slots.
  std::vector<uint64_t> indices, hashes;
  for (const ChunkSlot& slot : data.read_slots()) {
    indices.push_back(slot.index);
    hashes.push_back(slot.hash);
  }
  size_t at = 0;
  for_each_run(indices, CachedFile::kGroup, [&](uint64_t first, uint64_t end) {
    auto run = std::span<const uint64_t>(hashes).subspan(at, static_cast<size_t>(end - first));
    at += run.size();
    std::vector<bool> good = data.verify_run(first, run);
    for (size_t i = 0; i < good.size(); ++i) {
      if (!good[i]) (void)data.clear_slot(first + i);
    }
    count_checked(id, layout, first, good, report);
  });
  return true;
}

}  // namespace lazystore
