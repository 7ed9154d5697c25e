// Signed manifests (common/manifest.h): written from a NAR made by Nix, signed with a key made by
// `nix-store --generate-binary-cache-key` (its signatures are Nix's, byte for byte), and every way
// one must be refused: another key, another path or NarHash, a changed block hash or body, a
// malformed header, blocks that do not fit the sizes.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "test_support.h"
#include "manifest.h"
#include "nar.h"
#include "narinfo.h"

namespace lazystore {
namespace {

std::string data(const std::string& name) { return http_test_data(name); }

SecretKey secret() { return parse_secret_key(data("lazystore-test-2.sec")).value(); }
PublicKey public_key() { return parse_public_key(data("lazystore-test-2.pub")).value(); }
NarInfo info() { return parse_narinfo(data("signed-2.narinfo")).value(); }

NarReadAt reader(const std::string& nar) {
  return [nar](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
    if (offset >= nar.size()) return size_t{0};
    size_t n = std::min<uint64_t>(buf.size(), nar.size() - offset);
    std::memcpy(buf.data(), nar.data() + offset, n);
    return n;
  };
}

ManifestBody contents_of(const std::string& nar, uint32_t block_size, uint32_t leaf_size) {
  auto tree = tree_from_nar(nar_source_from(std::as_bytes(std::span(nar))));
  return manifest_body(tree.value(), block_size, leaf_size, reader(nar)).value();
}

std::string body_of(const std::string& nar, uint32_t block_size = kMinManifestBlockSize) {
  return contents_of(nar, block_size, 0).json;
}

std::string manifest_of(const std::string& body, const NarInfo& ni, const SecretKey& key,
                        uint32_t block_size = kMinManifestBlockSize, uint32_t leaf_size = 0) {
  return seal_manifest(body, ni.store_path, ni.nar_sha256, ni.nar_size, block_size, leaf_size, key).value();
}

// The NAR of a directory holding one file `big` with `contents`.
std::string nar_of_one_file(const std::string& contents) {
  TempDir temp("manifest-blocks");
  std::string dir = temp.str();
  { std::ofstream(dir + "/big", std::ios::binary) << contents; }
  std::string nar;
  EXPECT_TRUE(dump_path(dir, [&](std::span<const std::byte> d) -> Status {
    nar.append(reinterpret_cast<const char*>(d.data()), d.size());
    return {};
  }));
  return nar;
}

std::vector<uint8_t> sha256(std::string_view bytes) {
  std::vector<uint8_t> out(32);
  unsigned length = 0;
  EVP_Digest(bytes.data(), bytes.size(), out.data(), &length, EVP_sha256(), nullptr);
  return out;
}

TEST(SecretKey, SignsExactlyAsNix) {
  // Ed25519 is deterministic: our signature of the narinfo's fingerprint is the one Nix wrote.
  NarInfo ni = info();
  auto sig = sign_message(secret(), ni.fingerprint());
  ASSERT_TRUE(sig) << sig.error().message;
  EXPECT_EQ(*sig, ni.sigs.at(0));
  EXPECT_EQ(secret().public_key().key, public_key().key);
  EXPECT_TRUE(has_valid_signature(ni, {public_key()}));
}

TEST(SecretKey, MalformedKeysAreRefused) {
  EXPECT_FALSE(parse_secret_key("no-colon"));
  EXPECT_FALSE(parse_secret_key("name:AAAA"));
  std::string text = data("lazystore-test-2.sec");
  auto key = parse_secret_key(text);
  ASSERT_TRUE(key);
  // A seed whose public half was swapped for another key's is refused.
  std::vector<uint8_t> bad = key->key;
  bad[40] ^= 1;
  EXPECT_FALSE(parse_secret_key("x:" + base64_encode(bad)));
}

TEST(Base64, EncodeDecodeRoundTrip) {
  for (size_t n = 0; n < 70; ++n) {
    std::vector<uint8_t> bytes(n);
    for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 37 + 11);
    auto decoded = base64_decode(base64_encode(bytes));
    ASSERT_TRUE(decoded) << n;
    EXPECT_EQ(*decoded, bytes) << n;
  }
  EXPECT_EQ(base64_encode(std::vector<uint8_t>{'f', 'o', 'o', 'b'}), "Zm9vYg==");
}

TEST(Manifest, RoundTripGivesTheNarsTreeAndBlockHashes) {
  std::string nar = data("signed.nar");
  NarInfo ni = info();
  std::string file = manifest_of(body_of(nar), ni, secret());
  auto m = verify_manifest(file, ni, {public_key()});
  ASSERT_TRUE(m) << m.error().message;
  auto tree = tree_from_nar(nar_source_from(std::as_bytes(std::span(nar)))).value();
  EXPECT_EQ(m->tree, tree);
  auto a = m->tree.resolve("a");
  ASSERT_TRUE(a);
  ASSERT_EQ(m->block_count(*a), 1u);
  const TreeNode& node = m->tree.nodes[*a];
  auto expected = sha256(std::string_view(nar).substr(node.nar_offset, node.size));
  auto got = m->block_hash(*a, 0);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin()));
  EXPECT_EQ(m->header.block_size, kMinManifestBlockSize);
  EXPECT_EQ(m->header.store_path, ni.store_path);
}

