// Little-endian u64 in byte buffers: the byte order of every on-disk and wire format here
// (Nix's NAR and serve/worker protocols, the cache's slots, the tree file).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lazystore {

template <class Byte>
constexpr void put_u64_le(Byte* out, uint64_t value) {
  static_assert(sizeof(Byte) == 1);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<Byte>((value >> (8 * i)) & 0xff);
}

template <class Byte>
constexpr uint64_t get_u64_le(const Byte* in) {
  static_assert(sizeof(Byte) == 1);
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return value;
}

}  // namespace lazystore
