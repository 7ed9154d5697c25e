#include "request_journal.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

#include "io.h"
#include "stats.h"

namespace lazystore {
namespace {

constexpr uint64_t kMagic = 0x6c7a2d7265717331;  // "lz-reqs1"
constexpr size_t kOwnersAt = 64;
constexpr size_t kPage = 4096;
constexpr size_t kUniqueAt = offsetof(fuse_in_header, unique);
constexpr size_t kPadding = 8;  // zeros after a replayed request: a name without its NUL ends there

// Requests the kernel expects no reply to: never replayed, so never processed twice.
bool expects_reply(uint32_t opcode) {
  return opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET && opcode != FUSE_INTERRUPT &&
         opcode != FUSE_NOTIFY_REPLY;
}

// libfuse hands its custom io the session's userdata (the filesystem), not ours: the one
// journal of this process.
RequestJournal* g_attached = nullptr;

ssize_t io_read(int fd, void* buf, size_t buf_len, void* /*userdata*/) {
  return g_attached->read_request(fd, buf, buf_len);
}

ssize_t io_writev(int fd, struct iovec* iov, int count, void* /*userdata*/) {
  return g_attached->write_reply(fd, iov, count);
}

ssize_t io_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned int flags,
                       void* /*userdata*/) {
  return g_attached->splice_reply(fdin, offin, fdout, offout, len, flags);
}

}  // namespace

struct RequestJournal::Header {
  uint64_t magic;
  uint32_t slots;
  uint32_t first_slot;  // offset of slot 0; slot i follows at i * kSlotBytes
};

struct RequestJournal::Slot {
  unsigned char bytes[kSlotBytes];

  std::atomic_ref<uint64_t> unique() {
    return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(bytes + kUniqueAt));
  }
  fuse_in_header in_header() const {
    fuse_in_header h;
    std::memcpy(&h, bytes, sizeof h);
    return h;
  }
};

// The slot the calling thread reads into, claimed on its first read, freed when it exits.
struct ThreadSlot {
  RequestJournal* journal = nullptr;
  int index = -1;
  ~ThreadSlot() {
    if (journal && index >= 0) journal->free_slot(index);
  }
};
thread_local ThreadSlot t_slot;

namespace {
std::atomic<uint64_t>* owners_of(void* region) {
  return reinterpret_cast<std::atomic<uint64_t>*>(static_cast<char*>(region) + kOwnersAt);
}
}  // namespace

Result<RequestJournal> RequestJournal::create(unsigned slots) {
  size_t control = (kOwnersAt + sizeof(uint64_t) * slots + kPage - 1) / kPage * kPage;
  size_t size = control + size_t{slots} * kSlotBytes;
  int fd = memfd_create("lazystore-requests", MFD_CLOEXEC);
  if (fd < 0) return errno_error("request journal: memfd_create");
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    Error error = errno_error("request journal: ftruncate");
    close(fd);
    return error;
  }
  void* region = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (region == MAP_FAILED) {
    Error error = errno_error("request journal: mmap");
    close(fd);
    return error;
  }
  close(fd);  // the mapping keeps the memory
  new (region) Header{kMagic, slots, static_cast<uint32_t>(control)};
  for (unsigned i = 0; i < slots; ++i) new (owners_of(region) + i) std::atomic<uint64_t>(0);
  return RequestJournal(region, size);
}

RequestJournal::RequestJournal(void* region, size_t size) : region_(region), size_(size) {}

RequestJournal::RequestJournal(RequestJournal&& other) noexcept
    : region_(std::exchange(other.region_, nullptr)),
      size_(other.size_),
      generation_(other.generation_),
      fuse_fd_(other.fuse_fd_),
      stats_(other.stats_),
      init_(std::move(other.init_)),
      pending_(std::move(other.pending_)),
      free_mutex_(std::move(other.free_mutex_)),
      freed_(std::move(other.freed_)) {}

