#include "manifest.h"

#include <openssl/evp.h>
#include <zstd.h>

#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>

#include "nix32.h"
#include "store_path.h"

namespace lazystore {
namespace {

constexpr size_t kMaxManifestSigs = 16;
constexpr int kZstdLevel = 12;

Error invalid(const std::string& what) { return make_error(EINVAL, "manifest: " + what); }

bool sha256(std::span<const uint8_t> data, uint8_t out[32]) { return sha256_of(std::as_bytes(data), out); }

Result<uint64_t> parse_number(std::string_view key, std::string_view value) {
  uint64_t out = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    return invalid("invalid " + std::string(key));
  }
  return out;
}

Result<std::vector<uint8_t>> parse_hash(std::string_view key, std::string_view value) {
  if (!value.starts_with("sha256:")) return invalid(std::string(key) + " is not a sha256 hash");
  auto decoded = nix32::decode(value.substr(7), 32);
  if (!decoded || value.size() != 7 + nix32::encoded_length(32)) return invalid("invalid " + std::string(key));
  return decoded;
}

std::string hash_text(std::span<const uint8_t> digest) { return "sha256:" + nix32::encode(digest); }

bool is_power_of_two(uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

bool valid_block_size(uint64_t n) {
  return is_power_of_two(n) && n >= kMinManifestBlockSize && n <= kMaxManifestBlockSize;
}

Result<std::string> decompress(const ManifestHeader& header, std::string_view body) {
  if (header.compression == "none") return std::string(body);
  unsigned long long size = ZSTD_getFrameContentSize(body.data(), body.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
    return invalid("body is not a zstd frame of known size");
  }
  if (size > kMaxBlockListingBytes) return invalid("body too large");
  std::string out(static_cast<size_t>(size), '\0');
  size_t got = ZSTD_decompress(out.data(), out.size(), body.data(), body.size());
  if (ZSTD_isError(got) || got != out.size()) return invalid("corrupt zstd body");
  return out;
}

// Writes the tree under `node` as listing JSON, with the blocks of each file.
class BodyWriter {
 public:
  BodyWriter(const Tree& tree, uint32_t block_size, uint32_t leaf_size, const NarReadAt& read_at)
      : tree_(tree), block_size_(block_size), leaf_size_(leaf_size), read_at_(read_at), buffer_(block_size) {}

  Status node(uint32_t index) {
    const TreeNode& n = tree_.nodes[index];
    switch (n.type) {
      case NodeType::Directory: {
        out_ += R"({"type":"directory","entries":{)";
        bool first = true;
        for (uint32_t child : n.children) {
          if (!first) out_ += ',';
          first = false;
          if (auto st = string(tree_.nodes[child].name, child); !st) return st;
          out_ += ':';
          if (auto st = node(child); !st) return st;
        }
        out_ += "}}";
        return {};
      }
      case NodeType::Symlink:
        out_ += R"({"type":"symlink","target":)";
        if (auto st = string(n.target, index); !st) return st;
        out_ += '}';
        return {};
      case NodeType::Regular:
        out_ += R"({"type":"regular","size":)" + std::to_string(n.size);
        if (n.executable) out_ += R"(,"executable":true)";
        out_ += R"(,"narOffset":)" + std::to_string(n.nar_offset) + R"(,"blocks":")";
        if (auto st = blocks(n); !st) return st;
        out_ += "\"}";
        return {};
    }
    return make_error(EINVAL, "unknown node type");
  }

  std::string take() { return std::move(out_); }
  std::string take_leaves() { return std::move(leaves_); }

 private:
  Status string(const std::string& text, uint32_t of) {
    try {
      out_ += nlohmann::json(text).dump();
    } catch (const std::exception&) {  // not UTF-8: a listing cannot hold it either
      return make_error(EILSEQ, "the name or target of entry " + std::to_string(of) + " is not UTF-8");
    }
    return {};
  }

  Status blocks(const TreeNode& file) {
    std::vector<uint8_t> hashes;
    for (uint64_t at = 0; at < file.size; at += block_size_) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(block_size_, file.size - at));
      size_t done = 0;
      while (done < want) {
        auto got = read_at_(file.nar_offset + at + done, std::span(buffer_).subspan(done, want - done));
        if (!got) return got.error();
        if (*got == 0) return make_error(EIO, "the NAR ends inside a file");
        done += *got;
      }
      std::span<const std::byte> block(buffer_.data(), want);
      uint8_t digest[32];
      if (leaf_size_ == 0) {
        if (!block_digest(block, 0, digest)) return make_error(EIO, "sha256 failed");
      } else {
        // Each leaf hashed once: for the leaves file and for the block's digest.
        std::vector<uint8_t> leaves;
        if (!append_leaf_hashes(block, leaf_size_, leaves) || !digest_of_leaves(leaves, digest)) {
          return make_error(EIO, "sha256 failed");
        }
        leaves.resize((block_size_ / leaf_size_) * kLeafHashBytes);  // the block's slots, the rest zero
        leaves_.append(reinterpret_cast<const char*>(leaves.data()), leaves.size());
      }
      hashes.insert(hashes.end(), digest, digest + 32);
    }
    out_ += base64_encode(hashes);
    return {};
  }

  const Tree& tree_;
  const uint32_t block_size_;
  const uint32_t leaf_size_;
  const NarReadAt& read_at_;
  std::vector<std::byte> buffer_;
  std::string out_;
  std::string leaves_;
};

}  // namespace

