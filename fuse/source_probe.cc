#include "source_probe.h"

#include <chrono>
#include <memory>

#include "cache_directory.h"
#include "log.h"
#include "metadata_cache.h"
#include "upstream/upstream.h"

namespace lazystore {
namespace {

// A valid store path name that no store holds: looking it up exercises the whole path (connect,
// mount, cache info, lookup) and answers "absent" from every working upstream.
constexpr std::string_view kProbePath = "00000000000000000000000000000000-lazystore-probe";

Status ask(Upstream& upstream) {
  if (auto started = upstream.start(); !started) return started;
  auto present = upstream.exists(StorePath(kProbePath));
  if (!present) return present.error();
  return {};
}

}  // namespace

Result<SourceState> probe_source(const MountOptions& options) {
  auto made = make_upstream(options.source, upstream_options(options));
  if (!made) return made.error();  // an invalid SOURCE or option: never a reason to go offline
  auto started = std::chrono::steady_clock::now();
  Status answered = ask(**made);
  made->reset();  // joins the upstream's threads: the daemon forks next
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  if (answered) {
    LOG_INFO("%s answers (%lld ms)", options.source.c_str(), static_cast<long long>(ms.count()));
    return SourceState::Answers;
  }
  size_t cached = MetadataCache::stored_paths(CacheDirectory::meta_dir_of(options.cache_dir)).size();
  if (cached == 0) return answered.error();
  LOG_WARNING(
      "%s does not answer (%s): starting offline, serving the %zu store paths cached in %s "
      "until it does",
      options.source.c_str(), answered.error().message.c_str(), cached, options.cache_dir.c_str());
  return SourceState::Offline;
}

}  // namespace lazystore
