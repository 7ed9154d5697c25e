// Unix stream sockets by path: the address (with its length check), connect, listen, the peer.
#pragma once

#include <sys/types.h>
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

// The user id of the process at the other end of a connected unix socket (SO_PEERCRED).
Result<uid_t> peer_uid(int fd);

}  // namespace lazystore
