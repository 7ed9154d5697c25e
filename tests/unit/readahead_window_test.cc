#include "readahead_window.h"

#include <gtest/gtest.h>

#include <vector>

namespace lazystore {
namespace {

constexpr uint32_t kChunk = 1u << 20;

TEST(ReadaheadWindow, GrowsPerChunkOfASequentialStreamUpToTheCap) {
  ReadaheadWindow w;
  EXPECT_EQ(w.on_read(0, 128 << 10, kChunk, 16), 0u);  // offset 0 starts the stream
  unsigned last = 0;
  std::vector<unsigned> windows;
  for (uint64_t off = 128 << 10; off < 64ull * kChunk; off += 128 << 10) {
    last = w.on_read(off, 128 << 10, kChunk, 16);
    if (windows.empty() || windows.back() != last) windows.push_back(last);
  }
  EXPECT_EQ(windows, (std::vector<unsigned>{1, 2, 4, 8, 16}));
  EXPECT_EQ(last, 16u);
}

TEST(ReadaheadWindow, ARandomReadResetsIt) {
  ReadaheadWindow w;
  w.on_read(0, kChunk, kChunk, 16);
  EXPECT_EQ(w.on_read(kChunk, kChunk, kChunk, 16), 2u);
  EXPECT_EQ(w.on_read(2ull * kChunk, kChunk, kChunk, 16), 4u);
  EXPECT_EQ(w.on_read(40ull * kChunk, 4096, kChunk, 16), 0u);         // not the stream's end
  EXPECT_EQ(w.on_read(40ull * kChunk + 4096, 4096, kChunk, 16), 1u);  // the window starts over
}

TEST(ReadaheadWindow, TellsStreamReadsFromRandomOnes) {
  ReadaheadWindow w;
  EXPECT_TRUE(w.stream_read(0, 4096));                   // the start of a file
  EXPECT_FALSE(w.stream_read(5ull * kChunk, 4096));      // a small read elsewhere
  EXPECT_TRUE(w.stream_read(5ull * kChunk, 128 << 10));  // the kernel's read-ahead, anywhere
  w.on_read(5ull * kChunk, 4096, kChunk, 16);
  EXPECT_TRUE(w.stream_read(5ull * kChunk + 4096, 4096));   // its continuation
  EXPECT_FALSE(w.stream_read(5ull * kChunk + 8192, 4096));  // near it, but not it
  EXPECT_FALSE(w.stream_read(5ull * kChunk - 4096, 4096));
}

TEST(ReadaheadWindow, CapZeroIsOff) {
  ReadaheadWindow w;
  w.on_read(0, kChunk, kChunk, 0);
  EXPECT_EQ(w.on_read(kChunk, kChunk, kChunk, 0), 0u);
  EXPECT_EQ(w.on_read(2ull * kChunk, kChunk, kChunk, 0), 0u);
}

}  // namespace
}  // namespace lazystore
