#include "manifest_blocks.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

namespace lazystore {

bool sha256_of(std::span<const std::byte> data, uint8_t out[32]) {
  unsigned length = 0;
  return EVP_Digest(data.data(), data.size(), out, &length, EVP_sha256(), nullptr) == 1 && length == 32;
}

bool append_leaf_hashes(std::span<const std::byte> block, uint32_t leaf_size, std::vector<uint8_t>& out) {
  if (leaf_size == 0) return false;
  for (size_t at = 0; at < block.size(); at += leaf_size) {
    uint8_t digest[32];
    if (!sha256_of(block.subspan(at, std::min<size_t>(leaf_size, block.size() - at)), digest)) return false;
    out.insert(out.end(), digest, digest + kLeafHashBytes);
  }
  return true;
}

bool block_digest(std::span<const std::byte> block, uint32_t leaf_size, uint8_t out[32]) {
  if (leaf_size == 0) return sha256_of(block, out);
  std::vector<uint8_t> leaves;
  leaves.reserve(static_cast<size_t>(leaf_count(block.size(), leaf_size)) * kLeafHashBytes);
  return append_leaf_hashes(block, leaf_size, leaves) && digest_of_leaves(leaves, out);
}

bool digest_of_leaves(std::span<const uint8_t> leaves, uint8_t out[32]) {
  return sha256_of(std::as_bytes(leaves), out);
}

bool leaves_match(std::span<const uint8_t> leaves, std::span<const uint8_t> block_hash) {
  uint8_t digest[32];
  return block_hash.size() == 32 && digest_of_leaves(leaves, digest) && std::memcmp(digest, block_hash.data(), 32) == 0;
}

bool sha256_matches(std::span<const std::byte> data, std::span<const uint8_t> expected) {
  uint8_t digest[32];
  return expected.size() == 32 && sha256_of(data, digest) && std::memcmp(digest, expected.data(), 32) == 0;
}

}  // namespace lazystore
