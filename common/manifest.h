// A signed manifest of one store path in a Nix binary cache (`<hash>.manifest`, written by
// lazystore-publish next to `<hash>.narinfo`): the path's tree with each file's offset in the
// NAR, and the SHA-256 of every block of every file, signed with the cache's Nix key over a
// fingerprint that binds it to the store path and its NarHash. With it, a reader can serve any
// byte range of an uncompressed NAR, verified, without downloading the whole NAR.
//
// Format, version 1 (text header, a blank line, then the body):
//
//   lazystore-manifest-1
//   StorePath: /nix/store/<hash>-<name>
//   NarHash: sha256:<nix32>             the narinfo's (signed) NarHash and NarSize
//   NarSize: <bytes>
//   BlockSize: 65536                     a power of two, 4 KiB .. 1 MiB
//   LeafSize: 4096                       optional: a power of two, 4 KiB .. BlockSize / 2
//   Compression: zstd                    of the body: zstd or none
//   BodyHash: sha256:<nix32>             of the body bytes as stored
//   BodySize: <bytes>                    of the body bytes as stored
//   Sig: <key name>:<base64 ed25519>     one or more
//
//   <body>: a `.ls` listing (JSON) whose regular files also have "blocks" (common/nar_listing.h)
//
// Signed fingerprint: "lazystore-manifest-1;/nix/store/<hash>-<name>;sha256:<nix32 NarHash>;
// <NarSize>;<BlockSize>;<Compression>;sha256:<nix32 BodyHash>;<BodySize>", then ";<LeafSize>"
// when the header has one. The body is parsed only after its signature and hash were checked.
//
// With LeafSize, each block hash is that of the block's leaf hashes, which `<hash>.leaves` holds
// (common/manifest_blocks.h): a reader can then check a single leaf of a block.
#pragma once

#include <bit>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "manifest_blocks.h"
#include "nar_listing.h"
#include "narinfo.h"
#include "result.h"
#include "tree.h"

namespace lazystore {

inline constexpr std::string_view kManifestMagic = "lazystore-manifest-1";
inline constexpr std::string_view kManifestSuffix = ".manifest";
inline constexpr std::string_view kLeavesSuffix = ".leaves";
inline constexpr uint32_t kDefaultManifestBlockSize = 64u << 10;
inline constexpr uint32_t kMinManifestBlockSize = 4u << 10;
inline constexpr uint32_t kMaxManifestBlockSize = 1u << 20;

// A LeafSize a manifest may have with BlockSize `block`: a power of two, 4 KiB .. block / 2.
inline bool valid_manifest_leaf_size(uint64_t leaf, uint64_t block) {
  return std::has_single_bit(leaf) && leaf >= kMinManifestBlockSize && leaf <= block / 2;
}
// A manifest file larger than this is refused (HTTP: not downloaded past it).
inline constexpr size_t kMaxManifestBytes = 128u << 20;
inline constexpr size_t kMaxManifestHeaderBytes = 64u << 10;

struct ManifestHeader {
  std::string store_path;           // base name "<hash>-<name>", valid
  std::vector<uint8_t> nar_sha256;  // 32 bytes
  uint64_t nar_size = 0;
  uint32_t block_size = 0;
  uint32_t leaf_size = 0;            // 0: no leaves (each block hash is that of its bytes)
  std::string compression;           // "zstd" or "none"
  std::vector<uint8_t> body_sha256;  // 32 bytes
  uint64_t body_size = 0;
  std::vector<std::string> sigs;  // "name:base64"

  std::string fingerprint() const;
};

struct Manifest {
  ManifestHeader header;
  Tree tree;           // regular files carry size, executable and nar_offset
  BlockHashes blocks;  // the hashes of every block of every file

  // Blocks of regular file `node`; the hash of its block `index` (< block_count(node)).
  uint64_t block_count(uint32_t node) const;
  std::span<const uint8_t> block_hash(uint32_t node, uint64_t index) const;

  // --- Leaves (header.leaf_size != 0) ---
  // The slots of one block in `<hash>.leaves`, and that file's size.
  uint64_t leaf_slots() const { return header.leaf_size ? header.block_size / header.leaf_size : 0; }
  uint64_t leaves_file_size() const;
  // Where the leaf hashes of block `index` of file `node` start in `<hash>.leaves`, and how many
  // leaves that block has (the file's last block may have fewer than leaf_slots()).
  uint64_t leaves_offset(uint32_t node, uint64_t index) const;
  uint64_t leaves_of_block(uint32_t node, uint64_t index) const;
};

// The header, and the offset of the body in `file`. EINVAL on anything malformed (strict: every
// key once, no unknown key, the body exactly BodySize bytes).
Result<ManifestHeader> parse_manifest_header(std::string_view file, size_t& body_offset);

// The body of `header` (already checked), decompressed and parsed; the tree must fit the NAR
// (every file inside NarSize) and every file must have exactly its blocks.
Result<Manifest> parse_manifest_body(ManifestHeader header, std::string_view body);

// The whole check of a manifest fetched for the store path of `info` (a narinfo the caller
// trusts): header, the store path, NarHash and NarSize of `info`, a valid signature by one of
// `keys`, the body hash, then the body. EINVAL (with the reason) when it must not be used.
Result<Manifest> verify_manifest(std::string_view file, const NarInfo& info, const std::vector<PublicKey>& keys);

// True when `header` is signed by one of `keys`.
bool manifest_signed_by(const ManifestHeader& header, const std::vector<PublicKey>& keys);

// --- Writing (lazystore-publish) ---

// Reads `buf.size()` bytes of the NAR at `offset` (short only at its end).
using NarReadAt = std::function<Result<size_t>(uint64_t offset, std::span<std::byte> buf)>;

struct ManifestBody {
  std::string json;    // the body, before compression
  std::string leaves;  // the contents of `<hash>.leaves` (empty without leaves)
};

// The body of the manifest of a NAR whose own tree (tree_from_nar) is `tree`, with leaves of
// `leaf_size` bytes unless it is 0 (it must then be a power of two, 4 KiB .. block_size / 2).
Result<ManifestBody> manifest_body(const Tree& tree, uint32_t block_size, uint32_t leaf_size, const NarReadAt& read_at);

// The manifest file: header signed with `key`, then `body` compressed with zstd.
Result<std::string> seal_manifest(std::string_view body, std::string_view store_path_base,
                                  std::span<const uint8_t> nar_sha256, uint64_t nar_size, uint32_t block_size,
                                  uint32_t leaf_size, const SecretKey& key);

}  // namespace lazystore
