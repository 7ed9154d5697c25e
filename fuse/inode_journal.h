// The inode numbers a mount has handed to the kernel, kept for the server that takes over after
// a crash. The kernel keeps using the numbers it was given; our numbers are hashes of paths, so
// a restarted server can answer for one only if it can find its path again: that is this file.
//
// One record per number: u64 inode, u32 key length, the key "<store path>[/<relative path>]".
// The file is a memfd owned by the supervisor (it lives exactly as long as the mount). A server
// killed in the middle of a write leaves a torn last record; the next one cuts it off.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "result.h"

namespace lazystore {

class InodeJournal {
 public:
  using Record = std::pair<uint64_t, std::string>;

  // An empty journal in memory (memfd), for the supervisor to hand to every server it starts.
  static Result<int> create_memfd();

  // Reads every whole record of `fd` and cuts off a torn last one, so appends continue cleanly.
  static Result<InodeJournal> open(int fd, std::vector<Record>& records);

  Status append(uint64_t ino, std::string_view key);

 private:
  explicit InodeJournal(int fd, uint64_t end) : fd_(fd), end_(end) {}
  int fd_;        // not owned: the supervisor's descriptor, inherited
  uint64_t end_;  // where the next record goes
};

}  // namespace lazystore
