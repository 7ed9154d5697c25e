// The inode numbers the kernel holds, with their lookup counts, kept for the server that takes
// over after a crash. The kernel keeps using the numbers it was given; ours are hashes of paths,
// so a restarted server can answer for one only if it can find its path again: that is this
// journal. The counts let it also forget exactly what the kernel forgets, so the journal and the
// servers' tables hold what the kernel holds, not every file ever looked up.
//
// Two memfds owned by the supervisor (they live exactly as long as the mount); the active one
// has the higher epoch in its header { u64 magic, u64 epoch }. Records follow the header:
//   { u32 commit, u32 key length, u64 inode, u64 lookups, key "<store path>[/<relative path>]",
//     zeros up to a multiple of 8 }
// `commit` is written last: a server killed in the middle of an append leaves a record the next
// one does not read. `lookups` is updated in place through a shared mapping (one aligned 8-byte
// store); it is raised before the kernel gets a reply, so a kill can leave it too high (an inode
// kept) but never too low (an inode dropped that the kernel still holds); 0 means forgotten.
// Compaction writes the live records into the other file and then raises its epoch: one 8-byte
// store, before which the old file is complete and active and after which the new one is. A
// server compacts when it starts, and whenever forgotten records outweigh live ones.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace lazystore {

class InodeJournal {
 public:
  using Files = std::array<int, 2>;
  static constexpr uint64_t kNoRecord = ~uint64_t{0};

  struct Record {
    uint64_t ino = 0;
    std::string key;
    uint64_t lookups = 0;
    uint64_t at = kNoRecord;  // where the record is, for set_lookups
  };

  // A live record to keep in a compaction; `*at` gets its new place.
  struct Live {
    uint64_t ino;
    std::string_view key;
    uint64_t lookups;
    uint64_t* at;
  };

  // Two empty memfds, for the supervisor to hand to every server it starts (close-on-exec;
  // inherited over fork).
  static Result<Files> create_memfds();

  // Reads the live records (lookups > 0) of the active file into `live` and compacts the journal
  // to them. The descriptors stay the caller's.
  static Result<InodeJournal> open(Files files, std::vector<Record>& live);

  InodeJournal(InodeJournal&& other) noexcept;
  InodeJournal& operator=(InodeJournal&&) = delete;
  InodeJournal(const InodeJournal&) = delete;
  InodeJournal& operator=(const InodeJournal&) = delete;
  ~InodeJournal();

  // Appends a record; returns where it is.
  Result<uint64_t> append(uint64_t ino, std::string_view key, uint64_t lookups);
  // Stores a record's count (0: the kernel forgot the number).
  void set_lookups(uint64_t at, uint64_t lookups);
  // Forgotten records outweigh the live ones (and 1 MiB): time to compact.
  bool wants_compaction() const;
  // Rewrites the journal with `live` only; on success each `*at` is the record's new place.
  Status compact(const std::vector<Live>& live);

  uint64_t bytes() const { return end_; }  // header and records of the active file
  uint64_t live_bytes() const { return live_bytes_; }

 private:
  InodeJournal(Files files, int active) : files_(files), active_(active) {}
  Status map_active(uint64_t size);
  Status reserve(uint64_t bytes);
  void unmap();

  Files files_;
  int active_;  // index into files_
  unsigned char* base_ = nullptr;
  uint64_t mapped_ = 0;
  uint64_t end_ = 0;  // where the next record goes
  uint64_t epoch_ = 0;
  uint64_t live_bytes_ = 0;
  uint64_t dead_bytes_ = 0;
};

}  // namespace lazystore