std::string ManifestHeader::fingerprint() const {
  return std::string(kManifestMagic) + ";" + std::string(StorePath::kStoreDir) + "/" + store_path + ";" +
         hash_text(nar_sha256) + ";" + std::to_string(nar_size) + ";" + std::to_string(block_size) + ";" + compression +
         ";" + hash_text(body_sha256) + ";" + std::to_string(body_size) +
         (leaf_size ? ";" + std::to_string(leaf_size) : std::string());
}

uint64_t Manifest::block_count(uint32_t node) const {
  if (node >= tree.nodes.size() || tree.nodes[node].type != NodeType::Regular) return 0;
  uint64_t size = tree.nodes[node].size;
  return size / header.block_size + (size % header.block_size != 0);
}

std::span<const uint8_t> Manifest::block_hash(uint32_t node, uint64_t index) const {
  uint64_t first = blocks.first_block[node];
  return std::span(blocks.hashes).subspan(static_cast<size_t>((first + index) * kBlockHashBytes), kBlockHashBytes);
}

uint64_t Manifest::leaves_file_size() const {
  return blocks.hashes.size() / kBlockHashBytes * leaf_slots() * kLeafHashBytes;
}

uint64_t Manifest::leaves_offset(uint32_t node, uint64_t index) const {
  return (blocks.first_block[node] + index) * leaf_slots() * kLeafHashBytes;
}

uint64_t Manifest::leaves_of_block(uint32_t node, uint64_t index) const {
  if (!header.leaf_size) return 0;
  uint64_t start = index * header.block_size;
  return leaf_count(std::min<uint64_t>(header.block_size, tree.nodes[node].size - start), header.leaf_size);
}

