// xxh3 helpers over xxHash: the checksums recorded for cache chunks and metadata files.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace lazystore {

uint64_t xxh3_64(std::span<const std::byte> data);
uint64_t xxh3_64(std::string_view data);
// 128-bit xxh3 as 32 lower-case hex chars: a file name for a cache key.
std::string xxh3_128_hex(std::string_view data);

// Streaming xxh3-64 (RAII over XXH3_state_t).
class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;
  void update(std::span<const std::byte> data);
  void update(std::string_view data);
  uint64_t digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lazystore
