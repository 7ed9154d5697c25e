// The verified whole NARs of an HTTP upstream: open ones in memory, kept ones on disk under
// CACHE/http-spool/<hash>.nar (so that a restart does not download them again), bounded in
// bytes (least recently used go first; one in use by a reader stays readable until released).
// Concurrent requests for one NAR share one download; a failed download is not remembered.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "nar_spool.h"
#include "narinfo.h"
#include "single_flight.h"

namespace lazystore {

class NarSpoolStore {
 public:
  using SpoolPtr = std::shared_ptr<const NarSpool>;
  // Downloads and verifies the NAR (NarSpool::finish passed) into the store's directory.
  using Download = std::function<Result<std::unique_ptr<NarSpool>>()>;

  NarSpoolStore(std::string directory, uint64_t max_bytes) : directory_(std::move(directory)), max_bytes_(max_bytes) {}

  const std::string& directory() const { return directory_; }

  // The verified NAR of store path hash `hash` described by `info`: open already, kept on disk
  // (verified again when opened), or downloaded. A caller that finds a download in flight waits
  // for it at most `wait`.
  Result<SpoolPtr> get(const std::string& hash, const NarInfo& info, std::chrono::milliseconds wait,
                       const Download& download);

  // Drops the NAR of `hash` (memory and disk), e.g. after reading it failed: the next get()
  // starts over.
  void forget(const std::string& hash);

  uint64_t kept_bytes() const;

 private:
  struct Kept {
    uint64_t bytes = 0;
    std::list<std::string>::iterator recent;
  };
  static constexpr size_t kMaxOpen = 16;

  std::string path_of(const std::string& hash) const { return directory_ + "/" + hash + ".nar"; }
  void scan_locked();
  void touch_locked(const std::string& hash);
  void add_locked(const std::string& hash, uint64_t bytes);
  void remove_locked(const std::string& hash);
  // Makes room for `bytes` more, keeping `keep`.
  void evict_locked(uint64_t bytes, const std::string& keep);
  Result<SpoolPtr> open_or_download(const std::string& hash, const NarInfo& info, const Download& download);

  const std::string directory_;
  const uint64_t max_bytes_;
  mutable std::mutex mutex_;
  bool scanned_ = false;
  std::map<std::string, SpoolPtr> open_;
  std::map<std::string, Kept> kept_;
  std::list<std::string> recent_;  // kept hashes, most recently used first
  uint64_t bytes_ = 0;             // of the kept files
  SingleFlight<SpoolPtr> flights_;
};

}  // namespace lazystore
