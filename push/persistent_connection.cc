#include "persistent_connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <algorithm>

#include "fd.h"
#include "hash.h"
#include "io.h"
#include "outcome_json.h"
#include "serve_protocol.h"
#include "unix_socket.h"

namespace lazystore {

namespace {

constexpr uint64_t kRequestPush = 1;
constexpr uint64_t kRequestExit = 2;
constexpr uint64_t kMaxMessage = 64ull << 20;

NarSource fd_source(int fd) {
  return [fd](std::span<std::byte> buffer) -> Result<size_t> {
    while (true) {
      ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) return errno_error("control socket read");
    }
  };
}

// A message is a u64 length and that many bytes of serve-protocol items.
Status send_message(int fd, const std::string& payload) {
  return write_all(fd, serve::WireWriter().u64(payload.size()).take() + payload);
}

// `first`, if given, is the message's first byte, already read (it came with descriptors).
Result<std::string> receive_message(int fd, std::optional<char> first = std::nullopt) {
  NarSource source = fd_source(fd);
  if (first) {
    source = [fd, pending = first](std::span<std::byte> buffer) mutable -> Result<size_t> {
      if (pending && !buffer.empty()) {
        buffer[0] = static_cast<std::byte>(*pending);
        pending.reset();
        return size_t{1};
      }
      return fd_source(fd)(buffer);
    };
  }
  serve::WireReader reader(std::move(source));
  auto length = reader.u64();
  if (!length) return length.error();
  if (*length > kMaxMessage) return make_error(EPROTO, "control message too large");
  std::string payload(*length, '\0');
  if (auto s = reader.read_exact(std::as_writable_bytes(std::span(payload.data(), payload.size()))); !s) {
    return s.error();
  }
  return payload;
}

serve::WireReader payload_reader(const std::string& payload) {
  return serve::WireReader(nar_source_from(std::as_bytes(std::span(payload.data(), payload.size()))));
}

// A push request: kind, then a JSON document (the request and the progress mode).
std::string encode_request(const PushRequest& request, Progress::Mode mode) {
  nlohmann::json j = {{"request", request}, {"progress", static_cast<int>(mode)}};
  return serve::WireWriter().u64(kRequestPush).str(j.dump()).take();
}

// Sends the payload's first byte along with our stdout and stderr (SCM_RIGHTS).
Status send_with_fds(int fd, const std::string& message) {
  std::array<int, 2> fds{STDOUT_FILENO, STDERR_FILENO};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(fds))> control{};
  iovec iov{const_cast<char*>(message.data()), 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(fds));
  while (::sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) return errno_error("sendmsg");
  }
  return write_all(fd, std::string_view(message).substr(1));
}

// Receives the first byte and the client's two descriptors.
Status receive_fds(int fd, char& first, Fd& out, Fd& err) {
  alignas(cmsghdr) std::array<char, CMSG_SPACE(2 * sizeof(int))> control{};
  iovec iov{&first, 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  while ((n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC)) < 0) {
    if (errno != EINTR) return errno_error("recvmsg");
  }
  if (n != 1) return make_error(EPROTO, "empty control request");
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
        cmsg->cmsg_len == CMSG_LEN(2 * sizeof(int))) {
      std::array<int, 2> fds{};
      std::memcpy(fds.data(), CMSG_DATA(cmsg), sizeof(fds));
      out.reset(fds[0]);
      err.reset(fds[1]);
    }
  }
  if (!out || !err) return make_error(EPROTO, "control request without descriptors");
  return {};
}

