// Upstream over a Nix binary cache served by HTTP(S) (`nix copy --to file://DIR` behind nginx, a
// CDN, S3 website): `nix-cache-info`, `<hash>.narinfo`, `<hash>.ls` listings and NARs.
//
// - Several base URLs (SOURCE "http://a,http://b") are mirrors: a failing one (no answer, 5xx,
//   timeout) is left for the next, which then stays preferred. 404/403/410 mean "absent".
// - A store path exists once its narinfo does; with signatures required, a narinfo must carry a
//   valid ed25519 signature by a trusted key, or the path is treated as absent.
// - With `Compression: none` and a `.ls` listing, a file's bytes are one Range request into the
//   NAR (lazy). Otherwise the whole NAR is streamed once through the decompressor into a spool
//   file and its NarHash checked before anything from it is served.
// - A binary cache cannot be listed: list_store() answers the paths seen so far.
#pragma once

#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "curl_worker.h"
#include "nar_spool.h"
#include "narinfo.h"
#include "upstream.h"

namespace lazystore {

bool is_http_source(std::string_view source);

class HttpUpstream final : public Upstream {
 public:
  static Result<std::unique_ptr<HttpUpstream>> open(std::string_view source, const UpstreamOptions& options);
  ~HttpUpstream() override;

  std::string describe() const override { return source_; }
  Status start() override;  // the curl worker thread
  Result<bool> exists(const StorePath& path) override;
  Result<std::vector<StorePath>> list_store() override;
  Result<Tree> list_tree(const StorePath& path) override;
  Result<size_t> read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                      std::span<std::byte> buf) override;
  Result<UpstreamStatfs> statfs() override;

 private:
  using NarInfoPtr = std::shared_ptr<const NarInfo>;
  using SpoolPtr = std::shared_ptr<const NarSpool>;
  struct Fetched {
    bool absent = false;  // 404, 403 or 410
    std::string body;
  };

  HttpUpstream(std::string source, std::vector<std::string> bases, const UpstreamOptions& options,
               std::vector<PublicKey> keys);
  // One GET of `relative` (to a base URL), with retries and fail-over. `reset` runs before each
  // attempt (a streaming consumer starts over); on_data as in HttpRequest.
  Result<Fetched> get(const std::string& relative, std::optional<std::pair<uint64_t, uint64_t>> range,
                      const std::function<bool(std::span<const char>)>& on_data,
                      const std::function<Status()>& reset, double stall_seconds = 0,
                      size_t max_body = HttpRequest{}.max_body);
  Status check_cache_info();
  // The verified narinfo of `path`; ENOENT when absent or refused.
  Result<NarInfoPtr> narinfo(const StorePath& path);
  // The whole NAR of `path`, verified (merged with concurrent requests for it).
  Result<SpoolPtr> spool(const StorePath& path, const NarInfo& info);
  Result<SpoolPtr> build_spool(const StorePath& path, const NarInfo& info);

  const std::string source_;
  const std::vector<std::string> bases_;
  const UpstreamOptions options_;
  const std::vector<PublicKey> keys_;
  std::unique_ptr<CurlWorker> worker_;

  std::mutex mutex_;
  bool cache_info_checked_ = false;
  size_t preferred_ = 0;  // index of the base URL that answered last
  std::map<std::string, NarInfoPtr> narinfos_;  // by hash part
  std::set<std::string> seen_;                  // base names of paths that exist
  std::map<std::string, std::shared_future<Result<SpoolPtr>>> spools_;  // by hash part
  std::vector<std::string> spool_order_;        // oldest first, for the bound below
  uint64_t spool_bytes_ = 0;
};

}  // namespace lazystore
