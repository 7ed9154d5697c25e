#include "http_upstream.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "log.h"
#include "nar_listing.h"
#include "stats.h"

namespace lazystore {
namespace {

constexpr int kRounds = 2;                      // passes over all base URLs before giving up
constexpr size_t kMaxNarInfos = 100000;         // verified narinfos kept in memory
constexpr size_t kMaxManifests = 4096;          // manifests (or "none") kept in memory
constexpr size_t kMaxManifestNodes = 4u << 20;  // tree nodes of the manifests kept in memory
constexpr size_t kMaxWarned = 100000;
// A path whose NAR did not match its narinfo stays absent this long before it is tried again.
constexpr auto kRefusalTime = std::chrono::seconds(60);

// A listing must describe the NAR the narinfo names: every file inside it, no sizes beyond it.
Status fits_nar(const Tree& tree, uint64_t nar_size) {
  for (const TreeNode& node : tree.nodes) {
    if (node.type != NodeType::Regular) continue;
    if (node.size > nar_size || node.nar_offset > nar_size - node.size) {
      return make_error(EINVAL, "NAR listing: file " + tree.path_of(static_cast<uint32_t>(&node - tree.nodes.data())) +
                                    " (" + std::to_string(node.size) + " bytes at " + std::to_string(node.nar_offset) +
                                    ") lies outside the NAR of " + std::to_string(nar_size) + " bytes");
    }
  }
  return {};
}

bool is_absent_status(long status) { return status == 404 || status == 403 || status == 410; }

void count(std::atomic<uint64_t> Stats::*field, Stats* stats, uint64_t n = 1) {
  if (stats) (stats->*field) += n;
}

}  // namespace

bool is_http_source(std::string_view source) { return source.starts_with("http://") || source.starts_with("https://"); }

HttpUpstream::HttpUpstream(std::string source, std::vector<std::string> bases, const UpstreamOptions& options,
                           std::vector<PublicKey> keys)
    : source_(std::move(source)),
      bases_(std::move(bases)),
      options_(options),
      keys_(std::move(keys)),
      spools_(options.spool_dir, options.spool_max_bytes) {}

HttpUpstream::~HttpUpstream() = default;

Result<std::unique_ptr<HttpUpstream>> HttpUpstream::open(std::string_view source, const UpstreamOptions& options) {
  std::vector<std::string> bases;
  std::string_view rest = source;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string base(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (base.empty()) continue;
    if (!is_http_source(base) || base.find_first_of(" \t\n?#") != std::string::npos) {
      return make_error(EINVAL, "invalid binary cache URL '" + base + "' in SOURCE");
    }
    while (base.back() == '/') base.pop_back();
    bases.push_back(std::move(base));
  }
  if (bases.empty()) return make_error(EINVAL, "SOURCE names no binary cache URL");
  if (options.spool_dir.empty()) return make_error(EINVAL, "an HTTP SOURCE needs a spool directory");
  std::vector<PublicKey> keys;
  for (const std::string& text : options.trusted_public_keys) {
    auto key = parse_public_key(text);
    if (!key) return make_error(EINVAL, "trusted-public-keys: " + key.error().message);
    keys.push_back(std::move(*key));
  }
  if (options.require_sigs && keys.empty()) {
    return make_error(EINVAL,
                      "an HTTP SOURCE needs -o trusted-public-keys=NAME:KEY (signatures are "
                      "required, as in Nix), or -o require-sigs=false for an unsigned cache");
  }
  std::unique_ptr<HttpUpstream> upstream(
      new HttpUpstream(std::string(source), std::move(bases), options, std::move(keys)));
  auto worker = CurlWorker::create(options.connections);
  if (!worker) return worker.error();
  upstream->worker_ = std::move(*worker);
  return upstream;
}

Status HttpUpstream::start() {
  try {
    worker_->start();
  } catch (const std::exception& e) {
    return make_error(EAGAIN, std::string("cannot start the HTTP worker thread: ") + e.what());
  }
  return {};
}

double HttpUpstream::whole_nar_seconds(uint64_t nar_size) const {
  // A week at most: NarSize may be up to 2^62, and a deadline must stay a representable time.
  return std::min(options_.timeout_seconds + static_cast<double>(nar_size) / kMinNarBytesPerSecond, 7 * 86400.0);
}

bool HttpUpstream::first_time(const std::string& what, const StorePath& path) {
  std::lock_guard lock(mutex_);
  if (warned_.size() >= kMaxWarned) warned_.clear();
  return warned_.insert(what + " " + path.base_name()).second;
}

Result<HttpUpstream::Fetched> HttpUpstream::get(const std::string& relative, const GetOptions& how) {
  size_t first;
  {
    std::lock_guard lock(mutex_);
    first = preferred_;
  }
  std::string last_error;
  bool timed_out = false;
  int attempt = 0;
  auto remaining = [&]() -> double {
    if (!how.deadline) return 1e9;
    return std::chrono::duration<double>(*how.deadline - Clock::now()).count();
  };
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      // Backoff between passes: a restarting server or a full connection table gets a moment.
      auto pause = std::chrono::milliseconds(100 << round);
      if (remaining() <= std::chrono::duration<double>(pause).count()) break;
      std::this_thread::sleep_for(pause);
    }
    for (size_t i = 0; i < bases_.size(); ++i) {
      double left = remaining();
      if (left <= 0) {
        timed_out = true;
        break;
      }
      size_t index = (first + i) % bases_.size();
      if (attempt++ > 0) count(&Stats::http_retries, options_.stats);
      if (how.reset) {
        if (auto st = how.reset(); !st) return st.error();
      }
      HttpRequest request;
      request.url = bases_[index] + "/" + relative;
      request.range = how.range;
      request.on_data = how.on_data;
      request.max_body = how.max_body;
      request.timeout_seconds =
          std::min(how.timeout_seconds > 0 ? how.timeout_seconds : options_.timeout_seconds, left);
      request.stall_seconds = how.stall_seconds;
      count(&Stats::http_requests, options_.stats);
      if (!worker_) return make_error(EIO, "internal error: the HTTP upstream was not started");
      HttpResponse response = worker_->perform(std::move(request));
      count(&Stats::http_bytes, options_.stats, response.bytes);
      bool answered = response.status >= 200 && response.status < 300;
      if (answered || is_absent_status(response.status)) {
        if (index != first) {
          std::lock_guard lock(mutex_);
          if (preferred_ != index) {
            preferred_ = index;
            count(&Stats::http_failovers, options_.stats);
            LOG_WARNING("binary cache %s did not answer; using %s", bases_[first].c_str(), bases_[index].c_str());
          }
        }
        Fetched fetched;
        fetched.absent = !answered;
        if (answered) fetched.body = std::move(response.body);
        return fetched;
      }
      if (response.timed_out) {
        timed_out = true;
        count(&Stats::upstream_timeouts, options_.stats);
      }
      last_error = bases_[index] + "/" + relative + ": " +
                   (response.status ? "HTTP status " + std::to_string(response.status) : response.error);
      LOG_DEBUG("%s", last_error.c_str());
      // An answer larger than allowed, or bytes the consumer refused: the same file elsewhere
      // would be refused too (and a whole NAR that outgrew its NarSize is not worth a second try).
      if (response.refused && !response.timed_out) return make_error(EIO, last_error);
      if (response.status >= 300 && response.status < 500 && response.status != 408 && response.status != 429) {
        // The request itself is wrong (or a redirect that may not be followed): a mirror will not help.
        return make_error(EIO, last_error);
      }
    }
  }
  if (last_error.empty()) last_error = bases_[first] + "/" + relative + ": no answer within its deadline";
  return make_error(timed_out ? ETIMEDOUT : EIO, last_error);
}

