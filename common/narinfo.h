// A binary cache's `<hash>.narinfo`: parsed, validated, and its ed25519 signatures checked the
// way Nix checks them (the fingerprint below, keys "name:base64(32-byte public key)").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"
#include "store_path.h"

namespace lazystore {

// Caps on what a binary cache may hand us (hostile input stays bounded):
inline constexpr size_t kMaxNarInfoBytes = 1 << 20;  // a narinfo is a few hundred bytes
// NarSize and FileSize above this are refused: file sizes must fit a signed 64-bit off_t.
inline constexpr uint64_t kMaxNarSize = uint64_t{1} << 62;

struct NarInfo {
  std::string store_path;               // base name "<hash>-<name>", valid
  std::string url;                      // relative to the cache's base URL, e.g. "nar/<filehash>.nar.xz"
  std::string compression;              // "none", "xz", "zstd", "bzip2", ...; Nix's default is "bzip2"
  std::string file_hash;                // "sha256:<nix32>" of the compressed file, optional
  uint64_t file_size = 0;               // optional (0 = unknown)
  std::string nar_hash;                 // "sha256:<nix32>", required
  std::vector<uint8_t> nar_sha256;      // nar_hash decoded (32 bytes)
  uint64_t nar_size = 0;                // required, > 0
  std::vector<std::string> references;  // base names
  std::string deriver;                  // base name or ""
  std::vector<std::string> sigs;        // "keyname:base64(signature)"
  std::string ca;                       // content address or ""

  // What Nix signs: "1;/nix/store/<path>;<narHash>;<narSize>;<ref>,<ref>,..." (full paths).
  std::string fingerprint() const;
};

// Parses "Key: value" lines. Unknown keys are ignored (as Nix does); required ones are StorePath,
// URL, NarHash (sha256) and NarSize; every store path must be valid. EINVAL on anything else.
Result<NarInfo> parse_narinfo(std::string_view text);

// A trusted key "name:base64(32 bytes)" as `nix-store --generate-binary-cache-key` writes it.
struct PublicKey {
  std::string name;
  std::vector<uint8_t> key;  // 32 bytes
};
Result<PublicKey> parse_public_key(std::string_view text);

// True when at least one of info's signatures is by one of `keys` and verifies.
bool has_valid_signature(const NarInfo& info, const std::vector<PublicKey>& keys);

// True when one of `sigs` ("keyname:base64(ed25519 signature)") is a valid signature of
// `message` by one of `keys` (the key names must match, as in Nix).
bool signed_by(std::string_view message, const std::vector<std::string>& sigs, const std::vector<PublicKey>& keys);

// A secret key "name:base64(64 bytes: ed25519 seed, then public key)", the format of
// `nix-store --generate-binary-cache-key`; the seed must give that public key.
struct SecretKey {
  std::string name;
  std::vector<uint8_t> key;  // 64 bytes
  PublicKey public_key() const;
};
Result<SecretKey> parse_secret_key(std::string_view text);
// "name:base64(ed25519 signature of message)", as a narinfo's Sig line holds it.
Result<std::string> sign_message(const SecretKey& key, std::string_view message);

// Standard base64 (with padding), as Nix uses for keys and signatures.
Result<std::vector<uint8_t>> base64_decode(std::string_view text);
std::string base64_encode(std::span<const uint8_t> bytes);

}  // namespace lazystore
