// How a server process takes over the FUSE session of a supervised mount from one that died.
//
// The kernel sends FUSE_INIT once per mount. The first server keeps a copy of it in memory
// shared with the supervisor; a server started after a crash replays that copy through
// libfuse (which then answers every request as the first server did; its reply to the old
// request is refused by the kernel with ENOENT, which libfuse ignores), and asks the kernel to
// resend the requests the dead server had read but not answered (FUSE_NOTIFY_RESEND, Linux 6.9).
#pragma once

#include "options.h"

#include <atomic>
#include <cstdint>

#include "inode_journal.h"
#include "result.h"

namespace lazystore {

// Lives in a MAP_SHARED page made by the supervisor before it starts any server.
struct SharedInit {
  std::atomic<uint32_t> length{0};  // 0 until a server has read the kernel's INIT
  alignas(8) unsigned char request[1024];
};

// What the supervisor hands to each server process it starts.
struct Takeover {
  int fuse_fd = -1;         // the mount's /dev/fuse, held open by the supervisor
  InodeJournal::Files journal{-1, -1};  // the inode journal (InodeJournal)
  uint64_t generation = 1;  // 1 for the first server, +1 for each restart
  SharedInit* init = nullptr;
  int ready_fd = -1;        // one byte is written here once the server is serving
};

// Before the request loop: answers INIT (reading it from the kernel, or replaying the copy) and,
// for a restarted server, asks the kernel to resend the requests that were in flight.
Status start_session(fuse_session* session, int fuse_fd, SharedInit& init, bool restarted);

}  // namespace lazystore