Status HttpUpstream::check_cache_info() {
  {
    std::lock_guard lock(mutex_);
    if (cache_info_checked_) return {};
  }
  auto fetched = get("nix-cache-info", {});
  if (!fetched) return fetched.error();
  if (fetched->absent) return make_error(EIO, source_ + " has no nix-cache-info: not a Nix binary cache");
  std::string_view text = fetched->body;
  std::string store_dir;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (line.starts_with("StoreDir: ")) store_dir = std::string(line.substr(10));
  }
  if (store_dir != StorePath::kStoreDir) {
    LOG_ERROR("binary cache %s has StoreDir '%s', not /nix/store: refusing it", source_.c_str(), store_dir.c_str());
    return make_error(EIO, "binary cache StoreDir is '" + store_dir + "', not /nix/store");
  }
  std::lock_guard lock(mutex_);
  cache_info_checked_ = true;
  return {};
}

Result<HttpUpstream::NarInfoPtr> HttpUpstream::narinfo(const StorePath& path) {
  std::string hash(path.hash_part());
  NarInfoPtr known;
  {
    std::lock_guard lock(mutex_);
    if (auto it = narinfos_.find(hash); it != narinfos_.end() && it->second->store_path == path.base_name()) {
      known = it->second;
    }
  }
  if (!known) {
    if (auto st = check_cache_info(); !st) return st.error();
    GetOptions how;
    how.max_body = kMaxNarInfoBytes;
    auto fetched = get(hash + ".narinfo", how);
    if (!fetched) return fetched.error();
    if (fetched->absent) return make_error(ENOENT, path.base_name() + ": not in the binary cache");
    auto info = parse_narinfo(fetched->body);
    if (!info) {
      LOG_WARNING("%s.narinfo: %s", hash.c_str(), info.error().message.c_str());
      return make_error(EIO, hash + ".narinfo: " + info.error().message);
    }
    if (info->store_path != path.base_name()) {
      // Another name under this hash: not the path asked for.
      return make_error(ENOENT, path.base_name() + ": not in the binary cache");
    }
    if (options_.require_sigs && !has_valid_signature(*info, keys_)) {
      count(&Stats::signature_failures, options_.stats);
      LOG_WARNING("%s: refused: %s", path.base_name().c_str(),
                  info->sigs.empty() ? "unsigned narinfo" : "no valid signature by a trusted key");
      return make_error(ENOENT, path.base_name() + ": signature not trusted");
    }
    known = std::make_shared<const NarInfo>(std::move(*info));
    std::lock_guard lock(mutex_);
    if (narinfos_.size() >= kMaxNarInfos) narinfos_.clear();
    narinfos_[hash] = known;
  }
  std::lock_guard lock(mutex_);
  if (auto it = refused_.find(hash); it != refused_.end()) {
    if (Clock::now() < it->second.until && it->second.nar_sha256 == known->nar_sha256) {
      return make_error(ENOENT, path.base_name() + ": its NAR did not match its narinfo");
    }
    refused_.erase(it);
  }
  if (seen_.size() < kMaxNarInfos) seen_.insert(path.base_name());
  return known;
}

