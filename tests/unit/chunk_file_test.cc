// The data file format: slots written after their chunk, read back, checked, cleared; the size
// recovered from the last slot.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "chunk_file.h"
#include "fd.h"
#include "hash.h"
#include "test_support.h"

namespace lazystore {
namespace {

constexpr uint32_t kChunk = 64 * 1024;

std::vector<std::byte> random_bytes(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

class ChunkFileTest : public ::testing::Test {
 protected:
  TempDir temp_{"lazystore-chunk-file-test"};
  void SetUp() override {
    fd_ = Fd(::open((root_ + "/data").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd_);
  }

  // Writes chunk `index` of `content` as a fill would.
  void write(const ChunkLayout& layout, const std::vector<std::byte>& content, uint64_t index) {
    auto chunk = std::span(content).subspan(layout.chunk_offset(index), layout.chunk_length(index));
    ASSERT_TRUE(write_one(ChunkFile(fd_.get(), layout), index, chunk));
  }
  // One chunk through the run operations the cache uses.
  static Status write_one(const ChunkFile& file, uint64_t index, std::span<const std::byte> chunk) {
    uint64_t hash = xxh3_64(chunk);
    return file.write_run(index, chunk, std::span(&hash, 1));
  }
  static bool verify_one(const ChunkFile& file, uint64_t index, uint64_t hash) {
    return file.verify_run(index, std::span(&hash, 1))[0];
  }

  std::string root_ = temp_.str();
  Fd fd_;
};

TEST(ChunkLayoutTest, ChunksOffsetsAndSlots) {
  ChunkLayout exact{3 * kChunk, kChunk};
  EXPECT_EQ(exact.chunks(), 3u);
  EXPECT_EQ(exact.chunk_length(2), kChunk);
  ChunkLayout short_last{3 * kChunk + 5, kChunk};
  EXPECT_EQ(short_last.chunks(), 4u);
  EXPECT_EQ(short_last.chunk_length(3), 5u);
  EXPECT_EQ(short_last.chunk_of(3 * kChunk + 4), 3u);
  EXPECT_EQ(short_last.slot_offset(2), 3 * kChunk + 5 + 2 * ChunkLayout::kSlotSize);
  EXPECT_EQ(ChunkLayout({0, kChunk}).chunks(), 0u);
}

TEST_F(ChunkFileTest, SlotsFollowTheirChunksAndCheckTheBytes) {
  auto content = random_bytes(3 * kChunk + 100, 1);
  ChunkLayout layout{content.size(), kChunk};
  write(layout, content, 0);
  write(layout, content, 2);
  ChunkFile file(fd_.get(), layout);
  auto slots = file.read_slots();
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(slots[0].index, 0u);
  EXPECT_EQ(slots[1].index, 2u);
  EXPECT_EQ(slots[1].hash, xxh3_64(std::span(content).subspan(2 * kChunk, kChunk)));
  EXPECT_TRUE(verify_one(file, 2, slots[1].hash));
  // The bytes sit at their own offsets.
  std::vector<std::byte> back(100);
  ASSERT_EQ(file.read(back.data(), back.size(), 2 * kChunk + 7), back.size());
  EXPECT_TRUE(std::equal(back.begin(), back.end(), content.begin() + 2 * kChunk + 7));
  // A flipped byte fails verification.
  std::byte flipped = content[2 * kChunk + 9] ^ std::byte{1};
  ASSERT_EQ(pwrite(fd_.get(), &flipped, 1, 2 * kChunk + 9), 1);
  EXPECT_FALSE(verify_one(file, 2, slots[1].hash));
}

TEST_F(ChunkFileTest, ASlotOfAnotherSizeOrChunkSizeIsNoSlot) {
  auto content = random_bytes(2 * kChunk, 2);
  ChunkLayout layout{content.size(), kChunk};
  write(layout, content, 0);
  write(layout, content, 1);
  EXPECT_EQ(ChunkFile(fd_.get(), {content.size() - 24, kChunk}).read_slots().size(), 0u);
  EXPECT_EQ(ChunkFile(fd_.get(), {content.size(), kChunk / 2}).read_slots().size(), 0u);
  EXPECT_EQ(ChunkFile(fd_.get(), layout).read_slots().size(), 2u);
}

TEST_F(ChunkFileTest, AClearedSlotIsAMissAndStillTellsTheSize) {
  auto content = random_bytes(2 * kChunk + 1, 3);
  ChunkLayout layout{content.size(), kChunk};
  for (uint64_t i = 0; i < 3; ++i) write(layout, content, i);
  ChunkFile file(fd_.get(), layout);
  ASSERT_TRUE(file.clear_slot(2));
  auto slots = file.read_slots();
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(slots[1].index, 1u);
  EXPECT_EQ(ChunkFile::recover_size(fd_.get(), kChunk), content.size());
}

TEST_F(ChunkFileTest, TheSizeComesBackFromTheLastSlotOnly) {
  EXPECT_EQ(ChunkFile::recover_size(fd_.get(), kChunk), std::nullopt);  // empty
  auto content = random_bytes(5 * kChunk + 3, 4);
  ChunkLayout layout{content.size(), kChunk};
  write(layout, content, 3);
  write(layout, content, 1);  // written later, but slot 3 still ends the file
  EXPECT_EQ(ChunkFile::recover_size(fd_.get(), kChunk), content.size());
  EXPECT_EQ(ChunkFile::recover_size(fd_.get(), 2 * kChunk), std::nullopt);
  // A torn last slot: no size (the data file is dropped by verification).
  std::byte junk{0x5a};
  ASSERT_EQ(pwrite(fd_.get(), &junk, 1, static_cast<off_t>(layout.slot_offset(3) + 20)), 1);
  EXPECT_EQ(ChunkFile::recover_size(fd_.get(), kChunk), std::nullopt);
}

// A file of 1 TiB in 64 KiB chunks has 2^24 slots; two written, far apart: both found, and only
// the blocks written are read (the hole between them is skipped, not read as 384 MiB of zeros).
TEST_F(ChunkFileTest, SlotsFarApartAreReadAcrossTheHoleBetweenThem) {
  ChunkLayout layout{uint64_t{1} << 40, kChunk};
  auto chunk = random_bytes(kChunk, 5);
  ChunkFile file(fd_.get(), layout);
  const uint64_t last = layout.chunks() - 1;
  ASSERT_TRUE(write_one(file, 0, chunk));
  ASSERT_TRUE(write_one(file, last, chunk));
  auto slots = file.read_slots();
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(slots[0].index, 0u);
  EXPECT_EQ(slots[1].index, last);
  EXPECT_TRUE(verify_one(file, last, slots[1].hash));
  EXPECT_EQ(ChunkFile::recover_size(fd_.get(), kChunk), layout.size);
}

// A chunk whose slot cannot be written (here: past the largest file the test's file system
// allows, where it has such a limit) leaves no blocks behind.
TEST_F(ChunkFileTest, ChunkBytesWithoutTheirSlotGiveTheirBlocksBack) {
  ChunkLayout layout{uint64_t{1} << 52, kChunk};
  auto chunk = random_bytes(kChunk, 6);
  auto written = write_one(ChunkFile(fd_.get(), layout), 0, chunk);
  if (written) GTEST_SKIP() << "this file system holds a 4 PiB file";
  EXPECT_EQ(written.error().code, EFBIG);
  EXPECT_EQ(ChunkFile::disk_bytes(fd_.get()), 0u);
  EXPECT_TRUE(ChunkFile(fd_.get(), layout).read_slots().empty());
}

}  // namespace
}  // namespace lazystore
