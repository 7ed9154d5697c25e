// lazystore-publish: writes a signed manifest (common/manifest.h) next to each narinfo of a Nix
// binary cache directory (as `nix copy --to file://DIR` writes it), so that a lazystore mount can
// serve its paths lazily with every byte verified. Idempotent: a path whose manifest is current
// (same path, NarHash, block and leaf size, signed by this key, intact, its leaves too) is left
// alone. Leaves (`<hash>.leaves`) are written before the manifest that refers to them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "manifest.h"
#include "narinfo.h"
#include "result.h"

namespace lazystore {

struct PublishOptions {
  std::string cache_dir;  // the binary cache's directory
  SecretKey key;          // the cache's Nix signing key
  uint32_t block_size = kDefaultManifestBlockSize;
  uint32_t leaf_size = kDefaultManifestLeafSize;  // 0: no leaves
  bool force = false;                             // rewrite current manifests too
};

struct PublishSummary {
  uint64_t written = 0;     // manifests written now
  uint64_t current = 0;     // already current: left alone
  uint64_t compressed = 0;  // NARs not stored uncompressed: no manifest (see docs)
  uint64_t failed = 0;      // unreadable narinfo or NAR, NAR not matching its NarHash, ...
  uint64_t nar_bytes = 0;   // NAR bytes read for the manifests written
  uint64_t manifest_bytes = 0;
  uint64_t leaves_bytes = 0;
};

// Runs over every `<hash>.narinfo` in options.cache_dir. `note` gets one line per path that was
// not simply current (written, skipped and why, failed and why). An error only when the
// directory cannot be read at all.
Result<PublishSummary> publish_manifests(const PublishOptions& options,
                                         const std::function<void(const std::string&)>& note);

}  // namespace lazystore