Result<bool> HttpUpstream::exists(const StorePath& path) {
  auto info = narinfo(path);
  if (info) return true;
  if (info.error().code == ENOENT) return false;
  return info.error();
}

Result<std::vector<StorePath>> HttpUpstream::list_store() {
  // A binary cache has no index of its paths: the top level shows those looked up so far.
  std::vector<StorePath> out;
  std::lock_guard lock(mutex_);
  for (const std::string& name : seen_) {
    if (auto p = StorePath::parse(name)) out.push_back(std::move(*p));
  }
  return out;
}

Result<HttpUpstream::ManifestPtr> HttpUpstream::manifest(const StorePath& path, const NarInfo& info) {
  std::string hash(path.hash_part());
  {
    std::lock_guard lock(mutex_);
    if (auto it = manifests_.find(hash); it != manifests_.end()) {
      if (!it->second || it->second->header.nar_sha256 == info.nar_sha256) return it->second;
    }
  }
  auto wait = std::chrono::milliseconds(static_cast<int64_t>((options_.timeout_seconds * kRounds + 2) * 1000));
  auto fetched = manifest_flights_.run(hash, wait, [&] { return fetch_manifest(path, info); });
  if (!fetched) return fetched.error();
  std::lock_guard lock(mutex_);
  if (manifests_.size() >= kMaxManifests || manifest_nodes_ > kMaxManifestNodes) {
    manifests_.clear();
    manifest_nodes_ = 0;
  }
  if (auto [it, added] = manifests_.emplace(hash, *fetched); added && *fetched) {
    manifest_nodes_ += (*fetched)->tree.nodes.size();
  }
  return *fetched;
}

Result<HttpUpstream::ManifestPtr> HttpUpstream::fetch_manifest(const StorePath& path, const NarInfo& info) {
  std::string hash(path.hash_part());
  GetOptions how;
  how.max_body = kMaxManifestBytes;
  auto fetched = get(hash + std::string(kManifestSuffix), how);
  if (!fetched) {
    // Too large is the manifest's fault (refused like a bad one); no answer is not.
    if (fetched.error().message.find("answer larger than") == std::string::npos) return fetched.error();
    fetched = make_error(EINVAL, "manifest: larger than " + std::to_string(kMaxManifestBytes) + " bytes");
  } else if (fetched->absent) {
    return ManifestPtr();
  }
  Result<Manifest> verified = fetched ? verify_manifest(fetched->body, info, keys_) : Result<Manifest>(fetched.error());
  if (!verified) {
    count(&Stats::manifest_failures, options_.stats);
    if (first_time("manifest", path)) {
      LOG_WARNING("%s%s (%s): refused: %s; serving the path from its whole NAR", hash.c_str(),
                  std::string(kManifestSuffix).c_str(), path.base_name().c_str(), verified.error().message.c_str());
    }
    return ManifestPtr();
  }
  return ManifestPtr(std::make_shared<const Manifest>(std::move(*verified)));
}

