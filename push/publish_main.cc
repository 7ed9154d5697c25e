// lazystore-publish: the command line over publish.h.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <string>

#include "format.h"
#include "publish.h"

namespace {

constexpr const char* kDescription =
    "Writes a signed manifest next to each <hash>.narinfo of a Nix binary cache directory, so that\n"
    "lazystore mounts of it serve each store path lazily (HTTP Range reads) with every block\n"
    "checked against a SHA-256 the cache's key signed, and a <hash>.leaves file with which a small\n"
    "read fetches and checks only its own 4 KiB leaves. Run it after each `nix copy --to file://DIR`;\n"
    "paths whose manifest is current are skipped. NARs must be stored uncompressed\n"
    "(compression=none); compressed ones are listed and skipped.\n";

constexpr const char* kExitCodes = R"(Exit codes:
  0  every path has a current manifest (or is compressed, see above)
  1  some paths failed (unreadable, or their NAR does not match the narinfo's NarHash)
  2  usage error, unreadable cache directory or secret key
)";

// "DIR", "file://DIR" or "file://DIR?…&secret-key=FILE&…" (the URL given to `nix copy --to`).
std::string directory_of(const std::string& cache, std::string& key_from_url) {
  std::string dir = cache;
  if (dir.starts_with("file://")) dir = dir.substr(7);
  if (size_t q = dir.find('?'); q != std::string::npos) {
    std::string query = dir.substr(q + 1);
    dir.resize(q);
    size_t at = 0;
    while (at <= query.size()) {
      size_t amp = query.find('&', at);
      std::string param = query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
      if (param.starts_with("secret-key=")) key_from_url = param.substr(11);
      if (amp == std::string::npos) break;
      at = amp + 1;
    }
  }
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

// "65536", "64K", "1M".
std::optional<uint64_t> parse_block_size(const std::string& text) {
  uint64_t value = 0;
  size_t i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9' && value < (1u << 30); ++i)
    value = value * 10 + (text[i] - '0');
  if (i == 0) return std::nullopt;
  std::string unit = text.substr(i);
  if (unit == "K" || unit == "k")
    value <<= 10;
  else if (unit == "M" || unit == "m")
    value <<= 20;
  else if (!unit.empty())
    return std::nullopt;
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{kDescription, "lazystore-publish"};
  app.footer(kExitCodes);
  std::string cache, key_file, block_size_text = "64K", leaf_size_text = "4K";
  bool force = false, quiet = false;
  app.add_option("CACHE", cache, "the binary cache: a directory, or the file:// URL given to `nix copy --to`")
      ->required();
  app.add_option("--secret-key", key_file,
                 "the cache's secret key (nix-store --generate-binary-cache-key); default: the URL's secret-key=");
  app.add_option("--block-size", block_size_text, "bytes per hashed block: a power of two, 4K to 1M")
      ->capture_default_str();
  app.add_option("--leaf-size", leaf_size_text,
                 "bytes per leaf of a block (a small read's unit): a power of two, 4K to half the block size; 0: "
                 "no leaves (a small read then fetches its whole block)")
      ->capture_default_str();
  app.add_flag("--force", force, "rewrite manifests that are already current");
  app.add_flag("-q,--quiet", quiet, "print only failures and the summary");
  CLI11_PARSE(app, argc, argv);

  std::string key_from_url;
  lazystore::PublishOptions options;
  options.cache_dir = directory_of(cache, key_from_url);
  if (key_file.empty()) key_file = key_from_url;
  if (key_file.empty()) {
    std::fprintf(stderr, "lazystore-publish: no secret key: give --secret-key FILE or secret-key= in the URL\n");
    return 2;
  }
  auto block_size = parse_block_size(block_size_text);
  if (!block_size || *block_size > UINT32_MAX) {
    std::fprintf(stderr, "lazystore-publish: invalid --block-size '%s'\n", block_size_text.c_str());
    return 2;
  }
  options.block_size = static_cast<uint32_t>(*block_size);
  auto leaf_size = parse_block_size(leaf_size_text);
  if (!leaf_size || *leaf_size > UINT32_MAX) {
    std::fprintf(stderr, "lazystore-publish: invalid --leaf-size '%s'\n", leaf_size_text.c_str());
    return 2;
  }
  // The default leaf is dropped where the block is too small to have leaves; a leaf size asked
  // for must fit.
  if (*leaf_size > *block_size / 2 && app.count("--leaf-size") == 0) leaf_size = 0;
  if (*leaf_size != 0 && !lazystore::valid_manifest_leaf_size(*leaf_size, *block_size)) {
    std::fprintf(stderr, "lazystore-publish: --leaf-size must be 0 or a power of two from 4K to half the block size\n");
    return 2;
  }
  options.leaf_size = static_cast<uint32_t>(*leaf_size);
  options.force = force;
  FILE* f = std::fopen(key_file.c_str(), "r");
  if (!f) {
    std::fprintf(stderr, "lazystore-publish: cannot read the secret key %s\n", key_file.c_str());
    return 2;
  }
  char text[4096];
  size_t n = std::fread(text, 1, sizeof text - 1, f);
  std::fclose(f);
  auto key = lazystore::parse_secret_key(std::string_view(text, n));
  if (!key) {
    std::fprintf(stderr, "lazystore-publish: %s: %s\n", key_file.c_str(), key.error().message.c_str());
    return 2;
  }
  options.key = std::move(*key);
  auto summary = lazystore::publish_manifests(options, [&](const std::string& line) {
    bool failure =
        line.find(": manifest written") == std::string::npos && line.find(": NAR is compressed") == std::string::npos;
    if (!quiet || failure) std::fprintf(failure ? stderr : stdout, "%s\n", line.c_str());
  });
  if (!summary) {
    std::fprintf(stderr, "lazystore-publish: %s\n", summary.error().message.c_str());
    return 2;
  }
  std::printf(
      "lazystore-publish: %s: %llu manifests written (%s of NARs, %s of leaves), %llu current, %llu compressed "
      "(skipped), %llu failed\n",
      options.cache_dir.c_str(), static_cast<unsigned long long>(summary->written),
      lazystore::format_bytes(summary->nar_bytes).c_str(), lazystore::format_bytes(summary->leaves_bytes).c_str(),
      static_cast<unsigned long long>(summary->current), static_cast<unsigned long long>(summary->compressed),
      static_cast<unsigned long long>(summary->failed));
  return summary->failed ? 1 : 0;
}
