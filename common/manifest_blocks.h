// The hash a manifest signs for one block of a file, and the leaves of a block (common/manifest.h).
//
// - Without leaves (no LeafSize in the header) a block's hash is the SHA-256 of its bytes.
// - With leaves, every LeafSize bytes of a block (the last one shorter) is a leaf, and the
//   block's hash is the SHA-256 of its leaves' SHA-256s, concatenated, and `<hash>.leaves`
//   holds the leaf hashes (layout below).
//   A reader that wants one leaf fetches the block's leaf hashes (a few hundred bytes), checks them
//   against the signed block hash, and then the leaf's bytes against its own hash: a 4 KiB read
//   moves about 4.5 KiB, and a whole block is still checked from its bytes alone.
//
// Layout of `<hash>.leaves`: for every block of the manifest, in the order of its "blocks"
// (Manifest::block_index), BlockSize / LeafSize slots of kLeafHashBytes; a block with fewer leaves
// (a file's last block) leaves its other slots zero. The file is not signed: every slot a reader
// uses is checked against a signed block hash first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace lazystore {

inline constexpr size_t kLeafHashBytes = 32;
inline constexpr uint32_t kDefaultManifestLeafSize = 4u << 10;

// Leaves of a block of `length` bytes.
inline uint64_t leaf_count(uint64_t length, uint32_t leaf_size) {
  return length / leaf_size + (length % leaf_size != 0);
}

// The SHA-256 of `data`; false only when OpenSSL fails.
bool sha256_of(std::span<const std::byte> data, uint8_t out[32]);

// Appends the leaf hashes of `block` (kLeafHashBytes per leaf) to `out`.
bool append_leaf_hashes(std::span<const std::byte> block, uint32_t leaf_size, std::vector<uint8_t>& out);

// The hash a manifest signs for `block`: its SHA-256 (leaf_size 0), or that of its leaf hashes.
bool block_digest(std::span<const std::byte> block, uint32_t leaf_size, uint8_t out[32]);

// The hash a manifest signs for a block whose leaf hashes are `leaves` (all of them, in order).
bool digest_of_leaves(std::span<const uint8_t> leaves, uint8_t out[32]);

// True when `leaves` (the block's leaf hashes, exactly its leaf count) hash to `block_hash`.
bool leaves_match(std::span<const uint8_t> leaves, std::span<const uint8_t> block_hash);

// True when `data` hashes to `expected` (32 bytes).
bool sha256_matches(std::span<const std::byte> data, std::span<const uint8_t> expected);

}  // namespace lazystore
