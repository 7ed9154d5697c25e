#include "chunk_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "hash.h"
#include "io.h"
#include "little_endian.h"

namespace lazystore {
namespace {

constexpr size_t kSlotSize = ChunkLayout::kSlotSize;
constexpr uint64_t kSlotBatch = 4096;  // slots read at once

struct RawSlot {
  uint64_t index, hash, check;
};

// The format's version, in every check: a slot of an earlier format (1: one slot per 1 MiB
// chunk, no version) is no slot, so a data file written before is a miss, never misread.
constexpr uint64_t kFormat = 2;

// The check binds a slot to its index, the file's size, the unit size and the format.
uint64_t slot_check(uint64_t index, uint64_t hash, uint64_t size, uint32_t chunk_size) {
  uint64_t words[5] = {index, hash, size, chunk_size, kFormat};
  return xxh3_64(std::as_bytes(std::span(words)));
}

// A cleared slot: never valid, yet it still tells the file's size when it is the last slot.
uint64_t tombstone_check(uint64_t index, uint64_t size, uint32_t chunk_size) {
  return ~slot_check(index, 0, size, chunk_size);
}

void encode(std::byte* out, const RawSlot& slot) {
  put_u64_le(out, slot.index);
  put_u64_le(out + 8, slot.hash);
  put_u64_le(out + 16, slot.check);
}

RawSlot decode(const std::byte* in) { return {get_u64_le(in), get_u64_le(in + 8), get_u64_le(in + 16)}; }

bool is_valid(const RawSlot& slot, uint64_t index, const ChunkLayout& layout) {
  return slot.index == index && slot.check == slot_check(index, slot.hash, layout.size, layout.chunk_size);
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

}  // namespace

size_t ChunkLayout::chunk_length(uint64_t index) const {
  return static_cast<size_t>(std::min<uint64_t>(chunk_size, size - chunk_offset(index)));
}

std::vector<ChunkSlot> ChunkFile::read_slots() const {
  std::vector<ChunkSlot> slots;
  struct stat st {};
  if (fstat(fd_, &st) != 0) return slots;
  const uint64_t chunks = layout_.chunks();
  const uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(st.st_size), layout_.slot_offset(chunks));
  std::vector<std::byte> batch(kSlotBatch * kSlotSize);
  uint64_t pos = layout_.size;
  while (pos < end) {
    // Slots never written are a hole (zeros, which are no slot): read only where data is, so
    // the work follows the slots written, not the number of chunks the file's size implies.
    off_t data = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0 && errno != EINVAL) break;  // ENXIO: nothing but a hole up to the end
    uint64_t from = data < 0 ? pos : static_cast<uint64_t>(data);
    off_t hole = data < 0 ? -1 : lseek(fd_, data, SEEK_HOLE);
    uint64_t to = std::min<uint64_t>(end, hole < 0 ? end : static_cast<uint64_t>(hole));
    if (from >= to) break;
    uint64_t first = (from - layout_.size) / kSlotSize;
    uint64_t stop = std::min<uint64_t>(chunks, (to - layout_.size + kSlotSize - 1) / kSlotSize);
    for (uint64_t i = first; i < stop;) {
      uint64_t n = std::min<uint64_t>(kSlotBatch, stop - i);
      size_t got = read_full(fd_, batch.data(), static_cast<size_t>(n) * kSlotSize, layout_.slot_offset(i));
      for (size_t k = 0; (k + 1) * kSlotSize <= got; ++k) {
        RawSlot slot = decode(batch.data() + k * kSlotSize);
        if (is_valid(slot, i + k, layout_)) slots.push_back({i + k, slot.hash});
      }
      if (got < n * kSlotSize) return slots;
      i += n;
    }
    pos = layout_.slot_offset(stop);
  }
  return slots;
}

Status ChunkFile::write_run(uint64_t first, std::span<const std::byte> data, std::span<const uint64_t> hashes) const {
  uint64_t offset = layout_.chunk_offset(first);
  Status written = pwrite_all(fd_, data, offset);
  if (written) {
    // The slots of consecutive chunks are consecutive: one write for all of them.
    std::vector<std::byte> slots(hashes.size() * kSlotSize);
    for (size_t i = 0; i < hashes.size(); ++i) {
      uint64_t index = first + i;
      encode(slots.data() + i * kSlotSize,
             {index, hashes[i], slot_check(index, hashes[i], layout_.size, layout_.chunk_size)});
    }
    written = pwrite_all(fd_, slots, layout_.slot_offset(first));
  }
  // Bytes without their slot are no chunk (a full disk; a slot past the largest file the file
  // system allows): their blocks are given back.
  if (!written) {
    (void)fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(data.size()));
  }
  return written;
}

std::vector<bool> ChunkFile::verify_run(uint64_t first, std::span<const uint64_t> hashes) const {
  std::vector<bool> good(hashes.size(), false);
  if (hashes.empty()) return good;
  uint64_t offset = layout_.chunk_offset(first);
  uint64_t end = layout_.chunk_offset(first + hashes.size() - 1) + layout_.chunk_length(first + hashes.size() - 1);
  std::vector<std::byte> data(static_cast<size_t>(end - offset));
  size_t got = read_full(fd_, data.data(), data.size(), offset);
  for (size_t i = 0; i < hashes.size(); ++i) {
    size_t begin = static_cast<size_t>(layout_.chunk_offset(first + i) - offset);
    size_t length = layout_.chunk_length(first + i);
    if (begin + length > got) break;
    good[i] = xxh3_64(std::span<const std::byte>(data).subspan(begin, length)) == hashes[i];
  }
  return good;
}

Status ChunkFile::clear_slot(uint64_t index) const {
  std::byte slot[kSlotSize];
  encode(slot, {index, 0, tombstone_check(index, layout_.size, layout_.chunk_size)});
  return pwrite_all(fd_, slot, layout_.slot_offset(index));
}

size_t ChunkFile::read(std::byte* data, size_t length, uint64_t offset) const {
  return read_full(fd_, data, length, offset);
}

std::optional<uint64_t> ChunkFile::recover_size(int fd, uint32_t chunk_size) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < kSlotSize) return std::nullopt;
  auto length = static_cast<uint64_t>(st.st_size);
  // The last slot is the highest one written: its index k says where the content ends.
  std::byte bytes[kSlotSize];
  if (read_full(fd, bytes, kSlotSize, length - kSlotSize) != kSlotSize) return std::nullopt;
  RawSlot slot = decode(bytes);
  if (slot.index >= length / kSlotSize) return std::nullopt;
  ChunkLayout layout{length - (slot.index + 1) * kSlotSize, chunk_size};
  if (slot.index >= layout.chunks()) return std::nullopt;
  if (!is_valid(slot, slot.index, layout) && slot.check != tombstone_check(slot.index, layout.size, chunk_size)) {
    return std::nullopt;
  }
  return layout.size;
}

uint64_t ChunkFile::disk_bytes(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace lazystore
