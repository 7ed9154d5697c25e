#include "io.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lazystore {

Error errno_error(const std::string& what) { return errno_error(errno, what); }

Error errno_error(int code, const std::string& what) { return make_error(code, what + ": " + std::strerror(code)); }

Status pwrite_all(int fd, std::span<const std::byte> data, uint64_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(errno, std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Status send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("send");
    if (n == 0) return make_error(EPIPE, "send: the peer is gone");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

}  // namespace lazystore
