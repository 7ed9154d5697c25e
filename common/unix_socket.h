// Unix stream sockets by path: the address (with its length check), connect, listen.
#pragma once

#include <sys/un.h>

#include <string>

#include "fd.h"
#include "result.h"

namespace lazystore {

// ENAMETOOLONG when the path does not fit sun_path (107 bytes), EINVAL when empty.
Result<sockaddr_un> unix_socket_address(const std::string& path);

// A connected SOCK_STREAM|SOCK_CLOEXEC socket; the Error keeps connect()'s errno.
Result<Fd> connect_unix_socket(const std::string& path);

// A SOCK_STREAM|SOCK_CLOEXEC socket bound to `path` (which must not exist) and listening;
// `flags` are added to the socket type (e.g. SOCK_NONBLOCK).
Result<Fd> listen_unix_socket(const std::string& path, int backlog, int flags = 0);

}  // namespace lazystore