Result<HttpUpstream::SpoolPtr> HttpUpstream::spool(const StorePath& path, const NarInfo& info) {
  std::string hash(path.hash_part());
  auto wait = std::chrono::milliseconds(static_cast<int64_t>((whole_nar_seconds(info.nar_size) + 2) * 1000));
  auto spooled = spools_.get(hash, info, wait, [&] { return download_nar(path, info); });
  if (spooled || spooled.error().code != EBADMSG) return spooled;
  // Not the NAR the signed narinfo describes: the path is absent, nothing of it is served.
  count(&Stats::nar_hash_failures, options_.stats);
  bool first = first_time("nar", path);
  if (first) LOG_WARNING("%s: the path is absent (nothing of it is served)", spooled.error().message.c_str());
  std::lock_guard lock(mutex_);
  refused_[hash] = Refusal{info.nar_sha256, Clock::now() + kRefusalTime};
  seen_.erase(path.base_name());
  return make_error(ENOENT, spooled.error().message);
}

Result<std::unique_ptr<NarSpool>> HttpUpstream::download_nar(const StorePath& path, const NarInfo& info) {
  std::unique_ptr<NarSpool> current;
  GetOptions how;
  how.reset = [&]() -> Status {
    auto made = NarSpool::create(spools_.directory(), info.compression, info.nar_size);
    if (!made) return made.error();
    current = std::move(*made);
    return {};
  };
  how.on_data = [&](std::span<const char> data) { return current->append(data); };
  // No byte for upstream-timeout, or slower than the minimum rate overall: the download ends.
  double bound = whole_nar_seconds(info.nar_size);
  how.timeout_seconds = bound;
  how.stall_seconds = options_.timeout_seconds;
  how.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(bound));
  LOG_INFO("%s: fetching the whole NAR (%s, compression %s)", path.base_name().c_str(), info.url.c_str(),
           info.compression.c_str());
  count(&Stats::nar_downloads, options_.stats);
  auto fetched = get(info.url, how);
  if (!fetched) {
    std::string why = current && !current->error().empty() ? current->error() : fetched.error().message;
    int code = fetched.error().code == ENOTSUP ? EIO : fetched.error().code;
    // More bytes than NarSize, or a stream that does not decompress: not this path's NAR.
    if (current && !current->error().empty() && current->error().find("cannot write") == std::string::npos)
      code = EBADMSG;
    return make_error(code, path.base_name() + ": fetching its NAR: " + why);
  }
  if (fetched->absent) return make_error(EIO, path.base_name() + ": its NAR " + info.url + " is missing");
  if (auto st = current->finish(info.nar_size, info.nar_sha256); !st) {
    return make_error(st.error().code, path.base_name() + ": " + st.error().message);
  }
  return current;
}

Result<Tree> HttpUpstream::list_tree(const StorePath& path) {
  auto info = narinfo(path);
  if (!info) return info.error();
  if (!options_.require_sigs) return list_tree_trusting(path, **info);
  auto m = manifest(path, **info);
  if (!m) return m.error();
  if (*m) {
    count(&Stats::manifest_paths, options_.stats);
    return (*m)->tree;
  }
  auto spooled = spool(path, **info);
  if (!spooled) return spooled.error();
  return (*spooled)->tree();
}

uint32_t HttpUpstream::read_alignment(const StorePath& path) {
  if (!options_.require_sigs) return 0;  // plain Range requests of what is read
  auto info = narinfo(path);
  if (!info || (*info)->compression != "none") return 0;
  auto m = manifest(path, **info);
  return m && *m ? read_unit(path, (*m)->header) : 0;
}