Result<ManifestHeader> parse_manifest_header(std::string_view file, size_t& body_offset) {
  size_t end = file.find("\n\n");
  if (end == std::string_view::npos || end > kMaxManifestHeaderBytes) return invalid("no header");
  std::string_view text = file.substr(0, end + 1);
  body_offset = end + 2;
  ManifestHeader header;
  unsigned seen = 0;
  auto once = [&](unsigned bit, std::string_view key) -> Status {
    if (seen & bit) return invalid(std::string(key) + " given twice");
    seen |= bit;
    return {};
  };
  bool first = true;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = text.substr(eol + 1);
    if (first) {
      if (line != kManifestMagic) return invalid("not a lazystore manifest of version 1");
      first = false;
      continue;
    }
    size_t colon = line.find(": ");
    if (colon == std::string_view::npos) return invalid("malformed header line");
    std::string_view key = line.substr(0, colon), value = line.substr(colon + 2);
    if (key == "StorePath") {
      if (auto st = once(1, key); !st) return st.error();
      if (!value.starts_with(StorePath::kStoreDir) || value.size() <= StorePath::kStoreDir.size() + 1 ||
          value[StorePath::kStoreDir.size()] != '/' ||
          !StorePath::is_valid(value.substr(StorePath::kStoreDir.size() + 1))) {
        return invalid("invalid StorePath");
      }
      header.store_path = std::string(value.substr(StorePath::kStoreDir.size() + 1));
    } else if (key == "NarHash") {
      if (auto st = once(2, key); !st) return st.error();
      auto hash = parse_hash(key, value);
      if (!hash) return hash.error();
      header.nar_sha256 = std::move(*hash);
    } else if (key == "NarSize") {
      if (auto st = once(4, key); !st) return st.error();
      auto n = parse_number(key, value);
      if (!n) return n.error();
      if (*n == 0 || *n > kMaxNarSize) return invalid("absurd NarSize");
      header.nar_size = *n;
    } else if (key == "BlockSize") {
      if (auto st = once(8, key); !st) return st.error();
      auto n = parse_number(key, value);
      if (!n) return n.error();
      if (!valid_block_size(*n)) return invalid("BlockSize must be a power of two from 4 KiB to 1 MiB");
      header.block_size = static_cast<uint32_t>(*n);
    } else if (key == "LeafSize") {  // optional
      if (auto st = once(128, key); !st) return st.error();
      auto n = parse_number(key, value);
      if (!n) return n.error();
      if (*n > kMaxManifestBlockSize) return invalid("invalid LeafSize");
      header.leaf_size = static_cast<uint32_t>(*n);
    } else if (key == "Compression") {
      if (auto st = once(16, key); !st) return st.error();
      if (value != "zstd" && value != "none") return invalid("unsupported Compression");
      header.compression = std::string(value);
    } else if (key == "BodyHash") {
      if (auto st = once(32, key); !st) return st.error();
      auto hash = parse_hash(key, value);
      if (!hash) return hash.error();
      header.body_sha256 = std::move(*hash);
    } else if (key == "BodySize") {
      if (auto st = once(64, key); !st) return st.error();
      auto n = parse_number(key, value);
      if (!n) return n.error();
      header.body_size = *n;
    } else if (key == "Sig") {
      if (header.sigs.size() >= kMaxManifestSigs) return invalid("too many signatures");
      header.sigs.emplace_back(value);
    } else {
      return invalid("unknown header key");
    }
  }
  if (first) return invalid("no header");
  if ((seen & 127) != 127) return invalid("header lacks a required key");
  if ((seen & 128) && !valid_manifest_leaf_size(header.leaf_size, header.block_size)) {
    return invalid("LeafSize must be a power of two from 4 KiB to half the BlockSize");
  }
  if (header.body_size != file.size() - body_offset) return invalid("body is not BodySize bytes");
  return header;
}

Result<Manifest> parse_manifest_body(ManifestHeader header, std::string_view body) {
  auto json = decompress(header, body);
  if (!json) return json.error();
  Manifest manifest;
  manifest.blocks.block_size = header.block_size;
  auto tree = parse_nar_listing_with_blocks(*json, manifest.blocks);
  if (!tree) return invalid(tree.error().message);
  manifest.tree = std::move(*tree);
  for (uint32_t i = 0; i < manifest.tree.nodes.size(); ++i) {
    const TreeNode& node = manifest.tree.nodes[i];
    if (node.type != NodeType::Regular) continue;
    // Inside the NAR, after its header: a listing that names bytes the NAR does not have is not
    // a manifest of it.
    if (node.size > header.nar_size || node.nar_offset > header.nar_size - node.size || node.nar_offset == 0) {
      return invalid("file " + manifest.tree.path_of(i) + " lies outside the NAR");
    }
  }
  manifest.header = std::move(header);
  return manifest;
}

bool manifest_signed_by(const ManifestHeader& header, const std::vector<PublicKey>& keys) {
  return signed_by(header.fingerprint(), header.sigs, keys);
}

