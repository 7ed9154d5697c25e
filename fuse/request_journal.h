// The requests a server has read from /dev/fuse and not answered yet, kept in memory the
// supervisor owns, so that the server taking over after a crash answers them (replays them
// through libfuse) on every kernel: FUSE_NOTIFY_RESEND, the kernel's own way, exists only from
// Linux 6.9, and on older kernels a request a dead server had read waits for ever.
//
// One slot (a page) per reader thread. libfuse reads through fuse_session_custom_io, and the
// kernel copies each request straight into the reading thread's slot (readv: the slot first,
// libfuse's buffer for anything longer): a request is in the journal the instant its read
// returns, so no kill can come between reading and recording it. The commit word is the
// request header's own `unique`: zeroed before each read and after the reply is written (a kill
// between the reply and the zeroing only replays an answered request, whose second reply the
// kernel refuses with ENOENT). FORGET, BATCH_FORGET and INTERRUPT get no reply: their `unique`
// is zeroed as soon as the read returns, before libfuse sees them, so each is processed at most
// once (a kill in between loses a forget: an inode kept, never one dropped twice).
//
// Requests of a read-only mount fit a page (the largest, a LOOKUP or GETXATTR, is a header and a
// name of at most 1024 bytes). One that does not fit keeps only its header in the slot: a
// successor asks the kernel to resend it (Linux 6.9) or answers it with EIO, never hangs it.
// A reader thread that finds every slot taken (possible only while a successor replays many
// requests) waits for one: it never reads unrecorded.
#pragma once

#include "options.h"

#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "result.h"

namespace lazystore {

struct Stats;

class RequestJournal {
 public:
  static constexpr size_t kSlotBytes = 4096;

  // Slots for a server of `max_threads` reader threads: each thread holds one while it reads and
  // answers, and a successor's replays hold the slots of the requests they answer.
  static unsigned slots_for(unsigned max_threads) { return 2 * max_threads + 2; }

  // The supervisor's shared memory (a memfd mapped MAP_SHARED: inherited by every server, and
  // charged only for the pages requests touch).
  static Result<RequestJournal> create(unsigned slots);

  RequestJournal(RequestJournal&& other) noexcept;
  RequestJournal& operator=(RequestJournal&&) = delete;
  RequestJournal(const RequestJournal&) = delete;
  RequestJournal& operator=(const RequestJournal&) = delete;
  ~RequestJournal();

  // A request a dead server had read and not answered.
  struct Request {
    unsigned slot = 0;
    uint64_t unique = 0;
    uint32_t opcode = 0;
    uint32_t length = 0;               // as the kernel sent it
    std::vector<unsigned char> bytes;  // the request, zero-padded (names end inside it)
    bool fits() const { return length <= kSlotBytes; }
  };

  // In a server, before the session reads anything: takes over what the server before left
  // (oldest first; see take_init/take_pending) and frees the other slots. `generation` tells this
  // server's slots from the dead one's.
  void take_over(uint64_t generation);
  // The same, and every read and reply of `session` goes through the journal from now on.
  Status attach(fuse_session* session, int fuse_fd, uint64_t generation);
  // The taken-over INIT, if the server before died before answering it.
  std::optional<Request> take_init();
  // The other taken-over requests, oldest first.
  std::vector<Request> take_pending();
  // Answers `request` through libfuse in the calling thread (an EIO reply for one that did not
  // fit, unless `resent`: the kernel queued it again), then frees its slot.
  void replay(fuse_session* session, const Request& request, bool resent);
  // Frees the slot of a taken-over request without answering it.
  void discard(const Request& request) { free_slot(static_cast<int>(request.slot)); }
  // Frees the calling thread's slot (the main thread, once INIT is answered).
  void leave_thread_slot();
  void set_stats(Stats* stats) { stats_ = stats; }

  // The custom io (fuse_custom_io's read, writev and splice_send), public for the unit tests.
  // A reply clears its request: writev by the `unique` in its header, splice_send (a read
  // reply spliced from the cache file) as the answer to the calling thread's request.
  ssize_t read_request(int fd, void* buf, size_t buf_len);
  ssize_t write_reply(int fd, const struct iovec* iov, int count);
  ssize_t splice_reply(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned flags);

  unsigned slots() const;
  unsigned slots_in_use() const;  // by this server's threads and replays

 private:
  struct Header;
  struct Slot;
  RequestJournal(void* region, size_t size);
  Header& header() const;
  Slot& slot(unsigned index) const;
  int claim_slot();
  void free_slot(int index);
  void clear(unsigned index, uint64_t unique);
  friend struct ThreadSlot;

  void* region_ = nullptr;
  size_t size_ = 0;
  uint64_t generation_ = 0;
  int fuse_fd_ = -1;
  Stats* stats_ = nullptr;
  std::optional<Request> init_;
  std::vector<Request> pending_;
  // Process-local: threads of this server waiting for a free slot.
  std::unique_ptr<std::mutex> free_mutex_ = std::make_unique<std::mutex>();
  std::unique_ptr<std::condition_variable> freed_ = std::make_unique<std::condition_variable>();
};

}  // namespace lazystore
