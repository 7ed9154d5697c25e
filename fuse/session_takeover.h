// How a server process takes over the FUSE session of a supervised mount from one that died.
//
// The kernel sends FUSE_INIT once per mount. The first server keeps a copy of it in memory
// shared with the supervisor; a server started after a crash replays that copy through
// libfuse (which then answers every request as the first server did; its reply to the old
// request is refused by the kernel with ENOENT, which libfuse ignores). The requests the dead
// server had read and not answered are in the request journal (request_journal.h): the new
// server answers them through libfuse (session_loop.h), on every kernel.
#pragma once

#include <atomic>
#include <cstdint>

#include "fuse_version.h"
#include "inode_journal.h"
#include "request_journal.h"
#include "result.h"

namespace lazystore {

struct Stats;

// Lives in a MAP_SHARED page made by the supervisor before it starts any server.
struct SharedInit {
  std::atomic<uint32_t> length{0};  // 0 until a server has read the kernel's INIT
  alignas(8) unsigned char request[1024];
};

// What the supervisor hands to each server process it starts.
struct Takeover {
  int fuse_fd = -1;                     // the mount's /dev/fuse, held open by the supervisor
  InodeJournal::Files journal{-1, -1};  // the inode journal (InodeJournal)
  uint64_t generation = 1;              // 1 for the first server, +1 for each restart
  SharedInit* init = nullptr;
  RequestJournal* requests = nullptr;  // the requests read and not answered yet
  int ready_fd = -1;                   // one byte is written here once the server is serving
  Stats* stats = nullptr;              // counters in memory the supervisor shares (SharedStats): they outlive a server
};

// How a restarted server gets the requests its predecessor had read and not answered. A
// diagnostic switch, the environment variable LAZYSTORE_TAKEOVER (the default is right):
enum class TakeoverMode {
  kReplay,      // "replay" (default): from the request journal; FUSE_NOTIFY_RESEND only for a
                // request the journal could not hold
  kReplayOnly,  // "replay-only": never FUSE_NOTIFY_RESEND, what a kernel before 6.9 gets
  kResend,      // "resend": no journal, FUSE_NOTIFY_RESEND only (Linux >= 6.9; lost before)
  kBoth,        // "both": the journal and FUSE_NOTIFY_RESEND (each request answered twice)
};
TakeoverMode takeover_mode();

// Before the request loop: routes the session through the request journal (unless kResend),
// then answers INIT (reading it from the kernel, or replaying the copy).
Status start_session(fuse_session* session, const Takeover& takeover);

// FUSE_NOTIFY_RESEND: the kernel queues again every request read and not answered on this
// descriptor (Linux 6.9). False (and a warning naming `why`) on an older kernel.
bool ask_kernel_to_resend(int fuse_fd, const char* why);

}  // namespace lazystore
