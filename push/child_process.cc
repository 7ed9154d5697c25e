#include "child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "io.h"

extern char** environ;

namespace lazystore {

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv) {
  if (argv.empty()) return make_error(EINVAL, "empty command");
  std::array<int, 2> in{-1, -1}, out{-1, -1}, err{-1, -1};
  if (pipe2(in.data(), O_CLOEXEC) != 0) return errno_error("pipe");
  Fd in_r(in[0]), in_w(in[1]);
  if (pipe2(out.data(), O_CLOEXEC) != 0) return errno_error("pipe");
  Fd out_r(out[0]), out_w(out[1]);
  if (pipe2(err.data(), O_CLOEXEC) != 0) return errno_error("pipe");
  Fd err_r(err[0]), err_w(err[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_r.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return make_error(rc, "cannot run " + argv[0] + ": " + std::strerror(rc));
  // A deeper pipe lets the child run ahead while we are busy sending (best effort).
  (void)fcntl(out_r.get(), F_SETPIPE_SZ, 1 << 20);
  return ChildProcess(pid, std::move(in_w), std::move(out_r), std::move(err_r));
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      in_(std::move(other.in_)),
      out_(std::move(other.out_)),
      err_(std::move(other.err_)),
      stderr_(std::move(other.stderr_)) {}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
  in_.reset();
  out_.reset();
  err_.reset();
  int status = 0;
  // A serve process exits on EOF; give it no chance to linger if it does not.
  if (waitpid(pid_, &status, WNOHANG) == 0) {
    kill(pid_, SIGTERM);
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
  }
}

void ChildProcess::drain_stderr() {
  if (!err_) return;
  std::array<char, 4096> buffer{};
  ssize_t n = ::read(err_.get(), buffer.data(), buffer.size());
  if (n > 0) {
    stderr_.append(std::string_view(buffer.data(), static_cast<size_t>(n)));
  } else if (n == 0) {
    err_.reset();
  }
}

Result<size_t> ChildProcess::read_some(std::span<std::byte> buffer) {
  if (!out_) return size_t{0};
  while (true) {
    std::array<pollfd, 2> fds{pollfd{out_.get(), POLLIN, 0}, pollfd{err_.get(), POLLIN, 0}};
    if (poll(fds.data(), err_ ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return errno_error("poll");
    }
    if (err_ && fds[1].revents != 0) drain_stderr();
    if (fds[0].revents != 0) {
      ssize_t n = ::read(out_.get(), buffer.data(), buffer.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_error("read from local nix-store");
      }
      return static_cast<size_t>(n);
    }
  }
}

Status ChildProcess::write_all(std::span<const std::byte> data) {
  while (!data.empty()) {
    if (!in_) return make_error(EPIPE, "local nix-store: input already closed");
    std::array<pollfd, 2> fds{pollfd{in_.get(), POLLOUT, 0}, pollfd{err_.get(), POLLIN, 0}};
    if (poll(fds.data(), err_ ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return errno_error("poll");
    }
    if (err_ && fds[1].revents != 0) drain_stderr();
    if (fds[0].revents == 0) continue;
    ssize_t n = ::write(in_.get(), data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("write to local nix-store");
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return {};
}

Status ChildProcess::close_write() {
  in_.reset();
  return {};
}

std::string ChildProcess::stderr_tail() {
  // Collect what the child wrote before it exited (non-blocking once it has gone).
  while (err_) {
    pollfd fd{err_.get(), POLLIN, 0};
    if (poll(&fd, 1, 0) <= 0) break;
    drain_stderr();
  }
  return stderr_.last_line();
}

Result<int> ChildProcess::wait() {
  in_.reset();
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return errno_error("waitpid");
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

}  // namespace lazystore
