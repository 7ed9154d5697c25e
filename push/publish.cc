#include "publish.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "fd.h"
#include "io.h"
#include "nar.h"
#include "openssl_handles.h"

namespace lazystore {
namespace {

// Reads a whole small file (narinfo, manifest) up to `limit` bytes.
Result<std::string> read_small_file(const std::string& path, size_t limit) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error("open " + path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read " + path);
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > limit)
      return make_error(EFBIG, path + ": larger than " + std::to_string(limit) + " bytes");
    out.append(buf, static_cast<size_t>(n));
  }
}

NarReadAt pread_of(int fd) {
  return [fd](uint64_t offset, std::span<std::byte> buf) -> Result<size_t> {
    for (;;) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error("read NAR");
      return static_cast<size_t>(n);
    }
  };
}

// The NAR's tree, read once from the start while its sha256 is taken.
Result<Tree> tree_and_hash(int fd, std::vector<uint8_t>& sha256) {
  EvpMdCtx ctx = make_evp_md_ctx();
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return make_error(ENOMEM, "sha256");
  uint64_t position = 0;
  NarReadAt read_at = pread_of(fd);
  NarSource source = [&](std::span<std::byte> buf) -> Result<size_t> {
    auto n = read_at(position, buf);
    if (!n) return n;
    EVP_DigestUpdate(ctx.get(), buf.data(), *n);
    position += *n;
    return n;
  };
  auto tree = tree_from_nar(source);
  if (!tree) return make_error(EINVAL, "not a valid NAR: " + tree.error().message);
  // Anything after the archive is hashed too (NarHash covers the whole file).
  std::vector<std::byte> rest(1 << 16);
  for (;;) {
    auto n = source(rest);
    if (!n) return n.error();
    if (*n == 0) break;
  }
  sha256.resize(32);
  unsigned length = 0;
  if (EVP_DigestFinal_ex(ctx.get(), sha256.data(), &length) != 1 || length != 32) return make_error(EIO, "sha256");
  return tree;
}

Status write_atomically(const std::string& directory, const std::string& name, std::string_view data) {
  std::string temp = directory + "/." + name + ".tmp-XXXXXX";
  std::vector<char> path(temp.begin(), temp.end());
  path.push_back('\0');
  Fd fd(::mkostemp(path.data(), O_CLOEXEC));
  if (!fd) return errno_error("create " + temp);
  auto cleanup = [&] { ::unlink(path.data()); };
  if (::fchmod(fd.get(), 0644) != 0) {
    cleanup();
    return errno_error("chmod " + std::string(path.data()));
  }
  if (auto st = write_all(fd.get(), data); !st) {
    cleanup();
    return st;
  }
  if (::fsync(fd.get()) != 0) {
    cleanup();
    return errno_error("fsync " + std::string(path.data()));
  }
  if (::rename(path.data(), (directory + "/" + name).c_str()) != 0) {
    cleanup();
    return errno_error("rename to " + directory + "/" + name);
  }
  return {};
}

enum class Outcome { Written, Current, Compressed };

// True when `manifest` is what these options would write and its leaves file is there, whole,
// every block's leaves matching the signed block hash.
bool is_current(const PublishOptions& options, const std::string& hash, const Manifest& manifest) {
  if (manifest.header.block_size != options.block_size || manifest.header.leaf_size != options.leaf_size) return false;
  if (!options.leaf_size) return true;
  auto leaves =
      read_small_file(options.cache_dir + "/" + hash + std::string(kLeavesSuffix), manifest.leaves_file_size());
  if (!leaves || leaves->size() != manifest.leaves_file_size()) return false;
  const auto* bytes = reinterpret_cast<const uint8_t*>(leaves->data());
  for (uint32_t node = 0; node < manifest.tree.nodes.size(); ++node) {
    for (uint64_t b = 0; b < manifest.block_count(node); ++b) {
      std::span<const uint8_t> of_block(bytes + manifest.leaves_offset(node, b),
                                        manifest.leaves_of_block(node, b) * kLeafHashBytes);
      if (!leaves_match(of_block, manifest.block_hash(node, b))) return false;
    }
  }
  return true;
}