// Serves one client; returns false when the connection should end.
bool serve_client(int client, const PushOptions& options, std::unique_ptr<Pusher>& pusher) {
  // Only this user's pushes (the socket's directory is private too).
  if (auto uid = peer_uid(client); !uid || *uid != ::getuid()) return true;
  char first = 0;
  Fd out, err;
  if (!receive_fds(client, first, out, err)) return true;
  auto rest = receive_message(client, first);
  if (!rest) return true;
  auto r = payload_reader(*rest);
  auto kind = r.u64();
  if (!kind) return true;
  if (*kind == kRequestExit) {
    (void)send_message(client, "");
    return false;
  }
  auto document = r.str(kMaxMessage);
  if (!document) return true;
  PushRequest request;
  int mode = 0;
  try {
    auto j = nlohmann::json::parse(*document);
    j.at("request").get_to(request);
    j.at("progress").get_to(mode);
  } catch (const nlohmann::json::exception&) {
    return true;  // not from a client of this version: it gets no answer and pushes directly
  }
  if (mode < 0 || mode > 2) return true;

  PushOutcome outcome;
  std::FILE* progress_file = ::fdopen(err.get(), "w");
  if (progress_file != nullptr) (void)err.release();
  {
    // Progress goes to the client's stderr, as if the client were writing it.
    Progress progress(static_cast<Progress::Mode>(mode), progress_file != nullptr ? progress_file : stderr);
    outcome = pusher->push(request, progress);
    outcome.summary.persistent = true;
  }
  if (progress_file != nullptr) std::fclose(progress_file);
  // A broken connection is not kept: the next request starts afresh.
  bool broken = outcome.code != ExitCode::Ok && outcome.code != ExitCode::Usage &&
                outcome.code != ExitCode::LocalStore && outcome.code != ExitCode::Roots;
  if (broken) pusher = std::make_unique<Pusher>(options);
  (void)send_message(client, nlohmann::json(outcome).dump());
  return !(broken &&
           (outcome.code == ExitCode::HostKey || outcome.code == ExitCode::Auth || outcome.code == ExitCode::Connect));
}

[[noreturn]] void connection_main(Fd listener, Fd ready, const std::string& socket_path, ino_t socket_inode,
                                  const PushOptions& options, int64_t persist_seconds) {
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    ::close(null);
  }
  (void)write_all(ready.get(), "1");
  ready.reset();
  auto pusher = std::make_unique<Pusher>(options);
  bool running = true;
  while (running) {
    pollfd pfd{listener.get(), POLLIN, 0};
    int64_t timeout_ms = persist_seconds * 1000;
    int rc = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(timeout_ms, INT32_MAX)));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) break;  // idle for persist_seconds
    Fd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) continue;
    running = serve_client(client.get(), options, pusher);
  }
  // Only remove the socket if it is still ours (a newer one may have replaced it).
  struct stat current {};
  if (::stat(socket_path.c_str(), &current) == 0 && current.st_ino == socket_inode) {
    ::unlink(socket_path.c_str());
  }
  pusher.reset();
  std::_Exit(0);
}

Status ensure_private_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno_error("mkdir " + dir);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return errno_error("stat " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::getuid() || (st.st_mode & 077) != 0) {
    return make_error(EPERM, dir + " is not a private directory of this user");
  }
  return {};
}

Status start_persistent_connection(const std::string& socket_path, const PushOptions& options,
                                   int64_t persist_seconds) {
  auto slash = socket_path.rfind('/');
  if (auto s = ensure_private_dir(socket_path.substr(0, slash)); !s) return s;
  std::string temporary = socket_path + "." + std::to_string(::getpid());
  ::unlink(temporary.c_str());
  auto listening = listen_unix_socket(temporary, 16);
  if (!listening) return listening.error();
  Fd listener = std::move(*listening);
  ::chmod(temporary.c_str(), 0600);
  struct stat bound {};
  if (::stat(temporary.c_str(), &bound) != 0) return errno_error("stat " + temporary);
  if (::rename(temporary.c_str(), socket_path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    return errno_error("rename " + temporary);
  }
  std::array<int, 2> ready_pipe{-1, -1};
  if (::pipe2(ready_pipe.data(), O_CLOEXEC) != 0) return errno_error("pipe");
  Fd ready_read(ready_pipe[0]), ready_write(ready_pipe[1]);
  std::fflush(nullptr);
  pid_t child = ::fork();
  if (child < 0) return errno_error("fork");
  if (child == 0) {
    ready_read.reset();
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) std::_Exit(0);  // re-parented to init
    connection_main(std::move(listener), std::move(ready_write), socket_path, bound.st_ino, options, persist_seconds);
  }
  ready_write.reset();
  listener.reset();
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {}
  char byte = 0;
  ssize_t n;
  while ((n = ::read(ready_read.get(), &byte, 1)) < 0 && errno == EINTR) {}
  if (n != 1) return make_error(EIO, "the persistent connection did not start");
  return {};
}

}  // namespace

