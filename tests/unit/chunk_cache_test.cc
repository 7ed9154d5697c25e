// The content cache against real files: fill, verify, corruption, eviction, restart, merging.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "chunk_cache.h"
#include "hash.h"
#include "tree.h"
#include "test_support.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;
constexpr uint32_t kChunk = 64 * 1024;

// The byte at `offset` of a file made of a pattern: any offset, no memory.
std::byte pattern_at(uint64_t offset) { return static_cast<std::byte>((offset * 0x9e3779b97f4a7c15ull) >> 56); }

// Upstream reads of a file of `size` bytes of the pattern.
FetchFn pattern_of(uint64_t size) {
  return [size](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
    if (offset >= size) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - offset));
    for (size_t i = 0; i < n; ++i) buf[i] = pattern_at(offset + i);
    return n;
  };
}

std::vector<std::byte> random_bytes(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

// Runs `body` on a thread; a wait without a deadline would hang the test binary, so one that
// is not done after 20 s fails the test and ends the binary.
template <class Body>
auto within_deadline(Body body) {
  auto task = std::make_shared<std::packaged_task<decltype(body())()>>(std::move(body));
  auto result = task->get_future();
  std::thread([task] { (*task)(); }).detach();
  if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "still waiting after 20 s: a wait without a deadline";
    std::fflush(stdout);
    std::_Exit(1);
  }
  return result.get();
}

class ChunkCacheTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-cache-test"};
  void SetUp() override {}

  std::unique_ptr<ChunkCache> open_cache(uint64_t max_bytes = 1ull << 30,
                                         std::chrono::milliseconds wait_timeout = std::chrono::seconds(60)) {
    ChunkCacheOptions options{root_ + "/data", max_bytes, kChunk};
    options.wait_timeout = wait_timeout;
    auto cache = ChunkCache::open(options, stats_);
    EXPECT_TRUE(cache.ok()) << (cache.ok() ? "" : cache.error().message);
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  // A fetch function over an in-memory "upstream file" that counts calls and bytes.
  FetchFn fetch_from(const std::vector<std::byte>& content) {
    return [this, &content](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
      fetches_++;
      if (offset >= content.size()) return size_t{0};
      size_t n = std::min<size_t>(buf.size(), content.size() - offset);
      std::memcpy(buf.data(), content.data() + offset, n);
      fetched_bytes_ += n;
      return n;
    };
  }

  // The bytes a read answers, from the spliced fd or from memory.
  static std::vector<std::byte> bytes_of(const ChunkCache::ReadReply& reply) {
    if (reply.fd < 0) return reply.memory;
    std::vector<std::byte> out(reply.length);
    EXPECT_EQ(pread(reply.fd, out.data(), out.size(), static_cast<off_t>(reply.fd_offset)),
              static_cast<ssize_t>(out.size()));
    return out;
  }

  void expect_read(ChunkCache& cache, CachedFile& file, const std::vector<std::byte>& content, uint64_t offset,
                   size_t length) {
    auto reply = cache.read(file, offset, length, fetch_from(content));
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    size_t expected = std::min<uint64_t>(length, content.size() - std::min<uint64_t>(offset, content.size()));
    auto got = bytes_of(*reply);
    ASSERT_EQ(got.size(), expected);
    // An empty read has a null data(): memcmp(nullptr, …, 0) is undefined (UBSan says so).
    if (expected > 0) {
      EXPECT_EQ(0, std::memcmp(got.data(), content.data() + offset, expected));
    }
  }

  // Reads [offset, offset + length) of a pattern file: the right bytes, whatever the chunk index.
  void expect_pattern(ChunkCache& cache, CachedFile& file, uint64_t size, uint64_t offset, size_t length,
                      const FetchFn& fetch) {
    auto reply = cache.read(file, offset, length, fetch);
    ASSERT_TRUE(reply.ok()) << offset << ": " << reply.error().message;
    auto got = bytes_of(*reply);
    ASSERT_EQ(got.size(), std::min<uint64_t>(length, size - offset)) << offset;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], pattern_at(offset + i)) << offset + i;
  }

  // Fills the whole of `content` under `key` in a cache that then closes: what a restart finds.
  void fill_and_close(std::string_view key, const std::vector<std::byte>& content) {
    auto cache = open_cache();
    auto file = cache->pin(key, content.size());
    ASSERT_TRUE(file.ok()) << file.error().message;
    expect_read(*cache, **file, content, 0, content.size());
    cache->release(*file);
  }

  // Flips `bits` of the byte at `offset` of the data file of `key`: a corrupted cache.
  void flip_byte(std::string_view key, uint64_t offset, char bits) {
    int fd = ::open(data_file_of(key).c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c = 0;
    ASSERT_EQ(pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
    c ^= bits;
    ASSERT_EQ(pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
    close(fd);
  }

  std::string data_file_of(std::string_view key) {
    std::string id = ChunkCache::id_of(key);
    return root_ + "/data/" + id.substr(0, 2) + "/" + id;
  }

  std::string root_ = temp_.str();
  Stats stats_;
  std::atomic<int> fetches_{0};
  std::atomic<uint64_t> fetched_bytes_{0};
};

TEST(ChunkCacheId, TheFilesOfAStorePathShareTheirDirectory) {
  std::string a = ChunkCache::id_of("aaaa-python/lib/os.py"), b = ChunkCache::id_of("aaaa-python/lib/re.py");
  std::string root = ChunkCache::id_of("aaaa-python"), other = ChunkCache::id_of("bbbb-gcc/lib/os.py");
  for (const auto& id : {a, b, root, other}) EXPECT_TRUE(DataDirectory::is_id(id)) << id;
  EXPECT_EQ(a.substr(0, 2), b.substr(0, 2));
  EXPECT_EQ(a.substr(0, 2), root.substr(0, 2));  // a store path that is a single file
  EXPECT_NE(a, b);
  EXPECT_EQ(a.substr(2), xxh3_128_hex("aaaa-python/lib/os.py").substr(2));
  EXPECT_NE(a.substr(0, 2), other.substr(0, 2));  // these two store paths happen to differ
}

TEST_F(ChunkCacheTest, FetchesOnlyTheChunksReadAndServesThemFromDisk) {
  auto content = random_bytes(10 * kChunk + 123, 1);
  auto cache = open_cache();
  auto file = cache->pin("p/big", content.size());
  ASSERT_TRUE(file.ok());
  expect_read(*cache, **file, content, 3 * kChunk + 10, 100);
  EXPECT_EQ(fetched_bytes_, kChunk);
  EXPECT_EQ(cache->cached_bytes(**file), kChunk);
  // A read across a chunk boundary fetches the next chunk only.
  expect_read(*cache, **file, content, 4 * kChunk - 50, 100);
  EXPECT_EQ(fetched_bytes_, 2 * kChunk);
  // Cached now: answered by splicing the data file, no fetch.
  int before = fetches_;
  auto reply = cache->read(**file, 3 * kChunk, kChunk, fetch_from(content));
  ASSERT_TRUE(reply.ok());
  EXPECT_GE(reply->fd, 0);
  EXPECT_EQ(fetches_, before);
  // The last, short chunk and reads past the end.
  expect_read(*cache, **file, content, content.size() - 200, 4096);
  expect_read(*cache, **file, content, content.size(), 10);
  cache->release(*file);
}

TEST_F(ChunkCacheTest, SurvivesRestartWithoutUpstream) {
  auto content = random_bytes(3 * kChunk, 2);
  fill_and_close("p/f", content);
  auto cache = open_cache();
  auto file = cache->pin("p/f", content.size());
  EXPECT_EQ(cache->cached_bytes(**file), content.size());
  FetchFn offline = [](uint64_t, std::span<std::byte>) -> Result<size_t> {
    return make_error(EIO, "upstream is gone");
  };
  auto reply = cache->read(**file, 0, content.size(), offline);
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  auto got = bytes_of(*reply);
  EXPECT_EQ(got, content);
  // Something never fetched fails with the upstream's error rather than returning anything.
  auto other = cache->pin("p/never", 10);
  EXPECT_FALSE(cache->read(**other, 0, 10, offline).ok());
  cache->release(*other);
  cache->release(*file);
}

TEST_F(ChunkCacheTest, CorruptedTruncatedOrDeletedDataIsDetectedAndRefetched) {
  auto content = random_bytes(4 * kChunk, 3);
  fill_and_close("p/flipped", content);
  fill_and_close("p/truncated", content);
  fill_and_close("p/deleted", content);
  flip_byte("p/flipped", 2 * kChunk + 7, 0x40);  // in chunk 2
  ASSERT_EQ(truncate(data_file_of("p/truncated").c_str(), kChunk + 5), 0);
  ASSERT_TRUE(fs::remove(data_file_of("p/deleted")));

  auto cache = open_cache();
  for (const char* key : {"p/flipped", "p/truncated", "p/deleted"}) {
    fetched_bytes_ = 0;
    auto file = cache->pin(key, content.size());
    ASSERT_TRUE(file.ok());
    expect_read(*cache, **file, content, 0, content.size());
    EXPECT_GT(fetched_bytes_, 0u) << key;
    cache->release(*file);
  }
  EXPECT_EQ(stats_.verify_failures, 1u);  // the flipped block; the others lost their slots
}

TEST_F(ChunkCacheTest, ATornOrForeignSlotIsAMiss) {
  auto content = random_bytes(2 * kChunk, 4);
  fill_and_close("p/slots", content);
  // Garble the slot of block 0 (it sits right after the content).
  int fd = ::open(data_file_of("p/slots").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_EQ(pwrite(fd, junk, sizeof junk, static_cast<off_t>(content.size()) + 8), 8);
  close(fd);
  auto cache = open_cache();
  auto file = cache->pin("p/slots", content.size());
  EXPECT_EQ(cache->cached_bytes(**file), 2 * kChunk - ChunkCache::kBlockSize);
  fetched_bytes_ = 0;
  expect_read(*cache, **file, content, 0, content.size());
  EXPECT_EQ(fetched_bytes_, ChunkCache::kBlockSize);  // that block only
  cache->release(*file);
  // The same data file seen with another size (another file's key would differ too) is empty.
  auto resized = cache->pin("p/slots", content.size() - 1);
  EXPECT_EQ(cache->cached_bytes(**resized), 0u);
  cache->release(*resized);
}

TEST_F(ChunkCacheTest, EvictsLeastRecentlyUsedAndNeverWhatIsOpen) {
  const uint64_t bound = 6 * kChunk;
  std::vector<std::vector<std::byte>> contents;
  for (unsigned i = 0; i < 6; ++i) contents.push_back(random_bytes(2 * kChunk, 10 + i));
  auto cache = open_cache(bound);
  auto pinned = cache->pin("p/0", contents[0].size());
  expect_read(*cache, **pinned, contents[0], 0, contents[0].size());
  for (unsigned i = 1; i < 6; ++i) {
    auto file = cache->pin("p/" + std::to_string(i), contents[i].size());
    expect_read(*cache, **file, contents[i], 0, contents[i].size());
    cache->release(*file);
    EXPECT_LE(cache->used_bytes(), bound);
  }
  EXPECT_GT(stats_.evictions, 0u);
  // The open file kept all its bytes.
  EXPECT_EQ(cache->cached_bytes(**pinned), contents[0].size());
  // The most recent one is still there; the disk really holds no more than the bound.
  auto last = cache->pin("p/5", contents[5].size());
  EXPECT_EQ(cache->cached_bytes(**last), contents[5].size());
  cache->release(*last);
  uint64_t on_disk = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root_ + "/data")) {
    struct stat st {};
    if (entry.is_regular_file() && stat(entry.path().c_str(), &st) == 0) on_disk += st.st_blocks * 512ull;
  }
  EXPECT_LE(on_disk, bound);
  cache->release(*pinned);
}

TEST_F(ChunkCacheTest, AFileLargerThanTheBoundIsServedUncached) {
  auto content = random_bytes(8 * kChunk, 20);
  auto cache = open_cache(3 * kChunk);
  auto file = cache->pin("p/huge", content.size());
  for (uint64_t off = 0; off < content.size(); off += kChunk) expect_read(*cache, **file, content, off, kChunk);
  EXPECT_LE(cache->used_bytes(), 3 * kChunk);
  cache->release(*file);
}

TEST_F(ChunkCacheTest, AStreamThroughAnUncachedChunkFetchesItOnce) {
  // No room at all: every chunk is served from memory. Reading one in 4 KiB steps fetches it
  // once, its short last block (the file's end) included.
  auto content = random_bytes(kChunk + 5000, 21);
  auto cache = open_cache(4096);
  auto file = cache->pin("p/spill", content.size());
  for (uint64_t off = 0; off < content.size(); off += 4096) expect_read(*cache, **file, content, off, 4096);
  EXPECT_EQ(fetched_bytes_, content.size());
  EXPECT_EQ(fetches_, 2) << "one per chunk";
  EXPECT_GT(stats_.uncached_chunks, 0u);
  cache->release(*file);
}

TEST_F(ChunkCacheTest, ConcurrentMissesOfOneChunkFetchOnce) {
  auto content = random_bytes(kChunk, 30);
  auto cache = open_cache();
  auto file = cache->pin("p/shared", content.size());
  FetchFn slow = [&](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
    // In flight until the seven other readers wait for it (each counts a merged miss under the
    // lock it then waits on): an event, not a time window.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (stats_.merged_misses < 7 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return fetch_from(content)(offset, buf);
  };
  std::vector<std::thread> readers;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i) {
    readers.emplace_back([&] {
      auto reply = cache->read(**file, 0, content.size(), slow);
      if (reply.ok() && bytes_of(*reply) == content) good++;
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(good, 8);
  EXPECT_EQ(fetches_, 1);
  EXPECT_EQ(stats_.merged_misses, 7u);
  cache->release(*file);
}

// A fetch that throws (a bug below the cache, bad_alloc) leaves no chunk Busy and no bytes
// reserved: the next reader fetches it, nobody waits for ever.
TEST_F(ChunkCacheTest, MixedStreamAndRandomReadersFetchEachBlockOnce) {
  // Eight threads read one file at once, half as streams (whole chunks), half at random 4 KiB
  // offsets: fetch runs of different lengths meet on the same blocks, and each block is still
  // fetched once and every answer right.
  auto content = random_bytes(8 * kChunk + 777, 31);
  auto cache = open_cache();
  auto file = cache->pin("p/mixed", content.size());
  ASSERT_TRUE(file.ok());
  std::vector<std::thread> readers;
  std::atomic<int> wrong{0};
  for (int r = 0; r < 8; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(static_cast<uint64_t>(r));
      for (int i = 0; i < 200; ++i) {
        bool stream = r % 2 == 0;
        uint64_t offset = stream ? (static_cast<uint64_t>(i) * 8192) % content.size() : rng() % content.size();
        size_t length = stream ? 8192 : 4096;
        auto reply =
            cache->read(**file, offset, length, fetch_from(content), ReadShape{.stream = stream, .alignment = {}});
        size_t expected = static_cast<size_t>(std::min<uint64_t>(length, content.size() - offset));
        if (!reply.ok() ||
            bytes_of(*reply) != std::vector<std::byte>(content.begin() + static_cast<ptrdiff_t>(offset),
                                                       content.begin() + static_cast<ptrdiff_t>(offset + expected))) {
          wrong++;
        }
      }
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_LE(fetched_bytes_, content.size()) << "a block was fetched twice";
  EXPECT_EQ(cache->cached_bytes(**file), fetched_bytes_);
  cache->release(*file);
}

TEST_F(ChunkCacheTest, AFetchThatThrowsLeavesNothingBehind) {
  auto content = random_bytes(2 * kChunk, 31);
  auto cache = open_cache();
  auto file = cache->pin("p/throws", content.size());
  ASSERT_TRUE(file.ok());
  FetchFn throws = [](uint64_t, std::span<std::byte>) -> Result<size_t> {
    throw std::runtime_error("a bug below the cache");
  };
  uint64_t used = cache->used_bytes();
  EXPECT_THROW((void)cache->read(**file, 0, 100, throws), std::runtime_error);
  EXPECT_EQ(cache->used_bytes(), used) << "the reservation of the failed fill stayed";
  within_deadline([&] {
    expect_read(*cache, **file, content, 0, content.size());
    return 0;
  });
  EXPECT_EQ(cache->cached_bytes(**file), content.size());

  // The same in the background: the worker counts it, the pin is released, the pool goes on.
  cache->start_workers(1);
  auto other = cache->pin("p/throws-in-the-background", content.size());
  ASSERT_TRUE(other.ok());
  cache->prefetch(*other, 0, 2, throws);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (stats_.task_failures < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(stats_.task_failures, 2u);
  cache->stop_workers();
  cache->release(*other);
  cache->release(*file);
  auto report = cache->evict_all();
  EXPECT_EQ(report.pinned_files, 0u) << "a pin of a task that threw stayed";
}

// A reader that merges into another's fetch waits at most wait_timeout for it, then fails with
// ETIMEDOUT; the fetch itself goes on and its chunk is served afterwards.
TEST_F(ChunkCacheTest, AWaitForAnotherFetchHasADeadline) {
  auto content = random_bytes(kChunk, 32);
  auto cache = open_cache(1ull << 30, std::chrono::milliseconds(200));
  auto file = cache->pin("p/stuck", content.size());
  ASSERT_TRUE(file.ok());
  std::promise<void> started, go_on;
  auto go_on_future = go_on.get_future().share();
  FetchFn held = [&, go_on_future](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
    started.set_value();
    go_on_future.wait();  // until the test lets it go on
    return fetch_from(content)(offset, buf);
  };
  auto first = std::async(std::launch::async, [&] { return cache->read(**file, 0, content.size(), held); });
  started.get_future().wait();
  auto waited = within_deadline([&] { return cache->read(**file, 0, content.size(), fetch_from(content)); });
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.error().code, ETIMEDOUT) << waited.error().message;
  EXPECT_EQ(stats_.merged_misses, 1u);
  go_on.set_value();
  auto reply = first.get();
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ(bytes_of(*reply), content);
  int before = fetches_;
  expect_read(*cache, **file, content, 0, content.size());
  EXPECT_EQ(fetches_, before);
  cache->release(*file);
}

// Under a descriptor limit of 64, 300 files pinned at once (open files of a build) are filled and
// read again in turn: the cache keeps a bounded pool of data file descriptors and reopens them.
TEST_F(ChunkCacheTest, ManyPinnedFilesUnderALowDescriptorLimit) {
  struct rlimit before {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  struct rlimit low = before;
  low.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  struct Restore {
    struct rlimit limit;
    ~Restore() { setrlimit(RLIMIT_NOFILE, &limit); }
  } restore{before};

  auto content = random_bytes(3 * kChunk, 33);
  auto cache = open_cache();
  std::vector<std::shared_ptr<CachedFile>> files;
  for (int i = 0; i < 300; ++i) {
    auto file = cache->pin("p/many/" + std::to_string(i), content.size());
    ASSERT_TRUE(file.ok()) << i << ": " << file.error().message;
    files.push_back(*file);
    expect_read(*cache, *files.back(), content, kChunk, 100);
  }
  for (int round = 0; round < 2; ++round) {
    for (auto& file : files) expect_read(*cache, *file, content, 0, content.size());
  }
  EXPECT_EQ(stats_.uncached_chunks, 0u);
  EXPECT_GT(stats_.cache_reopens, 0u);
  for (auto& file : files) cache->release(file);
}

// With one descriptor kept open, a pinned file's descriptor is closed when another is used; its
// data file removed meanwhile (by hand, another program) is noticed on reopen: refetched, never
// read as zeros from a file created in its place.
TEST_F(ChunkCacheTest, ADataFileRemovedWhileItsDescriptorIsClosedIsRefetched) {
  ChunkCacheOptions options{root_ + "/data", 1ull << 30, kChunk};
  options.descriptors = 1;
  auto cache = ChunkCache::open(options, stats_);
  ASSERT_TRUE(cache.ok());
  auto a = random_bytes(2 * kChunk, 34), b = random_bytes(2 * kChunk, 35);
  auto file_a = (*cache)->pin("p/a", a.size());
  auto file_b = (*cache)->pin("p/b", b.size());
  ASSERT_TRUE(file_a.ok() && file_b.ok());
  expect_read(**cache, **file_a, a, 0, a.size());
  expect_read(**cache, **file_b, b, 0, b.size());  // a's descriptor is closed now
  ASSERT_TRUE(fs::remove(data_file_of("p/a")));
  fetched_bytes_ = 0;
  expect_read(**cache, **file_a, a, 0, a.size());
  EXPECT_EQ(fetched_bytes_, a.size());
  EXPECT_GT(stats_.cache_reopens, 0u);
  // And kept: served from the new data file.
  expect_read(**cache, **file_b, b, 0, b.size());
  fetched_bytes_ = 0;
  expect_read(**cache, **file_a, a, 0, a.size());
  EXPECT_EQ(fetched_bytes_, 0u);
  (*cache)->release(*file_b);
  (*cache)->release(*file_a);
}

TEST_F(ChunkCacheTest, PrefetchFillsTheNextChunksInTheBackground) {
  auto content = random_bytes(6 * kChunk, 40);
  auto cache = open_cache();
  cache->start_workers(2);
  auto file = cache->pin("p/seq", content.size());
  cache->prefetch(*file, kChunk, 3, fetch_from(content));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (cache->cached_bytes(**file) < 3 * kChunk && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(cache->cached_bytes(**file), 3 * kChunk);
  cache->stop_workers();
  cache->release(*file);
}

// Stopping the workers drops the fills still queued, and the pins they held go with them.
TEST_F(ChunkCacheTest, StoppingDropsQueuedFillsAndTheirPins) {
  auto content = random_bytes(4 * kChunk, 41);
  auto cache = open_cache();
  cache->start_workers(1);
  auto held_file = cache->pin("p/held", content.size());
  auto queued_file = cache->pin("p/queued", content.size());
  ASSERT_TRUE(held_file.ok() && queued_file.ok());
  std::promise<void> started, go_on;
  auto go_on_future = go_on.get_future().share();
  FetchFn held = [&, go_on_future](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
    started.set_value();
    go_on_future.wait();
    return fetch_from(content)(offset, buf);
  };
  cache->prefetch(*held_file, 0, 1, held);
  started.get_future().wait();  // the one worker is busy with it
  cache->prefetch(*queued_file, 0, 3, fetch_from(content));
  cache->prefetch(*queued_file, 0, 3, fetch_from(content));  // queued once, not twice
  cache->release(*queued_file);                              // now only its queued fills pin it
  std::thread stopper([&] { cache->stop_workers(); });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (cache->evict_all().pinned_files > 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(cache->evict_all().pinned_files, 1u) << "queued fills still pin their file";
  go_on.set_value();
  stopper.join();
  EXPECT_EQ(fetches_, 1);
  cache->release(*held_file);
}

TEST_F(ChunkCacheTest, AShortUpstreamFileIsAnError) {
  auto content = random_bytes(kChunk / 2, 50);
  auto cache = open_cache();
  auto file = cache->pin("p/short", content.size() + 10);  // the listing says 10 bytes more
  auto reply = cache->read(**file, 0, content.size() + 10, fetch_from(content));
  EXPECT_FALSE(reply.ok());
  EXPECT_EQ(cache->cached_bytes(**file), 0u);
  cache->release(*file);
}

// Offsets of a 4 PiB file whose chunks (64 KiB) lie past 2^32: the last ones, and chunk 2^32.
const uint64_t kHugeOffsets[] = {0, (uint64_t{1} << 32) * kChunk + 5, Tree::kMaxFileSize - kChunk - 3,
                                 Tree::kMaxFileSize - 100};

// A file that claims 4 PiB (a sparse file upstream, a hostile listing): per-chunk state for what
// is read only, the right bytes at chunk indices past 2^32 (here served from memory: the test's
// disk cannot hold a file that large); past the largest size served, a clean error.
TEST_F(ChunkCacheTest, AHugeFileKeepsStateForWhatIsReadOnly) {
  const uint64_t size = Tree::kMaxFileSize;
  auto cache = open_cache();
  auto file = cache->pin("p/huge", size);
  ASSERT_TRUE(file.ok()) << file.error().message;
  for (uint64_t offset : kHugeOffsets) expect_pattern(*cache, **file, size, offset, 200, pattern_of(size));
  EXPECT_LE(cache->cached_bytes(**file), 4 * kChunk);
  // Bytes written without their slot (it lies past what the disk's file system allows) are no
  // chunk: their blocks are given back.
  if (stats_.cache_write_errors > 0) {
    EXPECT_EQ(cache->used_bytes(), 0u);
  }
  cache->release(*file);

  for (uint64_t too_big : {Tree::kMaxFileSize + 1, (uint64_t{1} << 52) + (5 << 20), UINT64_MAX}) {
    auto refused = cache->pin("p/too-big", too_big);
    ASSERT_FALSE(refused.ok()) << too_big;
    EXPECT_EQ(refused.error().code, EFBIG);
  }
}

// The same on a disk that holds sparse files of any size (tmpfs): cached, and after a restart
// loaded from slots written past 2^52 without reading the holes in between.
TEST_F(ChunkCacheTest, AHugeFileOnASparseDiskIsCachedAndSurvivesARestart) {
  struct statfs fs_info {};
  if (statfs("/dev/shm", &fs_info) != 0 || fs_info.f_type != TMPFS_MAGIC) GTEST_SKIP() << "no tmpfs at /dev/shm";
  char pattern[] = "/dev/shm/lazystore-cache-test-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  std::string shm = pattern;
  struct Remove {
    std::string path;
    ~Remove() { fs::remove_all(path); }
  } remove{shm};
  const uint64_t size = Tree::kMaxFileSize;
  {
    auto cache = ChunkCache::open({shm, 1ull << 30, kChunk}, stats_);
    ASSERT_TRUE(cache.ok());
    auto file = (*cache)->pin("p/huge", size);
    ASSERT_TRUE(file.ok());
    for (uint64_t offset : kHugeOffsets) expect_pattern(**cache, **file, size, offset, 200, pattern_of(size));
    EXPECT_EQ(stats_.uncached_chunks, 0u);
    (*cache)->release(*file);
  }
  auto cache = ChunkCache::open({shm, 1ull << 30, kChunk}, stats_);
  ASSERT_TRUE(cache.ok());
  auto file = (*cache)->pin("p/huge", size);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*cache)->cached_bytes(**file), 4 * kChunk);
  FetchFn offline = [](uint64_t, std::span<std::byte>) -> Result<size_t> {
    return make_error(EIO, "upstream is gone");
  };
  for (uint64_t offset : kHugeOffsets) expect_pattern(**cache, **file, size, offset, 200, offline);
  (*cache)->release(*file);
  auto report = (*cache)->verify_all();
  EXPECT_EQ(report.blocks, 4 * kChunk / ChunkCache::kBlockSize);
  EXPECT_EQ(report.bad_blocks, 0u);
}

constexpr uint64_t kBlock = ChunkCache::kBlockSize;
const ReadShape kRandom{.stream = false, .alignment = {}};

TEST_F(ChunkCacheTest, RandomReadsFetchOnlyTheirOwnBlocks) {
  auto content = random_bytes(16 * kChunk, 11);
  auto cache = open_cache();
  auto file = cache->pin("p/random", content.size());
  ASSERT_TRUE(file.ok());
  // 4 KiB reads, one in the middle of a block pair: each moves its blocks, not its chunk.
  for (uint64_t offset : {uint64_t{5 * kChunk + 8192}, uint64_t{9 * kChunk + 100}, 3 * kChunk + kBlock - 10}) {
    fetched_bytes_ = 0;
    auto reply = cache->read(**file, offset, 4096, fetch_from(content), kRandom);
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    ASSERT_EQ(bytes_of(*reply), std::vector<std::byte>(content.begin() + static_cast<ptrdiff_t>(offset),
                                                       content.begin() + static_cast<ptrdiff_t>(offset + 4096)));
    uint64_t blocks = (offset + 4096 - 1) / kBlock - offset / kBlock + 1;
    EXPECT_EQ(fetched_bytes_, blocks * kBlock) << offset;
  }
  EXPECT_EQ(cache->cached_bytes(**file), 5 * kBlock);
  // Rounded out to the upstream's unit: the 16 KiB around the read, and kept.
  fetched_bytes_ = 0;
  expect_read(*cache, **file, content, 12 * kChunk + 5 * kBlock, 100);  // stream: the whole chunk
  EXPECT_EQ(fetched_bytes_, kChunk);
  fetched_bytes_ = 0;
  int asked = 0;
  ReadShape unit16k{.stream = false, .alignment = [&asked] {
                      asked++;
                      return uint32_t{16 * 1024};
                    }};
  auto aligned = cache->read(**file, 14 * kChunk + 5 * kBlock + 1, 100, fetch_from(content), unit16k);
  ASSERT_TRUE(aligned.ok());
  EXPECT_EQ(fetched_bytes_, 16 * 1024u);
  EXPECT_EQ(asked, 1);
  // A cached random read does not ask the upstream its unit (that may cost it a request).
  ASSERT_TRUE(cache->read(**file, 14 * kChunk + 5 * kBlock + 1, 100, fetch_from(content), unit16k).ok());
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(cache->cached_bytes(**file), 5 * kBlock + kChunk + 16 * 1024);
  // A stream through a chunk that random reads touched fetches only the runs still missing.
  int before = fetches_;
  fetched_bytes_ = 0;
  expect_read(*cache, **file, content, 5 * kChunk, kChunk);
  EXPECT_EQ(fetched_bytes_, kChunk - kBlock);
  EXPECT_EQ(fetches_ - before, 2) << "the runs before and after the cached blocks";
  cache->release(*file);
}

TEST_F(ChunkCacheTest, ACorruptBlockIsRefetchedAloneAndItsSlotCleared) {
  auto content = random_bytes(2 * kChunk, 12);
  fill_and_close("p/block", content);
  flip_byte("p/block", kChunk + 3 * kBlock + 9, 0x01);
  {
    auto cache = open_cache();
    auto file = cache->pin("p/block", content.size());
    EXPECT_EQ(cache->cached_bytes(**file), content.size()) << "unverified blocks count as cached";
    fetched_bytes_ = 0;
    auto reply = cache->read(**file, kChunk + 3 * kBlock, 100, fetch_from(content), kRandom);
    ASSERT_TRUE(reply.ok());
    EXPECT_EQ(bytes_of(*reply), std::vector<std::byte>(content.begin() + kChunk + 3 * kBlock,
                                                       content.begin() + kChunk + 3 * kBlock + 100));
    EXPECT_EQ(fetched_bytes_, kBlock) << "only the bad block";
    EXPECT_EQ(stats_.verify_failures, 1u);
    cache->release(*file);
  }
  // The refetched block replaced the bad one on disk: a restart verifies every block.
  auto cache = open_cache();
  auto report = cache->verify_all();
  EXPECT_EQ(report.blocks, content.size() / kBlock);
  EXPECT_EQ(report.bad_blocks, 0u);
}

TEST_F(ChunkCacheTest, AFailedVerificationInTheReadPathLeavesATombstone) {
  auto content = random_bytes(kChunk, 13);
  fill_and_close("p/tomb", content);
  flip_byte("p/tomb", 2 * kBlock, 0x7f);
  {
    auto cache = open_cache();
    auto file = cache->pin("p/tomb", content.size());
    // The read fails to fetch (offline): the bad block must not be served, and its slot goes.
    FetchFn offline = [](uint64_t, std::span<std::byte>) -> Result<size_t> { return make_error(EIO, "offline"); };
    auto reply = cache->read(**file, 2 * kBlock, 10, offline, kRandom);
    EXPECT_FALSE(reply.ok());
    cache->release(*file);
  }
  auto cache = open_cache();
  auto file = cache->pin("p/tomb", content.size());
  EXPECT_EQ(cache->cached_bytes(**file), content.size() - kBlock) << "the slot was not cleared";
  cache->release(*file);
}

TEST_F(ChunkCacheTest, ADataFileOfTheEarlierFormatIsAMiss) {
  // Format 1: one slot per chunk right after the content, {index, hash, check} with the check
  // xxh3 of {index, hash, size, chunk size}. Same bytes, same slot place: still no slot now.
  auto content = random_bytes(kChunk, 14);
  std::string path = data_file_of("p/old");
  fs::create_directories(fs::path(path).parent_path());
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(content.size()));
    uint64_t hash = xxh3_64(std::span<const std::byte>(content));
    uint64_t words[4] = {0, hash, content.size(), kChunk};
    uint64_t slot[3] = {0, hash, xxh3_64(std::as_bytes(std::span(words)))};
    out.write(reinterpret_cast<const char*>(slot), sizeof slot);
  }
  auto cache = open_cache();
  auto file = cache->pin("p/old", content.size());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(cache->cached_bytes(**file), 0u);
  fetched_bytes_ = 0;
  expect_read(*cache, **file, content, 0, content.size());
  EXPECT_EQ(fetched_bytes_, content.size());
  cache->release(*file);
}

TEST_F(ChunkCacheTest, StrayFilesAreRemovedAtStart) {
  fs::create_directories(root_ + "/data/zz");
  std::ofstream(root_ + "/data/zz/not-a-cache-file") << "x";
  auto cache = open_cache();
  EXPECT_FALSE(fs::exists(root_ + "/data/zz/not-a-cache-file"));
}

}  // namespace
}  // namespace lazystore
