// Upstream over a Nix binary cache served by HTTP(S) (`nix copy --to file://DIR` behind nginx, a
// CDN, S3 website): `nix-cache-info`, `<hash>.narinfo`, `<hash>.manifest` (lazystore-publish),
// `<hash>.ls` listings and NARs.
//
// - Several base URLs (SOURCE "http://a,http://b") are mirrors: a failing one (no answer, 5xx,
//   timeout) is left for the next, which then stays preferred. 404/403/410 mean "absent".
// - A store path exists once its narinfo does; with signatures required, a narinfo must carry a
//   valid ed25519 signature by a trusted key, or the path is treated as absent.
// - With signatures required, nothing unsigned is believed (a narinfo signs only the path,
//   NarHash, NarSize and references):
//   - with a manifest signed by a trusted key for this path and NarHash, the tree comes from it,
//     and each read is a Range request into the uncompressed NAR whose every block is checked
//     against the manifest's SHA-256 before it is returned; with leaves, a read of part of a
//     block fetches only its leaves and checks them with the block's leaf hashes
//     (`<hash>.leaves`, fetched at the same time; http_manifest_reads.cc);
//   - without one, the whole NAR is downloaded once (merged, kept under the cache directory),
//     matched against NarHash/NarSize, and the tree and every byte come from it. A NAR that does
//     not match makes the path absent for a while (counted, logged once).
// - With require-sigs=false the cache is trusted: `.ls` listings and unchecked Range reads.
// - A binary cache cannot be listed: list_store() answers the paths seen so far.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "curl_worker.h"
#include "manifest.h"
#include "nar_spool_store.h"
#include "narinfo.h"
#include "single_flight.h"
#include "upstream.h"

namespace lazystore {

bool is_http_source(std::string_view source);

// A whole-NAR download may take upstream-timeout plus its size at this rate, and no longer.
inline constexpr double kMinNarBytesPerSecond = 1 << 20;

class HttpUpstream final : public Upstream {
 public:
  static Result<std::unique_ptr<HttpUpstream>> open(std::string_view source, const UpstreamOptions& options);
  ~HttpUpstream() override;

  std::string describe() const override { return source_; }
  Status start() override;  // the curl worker thread
  Result<bool> exists(const StorePath& path) override;
  Result<std::vector<StorePath>> list_store() override;
  Result<Tree> list_tree(const StorePath& path) override;
  // A manifest's leaf, or its block: every read of a checked NAR fetches whole ones.
  uint32_t read_alignment(const StorePath& path) override;
  Result<size_t> read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                      std::span<std::byte> buf) override;
  Result<UpstreamStatfs> statfs() override;

  // The overall bound of a whole-NAR download of `nar_size` bytes.
  double whole_nar_seconds(uint64_t nar_size) const;

 private:
  using Clock = std::chrono::steady_clock;
  using NarInfoPtr = std::shared_ptr<const NarInfo>;
  using SpoolPtr = NarSpoolStore::SpoolPtr;
  using ManifestPtr = std::shared_ptr<const Manifest>;  // nullptr: no usable manifest
  struct Fetched {
    bool absent = false;  // 404, 403 or 410
    std::string body;
  };
  struct GetOptions {
    std::optional<std::pair<uint64_t, uint64_t>> range;
    std::function<bool(std::span<const char>)> on_data;
    std::function<Status()> reset;  // before each attempt (a streaming consumer starts over)
    size_t max_body = HttpRequest{}.max_body;
    double timeout_seconds = 0;                 // of each attempt; 0: upstream-timeout
    double stall_seconds = 0;                   // see HttpRequest
    std::optional<Clock::time_point> deadline;  // of all attempts together
  };

  HttpUpstream(std::string source, std::vector<std::string> bases, const UpstreamOptions& options,
               std::vector<PublicKey> keys);
  // One GET of `relative` (to a base URL), with retries and fail-over.
  Result<Fetched> get(const std::string& relative, const GetOptions& how);
  Status check_cache_info();
  // The verified narinfo of `path`; ENOENT when absent or refused.
  Result<NarInfoPtr> narinfo(const StorePath& path);
  // The verified manifest of `path`, nullptr when there is none (or it was refused).
  Result<ManifestPtr> manifest(const StorePath& path, const NarInfo& info);
  Result<ManifestPtr> fetch_manifest(const StorePath& path, const NarInfo& info);
  // The whole NAR of `path`, verified; ENOENT when it does not match its narinfo.
  Result<SpoolPtr> spool(const StorePath& path, const NarInfo& info);
  Result<std::unique_ptr<NarSpool>> download_nar(const StorePath& path, const NarInfo& info);
  // Exactly `into.size()` bytes of the NAR of `path` from byte `first` (one Range request).
  Status get_range(const StorePath& path, const NarInfo& info, uint64_t first, std::span<std::byte> into);
  // Block-verified Range read of file `node` of `manifest` (http_manifest_reads.cc).
  Result<size_t> read_blocks(const StorePath& path, const NarInfo& info, const Manifest& manifest, uint32_t node,
                             uint64_t offset, std::span<std::byte> buf);
  // The checked leaf hashes of blocks `blocks` of file `node`, by block; an error when the leaves
  // file is missing, short or does not match the manifest.
  Result<std::map<uint64_t, std::vector<uint8_t>>> leaves_of(const StorePath& path, const Manifest& manifest,
                                                             uint32_t node, const std::vector<uint64_t>& blocks);
  // True while the leaves of `path` are not to be used (missing or bad, for kRefusalTime).
  bool leaves_refused(const StorePath& path);
  // What a checked read of `path` is rounded to: its manifest's leaf, or its block.
  uint32_t read_unit(const StorePath& path, const ManifestHeader& header);
  Result<size_t> read_spooled(const StorePath& path, const NarInfo& info, const std::string& relative, uint64_t offset,
                              std::span<std::byte> buf);
  // require-sigs=false: the cache is trusted (listings, unchecked Range reads).
  Result<Tree> list_tree_trusting(const StorePath& path, const NarInfo& info);
  Result<size_t> read_trusting(const StorePath& path, const NarInfo& info, const Tree& tree, uint32_t node,
                               uint64_t offset, std::span<std::byte> buf);
  // True the first time `what` is said of `path` (a warning is logged once per path and kind).
  bool first_time(const std::string& what, const StorePath& path);

  const std::string source_;
  const std::vector<std::string> bases_;
  const UpstreamOptions options_;
  const std::vector<PublicKey> keys_;
  std::unique_ptr<CurlWorker> worker_;
  NarSpoolStore spools_;
  SingleFlight<ManifestPtr> manifest_flights_;

  std::mutex mutex_;
  bool cache_info_checked_ = false;
  size_t preferred_ = 0;                          // index of the base URL that answered last
  std::map<std::string, NarInfoPtr> narinfos_;    // by hash part
  std::set<std::string> seen_;                    // base names of paths that exist
  std::map<std::string, ManifestPtr> manifests_;  // by hash part; nullptr: none
  size_t manifest_nodes_ = 0;                     // nodes of the manifests held
  struct Refusal {
    std::vector<uint8_t> nar_sha256;  // the NarHash its NAR did not match
    Clock::time_point until;
  };
  std::map<std::string, Refusal> refused_;  // by hash part
  // Checked leaf hashes by (hash part, offset in the leaves file); paths whose leaves failed.
  std::map<std::pair<std::string, uint64_t>, std::vector<uint8_t>> leaves_;
  std::map<std::string, Clock::time_point> leaves_refused_;
  std::set<std::string> warned_;  // "<kind> <base name>", logged once
};

}  // namespace lazystore