TEST(Manifest, ManyBlocksOfOneFile) {
  // A file of 2.5 blocks: three hashes, the last one of half a block.
  std::string contents(kMinManifestBlockSize * 5 / 2, '\0');
  for (size_t i = 0; i < contents.size(); ++i) contents[i] = static_cast<char>(i * 7);
  std::string nar = nar_of_one_file(contents);
  NarInfo ni = info();
  ni.nar_size = nar.size();
  ni.nar_sha256 = sha256(nar);
  auto m = verify_manifest(manifest_of(body_of(nar), ni, secret()), ni, {public_key()});
  ASSERT_TRUE(m) << m.error().message;
  uint32_t big = *m->tree.resolve("big");
  ASSERT_EQ(m->block_count(big), 3u);
  for (uint64_t b = 0; b < 3; ++b) {
    size_t at = b * kMinManifestBlockSize;
    auto expected =
        sha256(std::string_view(contents).substr(at, std::min<size_t>(kMinManifestBlockSize, contents.size() - at)));
    auto got = m->block_hash(big, b);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin())) << b;
  }
}

TEST(Manifest, LeavesLetOneLeafOfABlockBeChecked) {
  // 16 KiB blocks of 4 KiB leaves; a file of 2.5 blocks: its last block has 2 leaves of 4.
  constexpr uint32_t kBlock = 16u << 10, kLeaf = 4u << 10;
  std::string contents(kBlock * 5 / 2, '\0');
  for (size_t i = 0; i < contents.size(); ++i) contents[i] = static_cast<char>(i * 13 + i / 4096);
  std::string nar = nar_of_one_file(contents);
  NarInfo ni = info();
  ni.nar_size = nar.size();
  ni.nar_sha256 = sha256(nar);
  ManifestBody body = contents_of(nar, kBlock, kLeaf);
  auto m = verify_manifest(manifest_of(body.json, ni, secret(), kBlock, kLeaf), ni, {public_key()});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->header.leaf_size, kLeaf);
  uint32_t big = *m->tree.resolve("big");
  ASSERT_EQ(m->block_count(big), 3u);
  ASSERT_EQ(m->leaf_slots(), 4u);
  ASSERT_EQ(body.leaves.size(), m->leaves_file_size());
  ASSERT_EQ(m->leaves_file_size(), 3u * 4 * kLeafHashBytes);
  for (uint64_t b = 0; b < 3; ++b) {
    const uint64_t leaves = m->leaves_of_block(big, b);
    EXPECT_EQ(leaves, b < 2 ? 4u : 2u);
    auto at = reinterpret_cast<const uint8_t*>(body.leaves.data()) + m->leaves_offset(big, b);
    std::span<const uint8_t> of_block(at, leaves * kLeafHashBytes);
    // The signed block hash is that of the block's leaf hashes, and of its bytes (block_digest).
    EXPECT_TRUE(leaves_match(of_block, m->block_hash(big, b))) << b;
    std::string_view bytes =
        std::string_view(contents).substr(b * kBlock, std::min<size_t>(kBlock, contents.size() - b * kBlock));
    uint8_t digest[32];
    ASSERT_TRUE(block_digest(std::as_bytes(std::span(bytes)), kLeaf, digest));
    EXPECT_EQ(std::memcmp(digest, m->block_hash(big, b).data(), 32), 0) << b;
    for (uint64_t l = 0; l < leaves; ++l) {
      auto leaf = std::as_bytes(std::span(bytes.substr(l * kLeaf, kLeaf)));
      EXPECT_TRUE(sha256_matches(leaf, of_block.subspan(l * kLeafHashBytes, kLeafHashBytes))) << b << " " << l;
      // A leaf checked against another leaf's hash fails.
      EXPECT_FALSE(sha256_matches(leaf, of_block.subspan(((l + 1) % leaves) * kLeafHashBytes, kLeafHashBytes)));
    }
    // Slots past a short block's leaves are zero; one changed leaf hash no longer matches.
    for (uint64_t l = leaves; l < 4; ++l) {
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(at) + l * kLeafHashBytes, kLeafHashBytes),
                std::string(kLeafHashBytes, '\0'));
    }
    std::vector<uint8_t> changed(of_block.begin(), of_block.end());
    changed[5] ^= 1;
    EXPECT_FALSE(leaves_match(changed, m->block_hash(big, b)));
  }
}

