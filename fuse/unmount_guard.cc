#include "unmount_guard.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "daemonize.h"
#include "log.h"
#include "mountpoint_check.h"

namespace lazystore {
namespace {

constexpr int kPipeFd = 3;  // the guard's end of the pipe, in the guard
constexpr int kExecDeadlineMs = 10000;
// How long a mount whose daemon just died may still answer before the guard takes it for
// another, live one.
constexpr auto kDeathDeadline = std::chrono::seconds(5);

}  // namespace

Result<Fd> start_unmount_guard(const std::string& mountpoint, const std::string& log_file) {
  auto mount = mount_at(mountpoint);
  if (!mount || mount->fstype != "fuse.lazystore") {
    return make_error(EIO, "the new mount is not in /proc/self/mountinfo at " + mountpoint);
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return make_error(errno, std::string("pipe: ") + std::strerror(errno));
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  std::vector<std::string> args = {"lazystore-unmount-guard", std::string(kUnmountGuardFlag), mountpoint, mount->id,
                                   mount->device};
  if (!log_file.empty()) args.push_back(log_file);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  // Ends (EOF) when the guard has exec'd; carries errno when the exec failed.
  if (pipe2(fds, O_CLOEXEC) != 0) return make_error(errno, std::string("pipe: ") + std::strerror(errno));
  Fd exec_read(fds[0]);
  Fd exec_write(fds[1]);
  require_single_thread("starting the unmount guard");
  // Forked twice: the guard is no child of the supervisor, whose children are its servers.
  pid_t pid = fork();
  if (pid < 0) return make_error(errno, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (fork() != 0) _exit(0);
    // Only stdin/stdout/stderr and the pipes go along: a /dev/fuse descriptor kept here would
    // keep a dead daemon's mount answering nothing instead of ending.
    int read_fd = read_end.get();
    int exec_fd = exec_write.get();
    if (exec_fd == kPipeFd) exec_fd = fcntl(exec_fd, F_DUPFD_CLOEXEC, kPipeFd + 1);
    if (read_fd != kPipeFd && dup2(read_fd, kPipeFd) != kPipeFd) _exit(127);
    fcntl(kPipeFd, F_SETFD, 0);  // dup2 onto itself would keep FD_CLOEXEC
    if (exec_fd != kPipeFd + 1 && dup3(exec_fd, kPipeFd + 1, O_CLOEXEC) != kPipeFd + 1) _exit(127);
    close_range(kPipeFd + 2, ~0U, 0);
    execv("/proc/self/exe", argv.data());
    int error = errno;
    (void)!write(kPipeFd + 1, &error, sizeof error);
    _exit(127);
  }
  exec_write.reset();
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  // Mounted only once the guard runs: a kill right after the start must find it armed.
  pollfd ready{exec_read.get(), POLLIN, 0};
  int error = 0;
  if (poll(&ready, 1, kExecDeadlineMs) != 1) {
    LOG_WARNING("the unmount guard of %s did not start within %d ms", mountpoint.c_str(), kExecDeadlineMs);
  } else if (read(exec_read.get(), &error, sizeof error) == static_cast<ssize_t>(sizeof error)) {
    return make_error(error, std::string("starting the unmount guard: ") + std::strerror(error));
  }
  return write_end;
}

int run_unmount_guard(int argc, char* argv[]) {
  set_log_program("lazystore");
  if (argc < 5) {
    LOG_ERROR("usage: lazystore --unmount-guard MOUNTPOINT ID DEVICE [LOGFILE] (internal)");
    return 2;
  }
  std::string mountpoint = argv[2];
  std::string id = argv[3];
  std::string device = argv[4];
  if (argc > 5) (void)set_log_file(argv[5]);
  prctl(PR_SET_NAME, "lazystore-guard");
  // Only the end of the pipe ends the guard: a kill of the process group (Ctrl-C, SIGTERM to
  // the session) reaches the supervisor, which unmounts by itself.
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) signal(sig, SIG_IGN);
  setsid();
  if (chdir("/") != 0) LOG_WARNING("chdir /: %s", std::strerror(errno));
  detach_logging();
  char byte;
  ssize_t n;
  do {
    n = read(kPipeFd, &byte, 1);
  } while (n > 0 || (n < 0 && errno == EINTR));
  // Mount IDs and anonymous device numbers are reused once a mount is gone: a mount with ours
  // may be a later one, which answers. Ours is dead (ENOTCONN) within a moment: the daemon's
  // last /dev/fuse descriptor closes as it exits.
  auto deadline = std::chrono::steady_clock::now() + kDeathDeadline;
  for (;;) {
    auto mount = mount_at(mountpoint);
    if (!mount || mount->id != id || mount->device != device) return 0;  // unmounted: the normal end
    auto answer = ask_path(mountpoint, std::chrono::duration_cast<std::chrono::milliseconds>(kDeathDeadline));
    if (answer && answer->error == ENOTCONN) break;
    if (!answer || std::chrono::steady_clock::now() >= deadline) return 0;  // alive: not ours
    std::this_thread::sleep_for(std::chrono::milliseconds(10));             // polling, bounded by the deadline
  }
  if (umount2(mountpoint.c_str(), MNT_DETACH) != 0) {
    auto mount = mount_at(mountpoint);
    if (!mount || mount->id != id || mount->device != device) return 0;  // unmounted meanwhile
    LOG_ERROR("the daemon of %s is gone, and unmounting it failed: %s", mountpoint.c_str(), std::strerror(errno));
    return 1;
  }
  LOG_WARNING("the daemon of %s is gone (killed): unmounted it", mountpoint.c_str());
  return 0;
}

}  // namespace lazystore
