// A binary cache's `<hash>.ls` NAR listing (`write-nar-listing=true`) → the Tree of a store path,
// with each regular file's `narOffset`, so a file can be read with one range request into the
// uncompressed NAR. The input is hostile: size, nesting depth, node count, names and targets are
// bounded and validated; anything malformed is EINVAL, never a crash or unbounded memory.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "result.h"
#include "tree.h"

namespace lazystore {

// A listing larger than this is refused before it is parsed (HTTP: before it is downloaded).
inline constexpr size_t kMaxNarListingBytes = 64u << 20;
// The largest regular file a listing, a manifest or a downloaded NAR may announce (1 TiB): past
// it the store path is refused where the size enters, before any cache sizes anything by it.
// (To be replaced by the daemon-wide cap on served file sizes once there is one.)
inline constexpr uint64_t kMaxFileSize = uint64_t{1} << 40;

// {"version":1,"root":{"type":"directory","entries":{"name":{"type":"regular","size":N,
//  "executable":true,"narOffset":N},"l":{"type":"symlink","target":"..."}}}}
Result<Tree> parse_nar_listing(std::string_view json);

// A manifest's body (common/manifest.h) is such a listing in which every regular file also has
// "blocks": the base64 of the SHA-256 of each `block_size` bytes of its contents (the last block
// shorter; none for an empty file), concatenated.
inline constexpr size_t kBlockHashBytes = 32;
inline constexpr uint64_t kNoBlocks = UINT64_MAX;
// The body of a manifest holds the hashes too: larger than a listing may be.
inline constexpr size_t kMaxBlockListingBytes = 256u << 20;
struct BlockHashes {
  uint32_t block_size = 0;            // in: the manifest's block size
  std::vector<uint8_t> hashes;        // out: kBlockHashBytes per block, all files
  std::vector<uint64_t> first_block;  // out: per node, its first block's index (kNoBlocks: none)
};
Result<Tree> parse_nar_listing_with_blocks(std::string_view json, BlockHashes& blocks);

}  // namespace lazystore
