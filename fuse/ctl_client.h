// lazystore-ctl's side of a control connection: one request, then the answer lines, each wait
// bounded by a deadline.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "control_protocol.h"
#include "fd.h"
#include "result.h"

namespace lazystore {

class ControlClient {
 public:
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;  // nullopt: none

  // The Error keeps connect()'s errno (ENOENT, ECONNREFUSED, EACCES, …).
  static Result<ControlClient> connect(const std::string& socket_path);

  Status send(const Request& request);
  // The next answer line: EPROTO for a malformed or oversized line, ETIMEDOUT past the
  // deadline, ECONNRESET when the daemon closed the connection before a whole line.
  Result<Answer> next(Deadline deadline);

 private:
  explicit ControlClient(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
  std::string buffer_;
};

}  // namespace lazystore