TEST(Manifest, LeafSizeIsSignedAndChecked) {
  constexpr uint32_t kBlock = 16u << 10, kLeaf = 4u << 10;
  NarInfo ni = info();
  std::string nar = data("signed.nar");
  std::string with_leaves = manifest_of(contents_of(nar, kBlock, kLeaf).json, ni, secret(), kBlock, kLeaf);
  std::string without = manifest_of(contents_of(nar, kBlock, 0).json, ni, secret(), kBlock, 0);
  ASSERT_TRUE(verify_manifest(with_leaves, ni, {public_key()}));
  ASSERT_TRUE(verify_manifest(without, ni, {public_key()}));
  EXPECT_NE(with_leaves.find("LeafSize: 4096\n"), std::string::npos);
  EXPECT_EQ(without.find("LeafSize"), std::string::npos);
  auto edit = [](std::string file, const std::string& from, const std::string& to) {
    size_t at = file.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return file.replace(at, from.size(), to);
  };
  // The leaf size is in the signed fingerprint: dropped, changed or added, the signature fails.
  for (const std::string& bad :
       {edit(with_leaves, "LeafSize: 4096\n", ""), edit(with_leaves, "LeafSize: 4096", "LeafSize: 8192"),
        edit(without, "BlockSize: 16384\n", "BlockSize: 16384\nLeafSize: 4096\n")}) {
    auto m = verify_manifest(bad, ni, {public_key()});
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message.find("no valid signature"), std::string::npos) << m.error().message;
  }
  size_t offset = 0;
  for (const char* value : {"0", "2048", "3072", "16384", "32768", "4096\nLeafSize: 4096", "-1", "x"}) {
    std::string bad = edit(with_leaves, "LeafSize: 4096", "LeafSize: " + std::string(value));
    EXPECT_FALSE(parse_manifest_header(bad, offset)) << value;
  }
  // The writer refuses what the reader would.
  auto tree = tree_from_nar(nar_source_from(std::as_bytes(std::span(nar)))).value();
  EXPECT_FALSE(manifest_body(tree, kBlock, kBlock, reader(nar)));
  EXPECT_FALSE(manifest_body(tree, kBlock, 2048, reader(nar)));
  EXPECT_FALSE(seal_manifest("{}", ni.store_path, ni.nar_sha256, ni.nar_size, kBlock, 6000, secret()));
}

TEST(Manifest, SignedByAnotherKeyIsRefused) {
  NarInfo ni = info();
  std::string file = manifest_of(body_of(data("signed.nar")), ni, secret());
  auto other = parse_public_key(data("lazystore-test-1.pub")).value();
  auto m = verify_manifest(file, ni, {other});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("no valid signature"), std::string::npos) << m.error().message;
  // The right key under another name does not count either (Nix matches names too).
  PublicKey renamed = public_key();
  renamed.name = "someone-else";
  EXPECT_FALSE(verify_manifest(file, ni, {renamed}));
}

TEST(Manifest, MovedToAnotherPathOrNarIsRefused) {
  NarInfo ni = info();
  std::string file = manifest_of(body_of(data("signed.nar")), ni, secret());
  NarInfo other_path = ni;
  other_path.store_path = "0" + ni.store_path.substr(1);
  EXPECT_FALSE(verify_manifest(file, other_path, {public_key()}));
  NarInfo other_nar = ni;
  other_nar.nar_sha256[0] ^= 1;
  EXPECT_FALSE(verify_manifest(file, other_nar, {public_key()}));
  NarInfo other_size = ni;
  other_size.nar_size += 8;
  EXPECT_FALSE(verify_manifest(file, other_size, {public_key()}));
  // Rewriting the header to the other path breaks the signature.
  std::string moved = file;
  size_t at = moved.find(ni.store_path);
  moved[at] = '0';
  EXPECT_FALSE(verify_manifest(moved, other_path, {public_key()}));
}

TEST(Manifest, ChangedBlockHashOrBodyIsRefused) {
  NarInfo ni = info();
  std::string body = body_of(data("signed.nar"));
  // One block hash changed, then sealed with the right key: refused by its body hash.
  std::string file = manifest_of(body, ni, secret());
  size_t body_at = file.find("\n\n") + 2;
  for (size_t i = body_at; i < file.size(); i += 7) {
    std::string changed = file;
    changed[i] ^= 0x20;
    EXPECT_FALSE(verify_manifest(changed, ni, {public_key()})) << i;
  }
  // A body whose block hash was edited before sealing is a valid manifest of other bytes; the
  // reader's block check refuses those bytes. Here: the edited hash is what the manifest says.
  size_t blocks = body.find("\"blocks\":\"") + 10;
  std::string edited = body;
  edited[blocks] = edited[blocks] == 'A' ? 'B' : 'A';
  auto m = verify_manifest(manifest_of(edited, ni, secret()), ni, {public_key()});
  ASSERT_TRUE(m) << m.error().message;
  auto a = *m->tree.resolve("a");
  auto real = sha256(std::string_view(data("signed.nar")).substr(m->tree.nodes[a].nar_offset, m->tree.nodes[a].size));
  auto said = m->block_hash(a, 0);
  EXPECT_FALSE(std::equal(said.begin(), said.end(), real.begin()));
}

