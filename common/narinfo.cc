#include "narinfo.h"

#include <openssl/evp.h>

#include <charconv>
#include <cstring>
#include <memory>

#include "nix32.h"
#include "openssl_handles.h"

namespace lazystore {
namespace {

constexpr size_t kMaxReferences = 100000;
constexpr size_t kMaxSigs = 64;

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};

Result<uint64_t> parse_u64(std::string_view key, std::string_view value) {
  uint64_t out = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || end != value.data() + value.size() || value.empty()) {
    return make_error(EINVAL, "narinfo: invalid " + std::string(key) + " '" + std::string(value.substr(0, 100)) + "'");
  }
  if (out > kMaxNarSize) {
    return make_error(EINVAL, "narinfo: " + std::string(key) + " " + std::to_string(out) + " is absurd");
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "sha256:<nix32>" (what Nix writes) or "sha256:<base16>" → 32 bytes.
Result<std::vector<uint8_t>> parse_sha256(std::string_view key, std::string_view value) {
  if (!value.starts_with("sha256:")) {
    return make_error(EINVAL, "narinfo: " + std::string(key) + " is not a sha256 hash");
  }
  std::string_view digits = value.substr(7);
  if (digits.size() == nix32::encoded_length(32)) {
    auto decoded = nix32::decode(digits, 32);
    if (!decoded) return make_error(EINVAL, "narinfo: invalid " + std::string(key));
    return decoded;
  }
  if (digits.size() == 64) {
    std::vector<uint8_t> out(32);
    for (size_t i = 0; i < 32; ++i) {
      int hi = hex_value(digits[2 * i]), lo = hex_value(digits[2 * i + 1]);
      if (hi < 0 || lo < 0) return make_error(EINVAL, "narinfo: invalid " + std::string(key));
      out[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    return out;
  }
  return make_error(EINVAL, "narinfo: invalid " + std::string(key) + " length");
}

Status check_base_name(std::string_view key, std::string_view name) {
  if (!StorePath::is_valid(name)) {
    return make_error(
        EINVAL, "narinfo: invalid store path in " + std::string(key) + ": '" + std::string(name.substr(0, 300)) + "'");
  }
  return {};
}

}  // namespace

std::string NarInfo::fingerprint() const {
  std::string out = "1;" + std::string(StorePath::kStoreDir) + "/" + store_path +
                    ";sha256:" + nix32::encode(nar_sha256) + ";" + std::to_string(nar_size) + ";";
  for (size_t i = 0; i < references.size(); ++i) {
    if (i) out += ",";
    out += std::string(StorePath::kStoreDir) + "/" + references[i];
  }
  return out;
}

Result<NarInfo> parse_narinfo(std::string_view text) {
  if (text.size() > kMaxNarInfoBytes) return make_error(EINVAL, "narinfo: too large");
  NarInfo info;
  bool have_path = false, have_url = false, have_hash = false, have_size = false, have_compression = false;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return make_error(EINVAL, "narinfo: malformed line '" + std::string(line.substr(0, 100)) + "'");
    }
    std::string_view key = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    if (value.starts_with(' ')) value.remove_prefix(1);  // "References:" may have no value
    if (key == "StorePath") {
      if (!value.starts_with(StorePath::kStoreDir) || value.size() <= StorePath::kStoreDir.size() ||
          value[StorePath::kStoreDir.size()] != '/') {
        return make_error(EINVAL, "narinfo: StorePath is not in /nix/store");
      }
      std::string_view base = value.substr(StorePath::kStoreDir.size() + 1);
      if (auto st = check_base_name(key, base); !st) return st.error();
      info.store_path = std::string(base);
      have_path = true;
    } else if (key == "URL") {
      // Relative to the cache: no scheme tricks, no way out of it, nothing a URL must escape.
      if (value.empty() || value.starts_with('/') || value.find("..") != std::string_view::npos ||
          value.find("://") != std::string_view::npos || value.size() > 1024) {
        return make_error(EINVAL, "narinfo: invalid URL '" + std::string(value.substr(0, 100)) + "'");
      }
      for (char c : value) {
        if (static_cast<unsigned char>(c) <= ' ' || c == '?' || c == '#' || c == '%' || c >= 127) {
          return make_error(EINVAL, "narinfo: invalid character in URL");
        }
      }
      info.url = std::string(value);
      have_url = true;
    } else if (key == "Compression") {
      info.compression = std::string(value);
      have_compression = true;
    } else if (key == "FileHash") {
      auto hash = parse_sha256(key, value);
      if (!hash) return hash.error();
      info.file_hash = std::string(value);
    } else if (key == "FileSize") {
      auto size = parse_u64(key, value);
      if (!size) return size.error();
      info.file_size = *size;
    } else if (key == "NarHash") {
      auto hash = parse_sha256(key, value);
      if (!hash) return hash.error();
      info.nar_hash = std::string(value);
      info.nar_sha256 = std::move(*hash);
      have_hash = true;
    } else if (key == "NarSize") {
      auto size = parse_u64(key, value);
      if (!size) return size.error();
      info.nar_size = *size;
      have_size = true;
    } else if (key == "References") {
      info.references.clear();
      while (!value.empty()) {
        size_t space = value.find(' ');
        std::string_view ref = value.substr(0, space);
        value = space == std::string_view::npos ? std::string_view() : value.substr(space + 1);
        if (ref.empty()) continue;
        if (auto st = check_base_name(key, ref); !st) return st.error();
        if (info.references.size() >= kMaxReferences) return make_error(EINVAL, "narinfo: too many references");
        info.references.emplace_back(ref);
      }
    } else if (key == "Deriver") {
      if (value != "unknown-deriver") {
        if (auto st = check_base_name(key, value); !st) return st.error();
        info.deriver = std::string(value);
      }
    } else if (key == "Sig") {
      if (info.sigs.size() >= kMaxSigs) return make_error(EINVAL, "narinfo: too many signatures");
      info.sigs.emplace_back(value);
    } else if (key == "CA") {
      info.ca = std::string(value);
    }
  }
  if (!have_path) return make_error(EINVAL, "narinfo: no StorePath");
  if (!have_url) return make_error(EINVAL, "narinfo: no URL");
  if (!have_hash) return make_error(EINVAL, "narinfo: no NarHash");
  if (!have_size || info.nar_size == 0) return make_error(EINVAL, "narinfo: no NarSize");
  // Nix's default for a narinfo without the field.
  if (!have_compression) info.compression = "bzip2";
  return info;
}

Result<std::vector<uint8_t>> base64_decode(std::string_view text) {
  static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (text.size() % 4 != 0) return make_error(EINVAL, "base64: length is not a multiple of 4");
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  uint32_t bits = 0;
  int count = 0;
  size_t padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '=') {
      if (i + 2 < text.size()) return make_error(EINVAL, "base64: padding inside the text");
      ++padding;
      continue;
    }
    if (padding) return make_error(EINVAL, "base64: data after padding");
    size_t v = kAlphabet.find(c);
    if (v == std::string_view::npos) return make_error(EINVAL, "base64: invalid character");
    bits = (bits << 6) | static_cast<uint32_t>(v);
    if (++count == 4) {
      out.push_back(static_cast<uint8_t>(bits >> 16));
      out.push_back(static_cast<uint8_t>(bits >> 8));
      out.push_back(static_cast<uint8_t>(bits));
      bits = 0;
      count = 0;
    }
  }
  if (padding == 1 && count == 3) {
    out.push_back(static_cast<uint8_t>(bits >> 10));
    out.push_back(static_cast<uint8_t>(bits >> 2));
  } else if (padding == 2 && count == 2) {
    out.push_back(static_cast<uint8_t>(bits >> 4));
  } else if (padding != 0 || count != 0) {
    return make_error(EINVAL, "base64: truncated");
  }
  return out;
}

