// Whole writes to descriptors and errno as an Error: the one home of these loops.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "result.h"

namespace lazystore {

// An Error of the current errno: "WHAT: strerror(errno)".
Error errno_error(const std::string& what);
// The same of a saved errno `code`.
Error errno_error(int code, const std::string& what);

// pwrite() until all of `data` is at `offset` (EINTR retried).
Status pwrite_all(int fd, std::span<const std::byte> data, uint64_t offset);

// write() until all of `data` is written (EINTR retried): pipes, sockets, files.
Status write_all(int fd, std::string_view data);

// send(MSG_NOSIGNAL) until all of `data` is sent (EINTR retried): a closed peer is an error,
// never a SIGPIPE.
Status send_all(int fd, std::string_view data);

}  // namespace lazystore
