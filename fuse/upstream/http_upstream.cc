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

constexpr int kRounds = 2;                     // passes over all base URLs before giving up
constexpr size_t kMaxNarInfos = 100000;        // verified narinfos kept in memory
constexpr size_t kMaxSpools = 16;              // whole NARs kept for reads (anonymous files)
constexpr uint64_t kMaxSpoolBytes = 8ull << 30;

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

bool is_http_source(std::string_view source) {
  return source.starts_with("http://") || source.starts_with("https://");
}

HttpUpstream::HttpUpstream(std::string source, std::vector<std::string> bases, const UpstreamOptions& options,
                           std::vector<PublicKey> keys)
    : source_(std::move(source)), bases_(std::move(bases)), options_(options), keys_(std::move(keys)) {}

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
  std::vector<PublicKey> keys;
  for (const std::string& text : options.trusted_public_keys) {
    auto key = parse_public_key(text);
    if (!key) return make_error(EINVAL, "trusted-public-keys: " + key.error().message);
    keys.push_back(std::move(*key));
  }
  if (options.require_sigs && keys.empty()) {
    return make_error(EINVAL, "an HTTP SOURCE needs -o trusted-public-keys=NAME:KEY (signatures are "
                              "required, as in Nix), or -o require-sigs=false for an unsigned cache");
  }
  return std::unique_ptr<HttpUpstream>(new HttpUpstream(std::string(source), std::move(bases), options, std::move(keys)));
}

Status HttpUpstream::start() {
  if (worker_) return {};
  auto worker = CurlWorker::start(options_.connections);
  if (!worker) return worker.error();
  worker_ = std::move(*worker);
  return {};
}

Result<HttpUpstream::Fetched> HttpUpstream::get(const std::string& relative,
                                                std::optional<std::pair<uint64_t, uint64_t>> range,
                                                const std::function<bool(std::span<const char>)>& on_data,
                                                const std::function<Status()>& reset, double stall_seconds,
                                                size_t max_body) {
  size_t first;
  {
    std::lock_guard lock(mutex_);
    first = preferred_;
  }
  std::string last_error;
  bool timed_out = false;
  int attempt = 0;
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      // Backoff between passes: a restarting server or a full connection table gets a moment.
      std::this_thread::sleep_for(std::chrono::milliseconds(100 << round));
    }
    for (size_t i = 0; i < bases_.size(); ++i) {
      size_t index = (first + i) % bases_.size();
      if (attempt++ > 0) count(&Stats::http_retries, options_.stats);
      if (reset) {
        if (auto st = reset(); !st) return st.error();
      }
      HttpRequest request;
      request.url = bases_[index] + "/" + relative;
      request.range = range;
      request.on_data = on_data;
      request.max_body = max_body;
      if (stall_seconds > 0) {
        request.timeout_seconds = 0;
        request.stall_seconds = stall_seconds;
      } else {
        request.timeout_seconds = options_.timeout_seconds;
      }
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
      if (response.status >= 400 && response.status < 500 && response.status != 408 && response.status != 429) {
        return make_error(EIO, last_error);  // the request itself is wrong: a mirror will not help
      }
    }
  }
  return make_error(timed_out ? ETIMEDOUT : EIO, last_error);
}

