#include "session_takeover.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <cstring>
#include <vector>

#include "log.h"

namespace lazystore {
namespace {

// From Linux 6.9's <linux/fuse.h> (protocol 7.40); Debian 12's headers are 7.38.
constexpr int32_t kNotifyResend = 7;

struct BufferFree {
  void operator()(void* p) const { std::free(p); }
};

Status receive_init(fuse_session* session, SharedInit& init) {
  fuse_buf buf{};
  int received;
  do {
    received = fuse_session_receive_buf(session, &buf);
  } while (received == -EINTR || received == -EAGAIN);
  std::unique_ptr<void, BufferFree> owner(buf.mem);
  if (received <= 0) {
    return make_error(received == 0 ? ENODEV : -received,
                      "the mount ended before the kernel sent FUSE_INIT");
  }
  auto size = static_cast<size_t>(received);
  if (size >= sizeof(fuse_in_header) && size <= sizeof init.request && !(buf.flags & FUSE_BUF_IS_FD)) {
    const auto* header = static_cast<const fuse_in_header*>(buf.mem);
    if (header->opcode == FUSE_INIT) {
      std::memcpy(init.request, buf.mem, size);
      init.length.store(static_cast<uint32_t>(size), std::memory_order_release);
    }
  }
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

void resend_in_flight(int fuse_fd) {
  fuse_out_header notify{};
  notify.len = sizeof notify;
  notify.error = kNotifyResend;
  notify.unique = 0;
  if (write(fuse_fd, &notify, sizeof notify) == static_cast<ssize_t>(sizeof notify)) return;
  LOG_WARNING("the kernel cannot resend the requests that were in flight at the crash (%s; "
              "Linux 6.9 or later can): they stay unanswered", std::strerror(errno));
}

}  // namespace

Status start_session(fuse_session* session, int fuse_fd, SharedInit& init, bool restarted) {
  uint32_t length = init.length.load(std::memory_order_acquire);
  if (length == 0) {
    // A predecessor that died between reading INIT and keeping its copy left it in flight.
    if (restarted) resend_in_flight(fuse_fd);
    if (auto done = receive_init(session, init); !done) return done;
  } else {
    replay_init(session, init, length);
    resend_in_flight(fuse_fd);
  }
  if (fuse_session_exited(session)) return make_error(EPROTO, "FUSE_INIT failed (see above)");
  return {};
}

}  // namespace lazystore