RequestJournal::~RequestJournal() {
  if (g_attached == this) g_attached = nullptr;
  // A server's journal lives until the process ends; one destroyed earlier (tests) must not be
  // freed again when the destroying thread exits. Other threads must be gone by then.
  if (t_slot.journal == this) {
    t_slot.journal = nullptr;
    t_slot.index = -1;
  }
  if (region_) munmap(region_, size_);
}

RequestJournal::Header& RequestJournal::header() const { return *static_cast<Header*>(region_); }

RequestJournal::Slot& RequestJournal::slot(unsigned index) const {
  return *reinterpret_cast<Slot*>(static_cast<char*>(region_) + header().first_slot + size_t{index} * kSlotBytes);
}

unsigned RequestJournal::slots() const { return header().slots; }

unsigned RequestJournal::slots_in_use() const {
  unsigned n = 0;
  for (unsigned i = 0; i < slots(); ++i) n += owners_of(region_)[i].load() == generation_;
  return n;
}

void RequestJournal::take_over(uint64_t generation) {
  generation_ = generation;
  init_.reset();
  pending_.clear();
  auto* owners = owners_of(region_);
  for (unsigned i = 0; i < slots(); ++i) {
    Slot& s = slot(i);
    uint64_t unique = s.unique().load();
    fuse_in_header h = s.in_header();
    if (owners[i].load() != 0 && unique != 0 && h.len >= sizeof h && expects_reply(h.opcode)) {
      Request request{i, unique, h.opcode, h.len, {}};
      size_t kept = std::min<size_t>(h.len, kSlotBytes);
      request.bytes.assign(s.bytes, s.bytes + kept);
      request.bytes.resize(kept + kPadding, 0);
      owners[i].store(generation);  // held until it is answered
      if (h.opcode == FUSE_INIT) {
        init_ = std::move(request);
      } else {
        pending_.push_back(std::move(request));
      }
      continue;
    }
    s.unique().store(0);
    owners[i].store(0);
  }
  std::sort(pending_.begin(), pending_.end(), [](const Request& a, const Request& b) { return a.unique < b.unique; });
}

Status RequestJournal::attach(fuse_session* session, int fuse_fd, uint64_t generation) {
  take_over(generation);
  g_attached = this;
  fuse_custom_io io{};
  io.read = io_read;
  io.writev = io_writev;
  io.splice_send = io_splice_send;  // else libfuse copies every read reply (no SPLICE_WRITE)
  if (int failed = fuse_session_custom_io(session, &io, fuse_fd); failed != 0) {
    g_attached = nullptr;
    return make_error(-failed, "cannot route the FUSE session through the request journal");
  }
  fuse_fd_ = fuse_fd;
  return {};
}

std::optional<RequestJournal::Request> RequestJournal::take_init() { return std::exchange(init_, std::nullopt); }

std::vector<RequestJournal::Request> RequestJournal::take_pending() { return std::exchange(pending_, {}); }

int RequestJournal::claim_slot() {
  auto* owners = owners_of(region_);
  auto try_claim = [&]() -> int {
    for (unsigned i = 0; i < slots(); ++i) {
      uint64_t free = 0;
      if (owners[i].compare_exchange_strong(free, generation_)) return static_cast<int>(i);
    }
    return -1;
  };
  for (;;) {
    if (int index = try_claim(); index >= 0) return index;
    // Every slot is taken: replays of the server before hold them until they are answered
    // (each within the upstream's deadline). Reading unrecorded could lose a request.
    std::unique_lock lock(*free_mutex_);
    if (int index = try_claim(); index >= 0) return index;
    freed_->wait_for(lock, std::chrono::seconds(1));
  }
}

void RequestJournal::free_slot(int index) {
  slot(static_cast<unsigned>(index)).unique().store(0);
  owners_of(region_)[index].store(0);
  { std::lock_guard lock(*free_mutex_); }
  freed_->notify_all();
}

void RequestJournal::leave_thread_slot() {
  if (t_slot.journal != this || t_slot.index < 0) return;
  free_slot(t_slot.index);
  t_slot.index = -1;
}

void RequestJournal::clear(unsigned index, uint64_t unique) {
  uint64_t expected = unique;
  slot(index).unique().compare_exchange_strong(expected, 0);
}