Result<PublicKey> parse_public_key(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return make_error(EINVAL, "public key '" + std::string(text.substr(0, 100)) + "' is not NAME:BASE64");
  }
  auto key = base64_decode(text.substr(colon + 1));
  if (!key || key->size() != 32) {
    return make_error(
        EINVAL, "public key '" + std::string(text.substr(0, colon)) + "': not the base64 of a 32-byte ed25519 key");
  }
  return PublicKey{std::string(text.substr(0, colon)), std::move(*key)};
}

bool has_valid_signature(const NarInfo& info, const std::vector<PublicKey>& keys) {
  return signed_by(info.fingerprint(), info.sigs, keys);
}

bool signed_by(std::string_view message, const std::vector<std::string>& sigs, const std::vector<PublicKey>& keys) {
  for (const std::string& sig : sigs) {
    size_t colon = sig.find(':');
    if (colon == std::string::npos) continue;
    std::string_view name = std::string_view(sig).substr(0, colon);
    auto raw = base64_decode(std::string_view(sig).substr(colon + 1));
    if (!raw || raw->size() != 64) continue;
    for (const PublicKey& key : keys) {
      if (key.name != name) continue;
      std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(
          EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.key.data(), key.key.size()));
      EvpMdCtx ctx = make_evp_md_ctx();
      if (!pkey || !ctx) continue;
      if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) continue;
      if (EVP_DigestVerify(ctx.get(), raw->data(), raw->size(), reinterpret_cast<const unsigned char*>(message.data()),
                           message.size()) == 1) {
        return true;
      }
    }
  }
  return false;
}

PublicKey SecretKey::public_key() const { return PublicKey{name, std::vector<uint8_t>(key.begin() + 32, key.end())}; }

Result<SecretKey> parse_secret_key(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return make_error(EINVAL, "secret key is not NAME:BASE64");
  }
  std::string name(text.substr(0, colon));
  auto key = base64_decode(text.substr(colon + 1));
  if (!key || key->size() != 64) {
    return make_error(EINVAL, "secret key '" + name + "': not the base64 of a 64-byte ed25519 key");
  }
  // The seed must give the public half the file carries (a damaged key signs nothing useful).
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, key->data(), 32));
  uint8_t derived[32];
  size_t length = sizeof derived;
  if (!pkey || EVP_PKEY_get_raw_public_key(pkey.get(), derived, &length) != 1 || length != 32 ||
      std::memcmp(derived, key->data() + 32, 32) != 0) {
    return make_error(EINVAL, "secret key '" + name + "': its public half does not match its seed");
  }
  return SecretKey{std::move(name), std::move(*key)};
}

Result<std::string> sign_message(const SecretKey& key, std::string_view message) {
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, key.key.data(), 32));
  EvpMdCtx ctx = make_evp_md_ctx();
  if (!pkey || !ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) {
    return make_error(EIO, "ed25519: cannot start signing");
  }
  uint8_t sig[64];
  size_t length = sizeof sig;
  if (EVP_DigestSign(ctx.get(), sig, &length, reinterpret_cast<const unsigned char*>(message.data()), message.size()) !=
          1 ||
      length != 64) {
    return make_error(EIO, "ed25519: signing failed");
  }
  return key.name + ":" + base64_encode(std::span<const uint8_t>(sig, 64));
}

std::string base64_encode(std::span<const uint8_t> bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (size_t rest = bytes.size() - i; rest) {
    uint32_t v = uint32_t{bytes[i]} << 16 | (rest == 2 ? uint32_t{bytes[i + 1]} << 8 : 0);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace lazystore