Result<Manifest> verify_manifest(std::string_view file, const NarInfo& info, const std::vector<PublicKey>& keys) {
  if (file.size() > kMaxManifestBytes) return invalid("too large");
  size_t body_offset = 0;
  auto header = parse_manifest_header(file, body_offset);
  if (!header) return header.error();
  if (header->store_path != info.store_path) return invalid("it is the manifest of " + header->store_path);
  if (header->nar_sha256 != info.nar_sha256 || header->nar_size != info.nar_size) {
    return invalid("its NarHash or NarSize is not the narinfo's");
  }
  if (!manifest_signed_by(*header, keys)) {
    return invalid(header->sigs.empty() ? "unsigned" : "no valid signature by a trusted key");
  }
  std::string_view body = file.substr(body_offset);
  uint8_t digest[32];
  if (!sha256(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size()), digest) ||
      std::memcmp(digest, header->body_sha256.data(), 32) != 0) {
    return invalid("its body does not match BodyHash");
  }
  return parse_manifest_body(std::move(*header), body);
}

Result<ManifestBody> manifest_body(const Tree& tree, uint32_t block_size, uint32_t leaf_size,
                                   const NarReadAt& read_at) {
  if (!valid_block_size(block_size)) return make_error(EINVAL, "block size must be a power of two from 4 KiB to 1 MiB");
  if (leaf_size != 0 && !valid_manifest_leaf_size(leaf_size, block_size)) {
    return make_error(EINVAL, "leaf size must be a power of two from 4 KiB to half the block size");
  }
  if (tree.nodes.empty()) return make_error(EINVAL, "empty tree");
  BodyWriter writer(tree, block_size, leaf_size, read_at);
  ManifestBody out;
  out.json = R"({"version":1,"root":)";
  if (auto st = writer.node(Tree::kRoot); !st) return st.error();
  out.json += writer.take();
  out.json += '}';
  out.leaves = writer.take_leaves();
  return out;
}

Result<std::string> seal_manifest(std::string_view body, std::string_view store_path_base,
                                  std::span<const uint8_t> nar_sha256, uint64_t nar_size, uint32_t block_size,
                                  uint32_t leaf_size, const SecretKey& key) {
  if (leaf_size != 0 && !valid_manifest_leaf_size(leaf_size, block_size))
    return make_error(EINVAL, "invalid leaf size");
  std::string compressed(ZSTD_compressBound(body.size()), '\0');
  size_t n = ZSTD_compress(compressed.data(), compressed.size(), body.data(), body.size(), kZstdLevel);
  if (ZSTD_isError(n)) return make_error(EIO, std::string("zstd: ") + ZSTD_getErrorName(n));
  compressed.resize(n);
  ManifestHeader header;
  header.store_path = std::string(store_path_base);
  header.nar_sha256.assign(nar_sha256.begin(), nar_sha256.end());
  header.nar_size = nar_size;
  header.block_size = block_size;
  header.leaf_size = leaf_size;
  header.compression = "zstd";
  header.body_sha256.resize(32);
  if (!sha256(std::span(reinterpret_cast<const uint8_t*>(compressed.data()), compressed.size()),
              header.body_sha256.data())) {
    return make_error(EIO, "sha256 failed");
  }
  header.body_size = compressed.size();
  auto sig = sign_message(key, header.fingerprint());
  if (!sig) return sig.error();
  std::string out = std::string(kManifestMagic) + "\n";
  out += "StorePath: " + std::string(StorePath::kStoreDir) + "/" + header.store_path + "\n";
  out += "NarHash: " + hash_text(header.nar_sha256) + "\n";
  out += "NarSize: " + std::to_string(nar_size) + "\n";
  out += "BlockSize: " + std::to_string(block_size) + "\n";
  if (leaf_size) out += "LeafSize: " + std::to_string(leaf_size) + "\n";
  out += "Compression: zstd\n";
  out += "BodyHash: " + hash_text(header.body_sha256) + "\n";
  out += "BodySize: " + std::to_string(header.body_size) + "\n";
  out += "Sig: " + *sig + "\n\n";
  out += compressed;
  return out;
}

}  // namespace lazystore
