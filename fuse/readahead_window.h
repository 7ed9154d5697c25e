#pragma once

// The read-ahead window of one open file: it starts at one chunk and doubles each time a
// sequential stream enters a new chunk, up to a cap (4x the readahead option), so a short
// sequential read (a header, a small file) queues little and a long stream soon queues a
// lot. A read that does not continue the stream resets it. A cap of 0 means read-ahead is off.

#include <algorithm>
#include <cstdint>

namespace lazystore {

class ReadaheadWindow {
 public:
  // Reads of this size or more are the kernel's read-ahead (or a program's own large reads):
  // they arrive a little out of order under concurrency, and belong to a stream wherever they are.
  static constexpr uint64_t kStreamRead = 64 * 1024;

  // Whether a read of [offset, offset + size) belongs to a stream: the start of the file, the
  // continuation of the last read, or a large read. Any other read is random: it fetches only
  // its own blocks. (A window around the last read's end would not do: random reads land in it
  // too often, 3% of them in a 64 MiB file for a 1 MiB window, and each fetched a whole chunk.)
  bool stream_read(uint64_t offset, uint64_t size) const {
    return offset == 0 || offset == next_offset_ || size >= kStreamRead;
  }

  // Called for each read [offset, offset + size) of chunk size `chunk`; returns the number of
  // chunks to queue ahead of offset + size, 0 for none.
  unsigned on_read(uint64_t offset, uint64_t size, uint32_t chunk, unsigned cap) {
    bool sequential = offset > 0 && offset == next_offset_;
    uint64_t end = offset + size;
    next_offset_ = end;
    if (!sequential || cap == 0 || chunk == 0) {
      window_ = 1;
      last_chunk_ = end / chunk_or_one(chunk);
      return 0;
    }
    uint64_t current = end / chunk;
    if (current != last_chunk_) {  // the stream has moved into a new chunk: grow
      last_chunk_ = current;
      window_ = std::min(cap, window_ * 2);
    }
    window_ = std::min(window_, cap);
    return window_;
  }

 private:
  static uint64_t chunk_or_one(uint32_t chunk) { return chunk == 0 ? 1 : chunk; }
  uint64_t next_offset_ = 0;
  uint64_t last_chunk_ = 0;
  unsigned window_ = 1;
};

}  // namespace lazystore