ssize_t RequestJournal::read_request(int fd, void* buf, size_t buf_len) {
  if (t_slot.journal != this || t_slot.index < 0) {
    t_slot.journal = this;
    t_slot.index = claim_slot();
  }
  Slot& s = slot(static_cast<unsigned>(t_slot.index));
  s.unique().store(0);  // armed: a successor sees a request here only once the kernel wrote one
  ssize_t n;
  if (buf_len > kSlotBytes) {
    iovec parts[2] = {{s.bytes, kSlotBytes}, {static_cast<char*>(buf) + kSlotBytes, buf_len - kSlotBytes}};
    n = readv(fd, parts, 2);
  } else {
    n = read(fd, s.bytes, buf_len);
  }
  if (n < 0) {
    int error = errno;
    s.unique().store(0);  // a request the kernel failed to copy was ended by the kernel
    errno = error;
    return n;
  }
  auto length = static_cast<size_t>(n);
  std::memcpy(buf, s.bytes, std::min(length, kSlotBytes));
  if (length < sizeof(fuse_in_header) || !expects_reply(s.in_header().opcode)) s.unique().store(0);
  return n;
}

ssize_t RequestJournal::write_reply(int fd, const struct iovec* iov, int count) {
  uint64_t unique = 0;
  if (count > 0 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    std::memcpy(&unique, static_cast<const char*>(iov[0].iov_base) + offsetof(fuse_out_header, unique), sizeof unique);
  }
  ssize_t n = writev(fd, iov, count);
  int error = errno;
  if (n < 0 && error == ENOENT && stats_) stats_->refused_replies++;  // answered before, or resent
  if (unique != 0) {                                                  // 0: a notification
    if (t_slot.journal == this && t_slot.index >= 0 &&
        slot(static_cast<unsigned>(t_slot.index)).unique().load() == unique) {
      clear(static_cast<unsigned>(t_slot.index), unique);
    } else {
      // Not the calling thread's request: lazystore replies in the thread that read, but be exact.
      auto* owners = owners_of(region_);
      for (unsigned i = 0; i < slots(); ++i) {
        if (owners[i].load() == generation_ && slot(i).unique().load() == unique) clear(i, unique);
      }
    }
  }
  errno = error;
  return n;
}

ssize_t RequestJournal::splice_reply(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned flags) {
  ssize_t n = splice(fdin, offin, fdout, offout, len, flags);
  int error = errno;
  // The reply's header is in the pipe, out of sight: this is the answer to the request of the
  // calling thread (lazystore answers in the thread that read the request, or that replays it).
  if (t_slot.journal == this && t_slot.index >= 0) slot(static_cast<unsigned>(t_slot.index)).unique().store(0);
  if (n < 0 && error == ENOENT) {
    // Refused: the kernel has this request's answer already (or resent it). The kernel took the
    // reply out of the pipe either way; libfuse's splice path would print an error for it where
    // its writev path stays silent, so this counts as sent.
    if (stats_) stats_->refused_replies++;
    return static_cast<ssize_t>(len);
  }
  errno = error;
  return n;
}

void RequestJournal::replay(fuse_session* session, const Request& request, bool resent) {
  RequestJournal* saved_journal = std::exchange(t_slot.journal, this);
  int saved_index = std::exchange(t_slot.index, static_cast<int>(request.slot));
  if (stats_) stats_->replayed_requests++;
  if (request.fits()) {
    std::vector<unsigned char> copy = request.bytes;
    fuse_buf buf{};
    buf.size = request.length;
    buf.mem = copy.data();
    fuse_session_process_buf(session, &buf);
  } else if (!resent) {
    fuse_out_header reply{sizeof(fuse_out_header), -EIO, request.unique};
    iovec part{&reply, sizeof reply};
    (void)write_reply(fuse_fd_, &part, 1);
  }
  free_slot(static_cast<int>(request.slot));
  t_slot.journal = saved_journal;
  t_slot.index = saved_index;
}

}  // namespace lazystore
