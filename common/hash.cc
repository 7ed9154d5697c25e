#include "hash.h"

// XXH3_state_t by value: one allocation per stream and no null state to handle.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <cstdio>

namespace lazystore {

uint64_t xxh3_64(std::span<const std::byte> data) { return XXH3_64bits(data.data(), data.size()); }

uint64_t xxh3_64(std::string_view data) { return XXH3_64bits(data.data(), data.size()); }

std::string xxh3_128_hex(std::string_view data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  char text[33];
  // High half first: the canonical (big-endian) form that xxhsum prints.
  std::snprintf(text, sizeof text, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return std::string(text, 32);
}

struct Xxh3Stream::State {
  XXH3_state_t state;
};

Xxh3Stream::Xxh3Stream() : state_(std::make_unique<State>()) { XXH3_64bits_reset(&state_->state); }

Xxh3Stream::~Xxh3Stream() = default;

void Xxh3Stream::update(std::span<const std::byte> data) {
  XXH3_64bits_update(&state_->state, data.data(), data.size());
}

void Xxh3Stream::update(std::string_view data) { XXH3_64bits_update(&state_->state, data.data(), data.size()); }

uint64_t Xxh3Stream::digest() const { return XXH3_64bits_digest(&state_->state); }

}  // namespace lazystore