TEST(Manifest, MalformedHeadersAreRefused) {
  NarInfo ni = info();
  std::string good = manifest_of(body_of(data("signed.nar")), ni, secret());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string out = good;
    size_t at = out.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    out.replace(at, from.size(), to);
    return out;
  };
  size_t offset = 0;
  EXPECT_TRUE(parse_manifest_header(good, offset));
  for (const std::string& bad : {
           with("lazystore-manifest-1", "lazystore-manifest-2"),
           with("BlockSize: 4096", "BlockSize: 4095"),
           with("BlockSize: 4096", "BlockSize: 2048"),
           with("BlockSize: 4096", "BlockSize: 2097152"),
           with("Compression: zstd", "Compression: xz"),
           with("NarSize: 480", "NarSize: 4611686018427387905"),
           with("NarSize: 480", "NarSize: -1"),
           with("NarSize: 480\n", "NarSize: 480\nNarSize: 480\n"),
           with("NarSize: 480\n", ""),
           with("NarSize: 480\n", "NarSize: 480\nExtra: 1\n"),
           with("StorePath: /nix/store/", "StorePath: /nix/store/../"),
           with("BodySize: ", "BodySize: 1"),
           good.substr(0, good.size() - 1),
           good.substr(0, good.find("\n\n")),
           std::string(),
       }) {
    EXPECT_FALSE(parse_manifest_header(bad, offset)) << bad.substr(0, 300);
    EXPECT_FALSE(verify_manifest(bad, ni, {public_key()}));
  }
}

TEST(Manifest, BodiesThatDoNotFitAreRefused) {
  NarInfo ni = info();
  auto header_for = [&](uint32_t block_size) {
    ManifestHeader h;
    h.store_path = ni.store_path;
    h.nar_sha256 = ni.nar_sha256;
    h.nar_size = ni.nar_size;
    h.block_size = block_size;
    h.compression = "none";
    return h;
  };
  std::string hash = base64_encode(std::vector<uint8_t>(32, 1));
  std::string two = base64_encode(std::vector<uint8_t>(64, 1));
  auto file = [](const std::string& entry) { return R"({"version":1,"root":)" + entry + "}"; };
  // Accepted: one block for 5 bytes, none for an empty file.
  EXPECT_TRUE(parse_manifest_body(header_for(4096),
                                  file(R"({"type":"regular","size":5,"narOffset":96,"blocks":")" + hash + "\"}")));
  EXPECT_TRUE(parse_manifest_body(header_for(4096), file(R"({"type":"regular","size":0,"narOffset":96,"blocks":""})")));
  for (const std::string& bad : {
           file(R"({"type":"regular","size":5,"narOffset":96})"),                              // no blocks
           file(R"({"type":"regular","size":5,"narOffset":96,"blocks":")" + two + "\"}"),      // too many
           file(R"({"type":"regular","size":5000,"narOffset":96,"blocks":")" + hash + "\"}"),  // too few
           file(R"({"type":"regular","size":0,"narOffset":96,"blocks":")" + hash + "\"}"),     // empty file
           file(R"({"type":"regular","size":5,"narOffset":96,"blocks":"!!!!"})"),              // not base64
           file(R"({"type":"regular","size":5,"narOffset":96,"blocks":5})"),                   // not a string
           file(R"({"type":"regular","size":5,"narOffset":96,"blocks":")" + hash + R"(","blocks":")" + hash + "\"}"),
           file(R"({"type":"regular","size":5,"narOffset":479,"blocks":")" + hash + "\"}"),  // beyond NarSize
           file(R"({"type":"regular","size":5,"narOffset":0,"blocks":")" + hash + "\"}"),    // no offset
           file(R"({"type":"regular","size":4611686018427387904,"narOffset":96,"blocks":")" + hash + "\"}"),
           file(R"({"type":"regular","size":18446744073709551615,"narOffset":96,"blocks":")" + hash + "\"}"),
           std::string("not json"),
       }) {
    EXPECT_FALSE(parse_manifest_body(header_for(4096), bad)) << bad;
  }
  ManifestHeader zstd = header_for(4096);
  zstd.compression = "zstd";
  EXPECT_FALSE(parse_manifest_body(zstd, "not a zstd frame"));
}

}  // namespace
}  // namespace lazystore
