#include "unix_socket.h"

#include <sys/socket.h>

#include <cstring>

#include "io.h"

namespace lazystore {

Result<sockaddr_un> unix_socket_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty()) return make_error(EINVAL, "empty unix socket path");
  if (path.size() >= sizeof address.sun_path) {
    return make_error(ENAMETOOLONG, "unix socket path '" + path + "' is longer than " +
                                        std::to_string(sizeof address.sun_path - 1) + " bytes");
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

Result<Fd> connect_unix_socket(const std::string& path) {
  auto address = unix_socket_address(path);
  if (!address) return address.error();
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error("socket");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) != 0) {
    return errno_error("connect " + path);
  }
  return fd;
}

Result<Fd> listen_unix_socket(const std::string& path, int backlog, int flags) {
  auto address = unix_socket_address(path);
  if (!address) return address.error();
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0));
  if (!fd) return errno_error("socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) != 0) {
    return errno_error("bind " + path);
  }
  if (::listen(fd.get(), backlog) != 0) return errno_error("listen " + path);
  return fd;
}

Result<uid_t> peer_uid(int fd) {
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return errno_error("SO_PEERCRED");
  return credentials.uid;
}

}  // namespace lazystore
