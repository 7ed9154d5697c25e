// Signed manifests (`<hash>.manifest`, common/manifest.h): the header, the body (a listing with
// block hashes, zstd or plain) and the whole check against a narinfo and a key. A reader parses a
// body only after its signature and hash passed; the fuzzer parses every body it can reach.
#include <string>

#include "fuzz_check.h"
#include "manifest.h"

using namespace lazystore;

namespace {

void check(const Manifest& m) {
  FUZZ_CHECK(!m.tree.nodes.empty() && m.tree.nodes.size() <= Tree::kMaxNodes);
  FUZZ_CHECK(m.blocks.first_block.size() == m.tree.nodes.size());
  for (uint32_t i = 0; i < m.tree.nodes.size(); ++i) {
    const TreeNode& node = m.tree.nodes[i];
    if (node.type != NodeType::Regular) {
      FUZZ_CHECK(m.block_count(i) == 0);
      continue;
    }
    FUZZ_CHECK(node.size <= m.header.nar_size && node.nar_offset <= m.header.nar_size - node.size);
    uint64_t count = m.block_count(i);
    FUZZ_CHECK(count * m.header.block_size >= node.size);
    FUZZ_CHECK(count == 0 || (count - 1) * m.header.block_size < node.size);
    if (count > 0) {
      FUZZ_CHECK(m.blocks.first_block[i] != kNoBlocks);
      FUZZ_CHECK((m.blocks.first_block[i] + count) * kBlockHashBytes <= m.blocks.hashes.size());
      FUZZ_CHECK(m.block_hash(i, count - 1).size() == kBlockHashBytes);
      if (m.header.leaf_size) {
        // Every block's leaves lie inside the leaves file.
        FUZZ_CHECK(m.leaves_of_block(i, count - 1) >= 1 && m.leaves_of_block(i, count - 1) <= m.leaf_slots());
        FUZZ_CHECK(m.leaves_offset(i, count - 1) + m.leaf_slots() * kLeafHashBytes <= m.leaves_file_size());
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  size_t body_offset = 0;
  auto header = parse_manifest_header(text, body_offset);
  if (header) {
    FUZZ_CHECK(body_offset <= text.size() && header->body_size == text.size() - body_offset);
    FUZZ_CHECK(header->block_size >= kMinManifestBlockSize && header->block_size <= kMaxManifestBlockSize);
    FUZZ_CHECK(header->leaf_size == 0 ||
               (header->leaf_size >= kMinManifestBlockSize && header->leaf_size <= header->block_size / 2));
    FUZZ_CHECK(header->nar_sha256.size() == 32 && header->body_sha256.size() == 32);
    auto body = parse_manifest_body(*header, text.substr(body_offset));
    if (body) check(*body);
    // The whole check against the narinfo the header names: never valid without the key's signature.
    NarInfo info;
    info.store_path = header->store_path;
    info.nar_sha256 = header->nar_sha256;
    info.nar_size = header->nar_size;
    PublicKey key{"fuzz-key", std::vector<uint8_t>(32, 7)};
    auto verified = verify_manifest(text, info, {key});
    FUZZ_CHECK(!verified);
  } else {
    FUZZ_CHECK(header.error().code == EINVAL);
    // The body parser on its own, as a plain listing with blocks.
    ManifestHeader plain;
    plain.store_path = "00000000000000000000000000000000-fuzz";
    plain.nar_sha256.assign(32, 0);
    plain.nar_size = uint64_t{1} << 30;
    plain.block_size = kMinManifestBlockSize;
    plain.compression = "none";
    plain.body_sha256.assign(32, 0);
    auto body = parse_manifest_body(plain, text);
    if (body)
      check(*body);
    else
      FUZZ_CHECK(body.error().code == EINVAL);
  }
  return 0;
}