std::string default_control_dir() {
  // $XDG_RUNTIME_DIR only if it is this user's private directory (sudo may pass another's).
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && runtime[0] == '/') {
    struct stat st {};
    if (::stat(runtime, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::getuid() && (st.st_mode & 077) == 0) {
      return std::string(runtime) + "/lazystore-push";
    }
  }
  return "/tmp/lazystore-push-" + std::to_string(::getuid());
}

Result<std::string> control_socket_path(const std::string& control_dir, const PushOptions& options) {
  // Everything that decides where and how the connection goes, and the files that decide which
  // host key and identity are accepted: a change to any of them (a removed known_hosts line, a
  // new Hostname, a rebuilt lazystore-push) means another socket, so a kept connection is only
  // ever reused for what would have been connected the same way.
  auto target = resolve_ssh_target(options.ssh);
  if (!target) return target.error();
  std::string key = "lazystore-push persistent connection 2\n";
  for (const std::string& item :
       {options.ssh.destination, target->host, std::to_string(target->port), target->user, target->known_hosts,
        options.ssh.ciphers.value_or(""), std::string(options.ssh.accept_new_host_key ? "1" : "0"),
        std::to_string(options.ssh.connect_timeout_seconds), std::to_string(options.ssh.io_timeout_seconds),
        options.nix_store, options.from_store, std::to_string(static_cast<int>(options.protocol)),
        options.daemon_command, options.remote_command, options.roots_command,
        std::string(options.import_paths ? "1" : "0")}) {
    key += item + '\n';
  }
  auto add_content = [&key](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    key += path + '\n' + std::string(std::istreambuf_iterator<char>(in), {}) + '\n';
  };
  auto add_identity = [&key](const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      key += path + ' ' + std::to_string(st.st_dev) + ' ' + std::to_string(st.st_ino) + ' ' +
             std::to_string(st.st_size) + ' ' + std::to_string(st.st_mtim.tv_sec) + '.' +
             std::to_string(st.st_mtim.tv_nsec) + '\n';
    } else {
      key += path + " absent\n";
    }
  };
  for (const auto& file : target->config_files) add_content(file);
  add_content(target->known_hosts);
  for (const auto& identity : target->identities) add_identity(identity);
  add_identity("/proc/self/exe");
  return control_dir + "/" + xxh3_128_hex(key) + ".sock";
}

Result<PushOutcome> push_over_persistent_connection(const std::string& socket, const PushOptions& options,
                                                    const PushRequest& request, int64_t persist_seconds) {
  // Nobody else may be able to put a socket there, or reach ours.
  if (auto s = ensure_private_dir(socket.substr(0, socket.rfind('/'))); !s) return s.error();
  auto fd = connect_unix_socket(socket);
  if (!fd) {
    if (auto s = start_persistent_connection(socket, options, persist_seconds); !s) return s.error();
    fd = connect_unix_socket(socket);
    if (!fd) return fd.error();
  }
  if (auto uid = peer_uid(fd->get()); !uid || *uid != ::getuid()) {
    return make_error(EPERM, socket + " is not served by this user");
  }
  std::string payload = encode_request(request, options.progress);
  if (auto s = send_with_fds(fd->get(), serve::WireWriter().u64(payload.size()).take() + payload); !s) {
    return s.error();
  }
  auto answer = receive_message(fd->get());
  if (!answer) return make_error(answer.error().code, "the persistent connection went away: " + answer.error().message);
  return push_outcome_from_json(*answer);
}

bool stop_persistent_connection(const std::string& socket) {
  auto fd = connect_unix_socket(socket);
  if (!fd) return false;
  std::string payload = serve::WireWriter().u64(kRequestExit).take();
  if (!send_with_fds(fd->get(), serve::WireWriter().u64(payload.size()).take() + payload)) return false;
  return receive_message(fd->get()).ok();
}

}  // namespace lazystore
