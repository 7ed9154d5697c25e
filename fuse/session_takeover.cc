#include "session_takeover.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "log.h"

namespace lazystore {
namespace {

// From Linux 6.9's <linux/fuse.h> (protocol 7.40); Debian 12's headers are 7.38.
constexpr int32_t kNotifyResend = 7;

struct BufferFree {
  void operator()(void* p) const { std::free(p); }
};

void keep_init(SharedInit& init, const void* request, size_t size) {
  if (size < sizeof(fuse_in_header) || size > sizeof init.request) return;
  if (static_cast<const fuse_in_header*>(request)->opcode != FUSE_INIT) return;
  std::memcpy(init.request, request, size);
  init.length.store(static_cast<uint32_t>(size), std::memory_order_release);
}

Status receive_init(fuse_session* session, SharedInit& init) {
  fuse_buf buf{};
  int received;
  do {
    received = fuse_session_receive_buf(session, &buf);
  } while (received == -EINTR || received == -EAGAIN);
  std::unique_ptr<void, BufferFree> owner(buf.mem);
  if (received <= 0) {
    return make_error(received == 0 ? ENODEV : -received, "the mount ended before the kernel sent FUSE_INIT");
  }
  if (!(buf.flags & FUSE_BUF_IS_FD)) keep_init(init, buf.mem, static_cast<size_t>(received));
  fuse_session_process_buf(session, &buf);
  return {};
}

void replay_init(fuse_session* session, const SharedInit& init, uint32_t length) {
  std::vector<unsigned char> copy(init.request, init.request + length);
  fuse_buf buf{};
  buf.size = length;
  buf.mem = copy.data();
  fuse_session_process_buf(session, &buf);
}

}  // namespace

TakeoverMode takeover_mode() {
  const char* value = std::getenv("LAZYSTORE_TAKEOVER");
  std::string_view mode = value ? value : "";
  if (mode == "replay-only") return TakeoverMode::kReplayOnly;
  if (mode == "resend") return TakeoverMode::kResend;
  if (mode == "both") return TakeoverMode::kBoth;
  return TakeoverMode::kReplay;
}

bool ask_kernel_to_resend(int fuse_fd, const char* why) {
  fuse_out_header notify{};
  notify.len = sizeof notify;
  notify.error = kNotifyResend;
  notify.unique = 0;
  if (write(fuse_fd, &notify, sizeof notify) == static_cast<ssize_t>(sizeof notify)) return true;
  LOG_WARNING("the kernel cannot resend %s (%s; Linux 6.9 or later can): they stay unanswered", why,
              std::strerror(errno));
  return false;
}

Status start_session(fuse_session* session, const Takeover& takeover) {
  bool restarted = takeover.generation > 1;
  RequestJournal* requests = takeover_mode() == TakeoverMode::kResend ? nullptr : takeover.requests;
  if (requests) {
    if (auto attached = requests->attach(session, takeover.fuse_fd, takeover.generation); !attached) {
      return attached.error();
    }
  }
  SharedInit& init = *takeover.init;
  uint32_t length = init.length.load(std::memory_order_acquire);
  auto old_init = requests ? requests->take_init() : std::nullopt;
  if (length != 0) {
    replay_init(session, init, length);  // answers the kernel's INIT too if the server before did not
    if (old_init) requests->discard(*old_init);
    if (!requests) ask_kernel_to_resend(takeover.fuse_fd, "the requests that were in flight at the crash");
  } else if (old_init) {
    // The server before died between reading INIT and keeping its copy: the kernel still waits.
    keep_init(init, old_init->bytes.data(), old_init->length);
    requests->replay(session, *old_init, false);
  } else {
    // Without the journal, a predecessor that died before keeping its copy left INIT in flight.
    if (restarted && !requests) ask_kernel_to_resend(takeover.fuse_fd, "the requests that were in flight at the crash");
    if (auto done = receive_init(session, init); !done) return done;
  }
  if (requests) requests->leave_thread_slot();
  if (fuse_session_exited(session)) return make_error(EPROTO, "FUSE_INIT failed (see above)");
  return {};
}

}  // namespace lazystore