Result<size_t> HttpUpstream::read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                                  std::span<std::byte> buf) {
  if (node >= tree.nodes.size() || tree.nodes[node].type != NodeType::Regular) {
    return make_error(EINVAL, "not a regular file");
  }
  const TreeNode& file = tree.nodes[node];
  if (offset >= file.size || buf.empty()) return size_t{0};
  buf = buf.first(static_cast<size_t>(std::min<uint64_t>(buf.size(), file.size - offset)));
  auto info = narinfo(path);
  if (!info) return info.error().code == ENOENT ? make_error(EIO, info.error().message) : info.error();
  if (!options_.require_sigs) return read_trusting(path, **info, tree, node, offset, buf);
  std::string relative = tree.path_of(node);
  if ((*info)->compression == "none") {
    auto m = manifest(path, **info);
    if (!m) return m.error();
    if (*m) {
      auto found = (*m)->tree.resolve(relative);
      // The tree asked about is the manifest's (or the NAR's, which the manifest describes).
      if (found && (*m)->tree.nodes[*found].type == NodeType::Regular && (*m)->tree.nodes[*found].size == file.size) {
        return read_blocks(path, **info, **m, *found, offset, buf);
      }
    }
  }
  return read_spooled(path, **info, relative, offset, buf);
}

Status HttpUpstream::get_range(const StorePath& path, const NarInfo& info, uint64_t first, std::span<std::byte> into) {
  size_t got = 0;
  GetOptions how;
  how.reset = [&]() -> Status {
    got = 0;
    return {};
  };
  how.on_data = [&](std::span<const char> data) {
    if (data.size() > into.size() - got) return false;
    std::memcpy(into.data() + got, data.data(), data.size());
    got += data.size();
    return true;
  };
  how.range = std::make_pair(first, first + into.size() - 1);
  auto fetched = get(info.url, how);
  if (!fetched) return fetched.error();
  if (fetched->absent) return make_error(EIO, path.base_name() + ": its NAR " + info.url + " is missing");
  if (got != into.size()) return make_error(EIO, path.base_name() + ": short range answer");
  return {};
}

Result<size_t> HttpUpstream::read_spooled(const StorePath& path, const NarInfo& info, const std::string& relative,
                                          uint64_t offset, std::span<std::byte> buf) {
  auto spooled = spool(path, info);
  if (!spooled) return spooled.error().code == ENOENT ? make_error(EIO, spooled.error().message) : spooled.error();
  auto got = (*spooled)->read(relative, offset, buf);
  if (!got) {
    // A kept NAR that cannot be read is dropped: the next read downloads it again.
    LOG_WARNING("%s: %s", path.base_name().c_str(), got.error().message.c_str());
    spools_.forget(std::string(path.hash_part()));
  }
  return got;
}

Result<Tree> HttpUpstream::list_tree_trusting(const StorePath& path, const NarInfo& info) {
  std::string hash(path.hash_part());
  GetOptions how;
  how.max_body = kMaxNarListingBytes;
  auto listing = get(hash + ".ls", how);
  if (listing && !listing->absent) {
    auto tree = parse_nar_listing(listing->body);
    listing->body = std::string();  // a big listing's text is not kept next to its tree
    if (tree) {
      if (auto fits = fits_nar(*tree, info.nar_size); fits)
        return std::move(*tree);
      else
        tree = fits.error();
    }
    // More entries than a store path may have: its NAR holds as many, and would be refused too.
    if (tree.error().code == EFBIG) {
      return make_error(EIO, hash + ".ls (" + path.base_name() + "): " + tree.error().message);
    }
    LOG_WARNING("%s.ls (%s): %s; fetching the whole NAR instead", hash.c_str(), path.base_name().c_str(),
                tree.error().message.c_str());
  } else if (!listing) {
    return listing.error();
  }
  auto spooled = spool(path, info);
  if (!spooled) return spooled.error().code == ENOENT ? make_error(EIO, spooled.error().message) : spooled.error();
  return (*spooled)->tree();
}

Result<size_t> HttpUpstream::read_trusting(const StorePath& path, const NarInfo& info, const Tree& tree, uint32_t node,
                                           uint64_t offset, std::span<std::byte> buf) {
  const TreeNode& file = tree.nodes[node];
  if (info.compression == "none" && file.nar_offset != 0 && file.size <= info.nar_size &&
      file.nar_offset <= info.nar_size - file.size) {
    // The lazy path: the file's bytes sit at nar_offset in the uncompressed NAR (unchecked).
    if (auto fetched = get_range(path, info, file.nar_offset + offset, buf); !fetched) return fetched.error();
    return buf.size();
  }
  return read_spooled(path, info, tree.path_of(node), offset, buf);
}

Result<UpstreamStatfs> HttpUpstream::statfs() {
  // A binary cache has no capacity to report.
  return UpstreamStatfs{};
}

}  // namespace lazystore