Result<Outcome> publish_one(const PublishOptions& options, const std::string& hash, PublishSummary& summary) {
  const std::string& dir = options.cache_dir;
  auto text = read_small_file(dir + "/" + hash + ".narinfo", kMaxNarInfoBytes);
  if (!text) return text.error();
  auto info = parse_narinfo(*text);
  if (!info) return info.error();
  if (info->store_path.substr(0, hash.size()) != hash) {
    return make_error(EINVAL, "the narinfo names another path (" + info->store_path + ")");
  }
  if (info->compression != "none") return Outcome::Compressed;
  const std::string manifest_name = hash + std::string(kManifestSuffix);
  const std::vector<PublicKey> ours{options.key.public_key()};
  if (!options.force) {
    auto existing = read_small_file(dir + "/" + manifest_name, kMaxManifestBytes);
    if (existing) {
      auto verified = verify_manifest(*existing, *info, ours);
      if (verified && is_current(options, hash, *verified)) return Outcome::Current;
    } else if (existing.error().code != ENOENT) {
      return existing.error();
    }
  }
  const std::string nar_path = dir + "/" + info->url;
  Fd fd(::open(nar_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error("open " + info->url);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error("stat " + info->url);
  if (static_cast<uint64_t>(st.st_size) != info->nar_size) {
    return make_error(EINVAL, info->url + " is " + std::to_string(st.st_size) + " bytes, NarSize says " +
                                  std::to_string(info->nar_size) + ": not signing it");
  }
  std::vector<uint8_t> sha256;
  auto tree = tree_and_hash(fd.get(), sha256);
  if (!tree) return tree.error();
  if (sha256 != info->nar_sha256)
    return make_error(EINVAL, info->url + " does not match the narinfo's NarHash: not signing it");
  auto body = manifest_body(*tree, options.block_size, options.leaf_size, pread_of(fd.get()));
  if (!body) return body.error();
  auto sealed = seal_manifest(body->json, info->store_path, info->nar_sha256, info->nar_size, options.block_size,
                              options.leaf_size, options.key);
  if (!sealed) return sealed.error();
  // The leaves first: a reader that finds the manifest finds its leaves. Without leaves, an old
  // leaves file is left: nothing refers to it.
  if (options.leaf_size) {
    if (auto w = write_atomically(dir, hash + std::string(kLeavesSuffix), body->leaves); !w) return w.error();
  }
  if (auto w = write_atomically(dir, manifest_name, *sealed); !w) return w.error();
  summary.nar_bytes += info->nar_size;
  summary.manifest_bytes += sealed->size();
  summary.leaves_bytes += body->leaves.size();
  return Outcome::Written;
}

}  // namespace

Result<PublishSummary> publish_manifests(const PublishOptions& options,
                                         const std::function<void(const std::string&)>& note) {
  std::error_code ec;
  std::vector<std::string> hashes;
  for (const auto& entry : std::filesystem::directory_iterator(options.cache_dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.size() == 32 + 8 && name.ends_with(".narinfo")) hashes.push_back(name.substr(0, 32));
  }
  if (ec) return make_error(ec.value(), "cannot read " + options.cache_dir + ": " + ec.message());
  std::sort(hashes.begin(), hashes.end());
  PublishSummary summary;
  for (const std::string& hash : hashes) {
    auto outcome = publish_one(options, hash, summary);
    if (!outcome) {
      ++summary.failed;
      note(hash + ": " + outcome.error().message);
      continue;
    }
    switch (*outcome) {
      case Outcome::Written:
        ++summary.written;
        note(hash + ": manifest written");
        break;
      case Outcome::Current: ++summary.current; break;
      case Outcome::Compressed:
        ++summary.compressed;
        note(hash + ": NAR is compressed: no manifest (publish with compression=none to serve it lazily)");
        break;
    }
  }
  return summary;
}

}  // namespace lazystore