Status HttpUpstream::check_cache_info() {
  {
    std::lock_guard lock(mutex_);
    if (cache_info_checked_) return {};
  }
  auto fetched = get("nix-cache-info", std::nullopt, nullptr, nullptr);
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
  {
    std::lock_guard lock(mutex_);
    if (auto it = narinfos_.find(hash); it != narinfos_.end() && it->second->store_path == path.base_name()) {
      return it->second;
    }
  }
  if (auto st = check_cache_info(); !st) return st.error();
  auto fetched = get(hash + ".narinfo", std::nullopt, nullptr, nullptr, 0, kMaxNarInfoBytes);
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
  auto shared = std::make_shared<const NarInfo>(std::move(*info));
  std::lock_guard lock(mutex_);
  if (narinfos_.size() >= kMaxNarInfos) narinfos_.clear();
  narinfos_[hash] = shared;
  if (seen_.size() < kMaxNarInfos) seen_.insert(path.base_name());
  return shared;
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

Result<Tree> HttpUpstream::list_tree(const StorePath& path) {
  auto info = narinfo(path);
  if (!info) return info.error();
  std::string hash(path.hash_part());
  auto listing = get(hash + ".ls", std::nullopt, nullptr, nullptr, 0, kMaxNarListingBytes);
  if (listing && !listing->absent) {
    auto tree = parse_nar_listing(listing->body);
    listing->body = std::string();  // a big listing's text is not kept next to its tree
    if (tree) {
      if (auto fits = fits_nar(*tree, (*info)->nar_size); fits) return std::move(*tree);
      else tree = fits.error();
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
  auto spooled = spool(path, **info);
  if (!spooled) return spooled.error();
  return (*spooled)->tree();
}

Result<HttpUpstream::SpoolPtr> HttpUpstream::spool(const StorePath& path, const NarInfo& info) {
  std::string hash(path.hash_part());
  std::promise<Result<SpoolPtr>> promise;
  {
    std::unique_lock lock(mutex_);
    if (auto it = spools_.find(hash); it != spools_.end()) {
      auto waiting = it->second;
      lock.unlock();
      auto result = waiting.get();
      if (result) return result;
      return result.error();
    }
    spools_.emplace(hash, promise.get_future().share());
  }
  auto built = build_spool(path, info);
  {
    std::lock_guard lock(mutex_);
    if (built) {
      spool_order_.push_back(hash);
      spool_bytes_ += (*built)->size();
      // Bounded: the oldest spool goes (its file vanishes once no reader holds it).
      while (spool_order_.size() > 1 && (spool_order_.size() > kMaxSpools || spool_bytes_ > kMaxSpoolBytes)) {
        auto old = spools_.find(spool_order_.front());
        if (old != spools_.end()) {
          auto value = old->second.get();
          if (value) spool_bytes_ -= (*value)->size();
          spools_.erase(old);
        }
        spool_order_.erase(spool_order_.begin());
      }
    } else {
      spools_.erase(hash);  // a failure is not remembered: the next read tries again
    }
  }
  promise.set_value(built);
  return built;
}

Result<HttpUpstream::SpoolPtr> HttpUpstream::build_spool(const StorePath& path, const NarInfo& info) {
  std::string directory = options_.spool_dir.empty() ? "/tmp" : options_.spool_dir;
  std::unique_ptr<NarSpool> current;
  auto reset = [&]() -> Status {
    auto made = NarSpool::create(directory, info.compression, info.nar_size);
    if (!made) return made.error();
    current = std::move(*made);
    return {};
  };
  auto on_data = [&](std::span<const char> data) { return current->append(data); };
  LOG_INFO("%s: fetching the whole NAR (%s, compression %s)", path.base_name().c_str(), info.url.c_str(),
           info.compression.c_str());
  auto fetched = get(info.url, std::nullopt, on_data, reset, options_.timeout_seconds);
  if (!fetched) {
    std::string why = current && !current->error().empty() ? current->error() : fetched.error().message;
    return make_error(fetched.error().code == ENOTSUP ? EIO : fetched.error().code,
                      path.base_name() + ": fetching its NAR: " + why);
  }
  if (fetched->absent) return make_error(EIO, path.base_name() + ": its NAR " + info.url + " is missing");
  if (auto st = current->finish(info.nar_size, info.nar_sha256); !st) {
    count(&Stats::nar_hash_failures, options_.stats);
    LOG_WARNING("%s: %s: nothing of it is served", path.base_name().c_str(), st.error().message.c_str());
    return make_error(EIO, path.base_name() + ": " + st.error().message);
  }
  return SpoolPtr(std::move(current));
}

Result<size_t> HttpUpstream::read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                                  std::span<std::byte> buf) {
  if (node >= tree.nodes.size() || tree.nodes[node].type != NodeType::Regular) {
    return make_error(EINVAL, "not a regular file");
  }
  const TreeNode& file = tree.nodes[node];
  if (offset >= file.size || buf.empty()) return size_t{0};
  size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), file.size - offset));
  auto info = narinfo(path);
  if (!info) return info.error().code == ENOENT ? make_error(EIO, info.error().message) : info.error();
  const NarInfo& ni = **info;
  if (ni.compression == "none" && file.nar_offset != 0 && file.size <= ni.nar_size &&
      file.nar_offset <= ni.nar_size - file.size) {
    // The lazy path: the file's bytes sit at nar_offset in the uncompressed NAR.
    size_t got = 0;
    auto reset = [&]() -> Status {
      got = 0;
      return {};
    };
    auto on_data = [&](std::span<const char> data) {
      if (data.size() > want - got) return false;
      std::memcpy(buf.data() + got, data.data(), data.size());
      got += data.size();
      return true;
    };
    uint64_t first = file.nar_offset + offset;
    auto fetched = get(ni.url, std::make_pair(first, first + want - 1), on_data, reset);
    if (!fetched) return fetched.error();
    if (fetched->absent) return make_error(EIO, path.base_name() + ": its NAR " + ni.url + " is missing");
    if (got != want) return make_error(EIO, path.base_name() + ": short range answer");
    return got;
  }
  auto spooled = spool(path, ni);
  if (!spooled) return spooled.error();
  return (*spooled)->read(tree.path_of(node), offset, buf.first(want));
}

Result<UpstreamStatfs> HttpUpstream::statfs() {
  // A binary cache has no capacity to report.
  return UpstreamStatfs{};
}

}  // namespace lazystore
