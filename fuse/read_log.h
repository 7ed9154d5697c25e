// The files this mount has read, in the order of their first read: what `lazystore-ctl reads`
// prints, a profile another executor replays with `lazystore-ctl prefetch --from` before its
// first action asks (docs/operating.md, "Profiles").
//
// A read counts when it reaches the daemon (a cached one too; the kernel's page cache answers
// the rest, of files already listed). Bounded by the bytes of the names kept and their number:
// once kMaxBytes or kMaxFiles is reached, reads of files not listed are only counted in
// `dropped`. In memory only: a restarted server starts a new list.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace lazystore {

class ReadLog {
 public:
  // What a list may hold: its keys' bytes, and files. Both keep the list, as paths in JSON, within
  // one control answer or request (kMaxResponseBytes, kMaxRequestBytes): prefetch --from takes
  // back what reads gave.
  static constexpr size_t kMaxBytes = 2u << 20;
  static constexpr size_t kMaxFiles = 65536;

  explicit ReadLog(size_t max_bytes = kMaxBytes, size_t max_files = kMaxFiles)
      : max_bytes_(max_bytes), max_files_(max_files) {}

  // A read of inode `ino`; `key` (asked only for an inode not seen before) names the file:
  // "<store path base name>/<relative path>".
  void note(uint64_t ino, const std::function<std::string()>& key);

  struct Snapshot {
    std::vector<std::string> keys;  // first read first
    uint64_t dropped = 0;           // reads of files not listed, the list being full
  };
  Snapshot snapshot() const;

 private:
  const size_t max_bytes_;
  const size_t max_files_;
  mutable std::mutex mutex_;
  std::unordered_set<uint64_t> seen_;
  std::vector<std::string> keys_;
  size_t bytes_ = 0;
  bool full_ = false;
  uint64_t dropped_ = 0;
};

}  // namespace lazystore
