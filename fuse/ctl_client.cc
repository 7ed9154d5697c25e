#include "ctl_client.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "io.h"
#include "unix_socket.h"

namespace lazystore {

Result<ControlClient> ControlClient::connect(const std::string& socket_path) {
  if (auto address = unix_socket_address(socket_path); !address) return address.error();
  auto connected = connect_unix_socket(socket_path);
  if (!connected) return connected.error();
  return ControlClient(std::move(*connected));
}

Status ControlClient::send(const Request& request) {
  auto line = encode_request(request);
  if (!line) return line.error();
  return send_all(fd_.get(), *line);
}

Result<Answer> ControlClient::next(Deadline deadline) {
  for (;;) {
    if (size_t end = buffer_.find('\n'); end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 1);
      return decode_answer(line);
    }
    if (buffer_.size() > kMaxResponseBytes) {
      return make_error(EPROTO, "the daemon's answer is longer than " + std::to_string(kMaxResponseBytes) + " bytes");
    }
    int wait_ms = -1;
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
    }
    pollfd p{fd_.get(), POLLIN, 0};
    int ready = ::poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return errno_error("waiting for the daemon's answer");
    if (ready == 0) return make_error(ETIMEDOUT, "no answer from the daemon in time");
    char buf[65536];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("reading the daemon's answer");
    if (n == 0) {
      return make_error(ECONNRESET, buffer_.empty() ? "the daemon closed the connection without an answer"
                                                    : "the daemon's answer ends in the middle of a line");
    }
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace lazystore
