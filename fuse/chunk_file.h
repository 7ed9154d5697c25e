// One data file of the content cache, as it is on disk.
//
// An upstream file's bytes sit at their own offsets (a sparse file), so a read of cached data is
// spliced from the data file. After the content, at offset `size`, comes one 24-byte slot per
// chunk: {index, xxh3 of the chunk, check}, little-endian. The check binds a slot to its index,
// the file's size, the chunk size and the format's version: a slot of another size or an
// earlier format, or a torn write, is no slot. (A "chunk" here is the format's unit; the content
// cache writes 4 KiB blocks, so that a small random read caches and verifies only what it read.) A
// chunk's bytes are written before its slot, and the slot holds the hash of the bytes as
// fetched, so a kill -9 at any instant leaves either no slot (a miss) or a slot whose hash tells
// whether the bytes on disk are right.
//
// The file's size is not stored: the data file's length is `size + 24 * (k + 1)` for the highest
// slot k written, and that last slot's index and check give the size back (recover_size). A
// cleared slot (a tombstone, left by verification) is never valid, yet still tells the size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "result.h"

namespace lazystore {

// Where a file's chunks and slots lie in its data file.
struct ChunkLayout {
  static constexpr size_t kSlotSize = 24;

  uint64_t size = 0;
  uint32_t chunk_size = 1u << 20;

  uint64_t chunks() const { return size / chunk_size + (size % chunk_size != 0 ? 1 : 0); }
  uint64_t chunk_of(uint64_t offset) const { return offset / chunk_size; }
  uint64_t chunk_offset(uint64_t index) const { return index * chunk_size; }
  size_t chunk_length(uint64_t index) const;
  uint64_t slot_offset(uint64_t index) const { return size + index * kSlotSize; }
};

struct ChunkSlot {
  uint64_t index = 0;
  uint64_t hash = 0;  // xxh3-64 of the chunk's bytes as fetched
};

// The format's operations on an open data file; the descriptor stays the caller's.
class ChunkFile {
 public:
  ChunkFile(int fd, ChunkLayout layout) : fd_(fd), layout_(layout) {}

  // The valid slots, in index order.
  std::vector<ChunkSlot> read_slots() const;
  // Writes the bytes of chunks first, first + 1, ... (one hash each), then their slots.
  Status write_run(uint64_t first, std::span<const std::byte> data, std::span<const uint64_t> hashes) const;
  // Whether the bytes on disk of chunks first, first + 1, ... hash to `hashes`, read at once:
  // one answer per hash (false where the file is too short).
  std::vector<bool> verify_run(uint64_t first, std::span<const uint64_t> hashes) const;
  // Replaces the chunk's slot by a tombstone: a miss from now on.
  Status clear_slot(uint64_t index) const;
  // Reads up to `length` bytes at `offset`; short at the end of the file or on an error.
  size_t read(std::byte* data, size_t length, uint64_t offset) const;

  // The size the data file was written for, from its last slot; nullopt when that is no slot.
  static std::optional<uint64_t> recover_size(int fd, uint32_t chunk_size);
  // The disk blocks the data file takes, in bytes (0 when unknown).
  static uint64_t disk_bytes(int fd);

 private:
  int fd_;
  ChunkLayout layout_;
};

}  // namespace lazystore
