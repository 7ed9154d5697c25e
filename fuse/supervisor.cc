#include "supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <optional>

#include "daemonize.h"
#include "fd.h"
#include "fuse_version.h"
#include "inode_journal.h"
#include "log.h"
#include "process_title.h"
#include "request_journal.h"
#include "server.h"
#include "session_takeover.h"
#include "stats.h"
#include "unmount_guard.h"

namespace lazystore {
namespace {

using Clock = std::chrono::steady_clock;

// Restarts back off once servers keep dying young (a request that crashes every server it is
// resent to): after kQuickCrashes in a row that each served less than kYoung, the delay
// doubles from kFirstBackoff up to kLongestBackoff.
constexpr int kQuickCrashes = 5;
constexpr auto kYoung = std::chrono::seconds(1);
constexpr auto kFirstBackoff = std::chrono::milliseconds(250);
constexpr auto kLongestBackoff = std::chrono::seconds(10);
// After this many young deaths in a row (about 20 s of backoff), waiting requests would wait for
// ever: the mount ends instead, and they fail.
constexpr int kGiveUpAfter = 12;

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

// The page shared with every server: the kernel's INIT request.
class SharedInitPage {
 public:
  static Result<SharedInitPage> create() {
    void* p = mmap(nullptr, sizeof(SharedInit), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return make_error(errno, std::string("mmap: ") + std::strerror(errno));
    return SharedInitPage(new (p) SharedInit);
  }
  SharedInitPage(SharedInitPage&& other) noexcept : init_(std::exchange(other.init_, nullptr)) {}
  SharedInitPage(const SharedInitPage&) = delete;
  SharedInitPage& operator=(const SharedInitPage&) = delete;
  SharedInitPage& operator=(SharedInitPage&&) = delete;
  ~SharedInitPage() {
    if (init_) munmap(init_, sizeof(SharedInit));
  }
  SharedInit* get() const { return init_; }

 private:
  explicit SharedInitPage(SharedInit* init) : init_(init) {}
  SharedInit* init_;
};

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

class Supervisor {
 public:
  Supervisor(const MountOptions& options, const std::vector<std::string>& fuse_argv, Fd report)
      : options_(options), fuse_argv_(fuse_argv), report_(std::move(report)) {}

  int run();

 private:
  Status mount();
  Status start_server();
  void on_server_exit(int status);
  void unmount();

  const MountOptions& options_;
  const std::vector<std::string>& fuse_argv_;
  Fd report_;  // to the process that waits for the daemon to be up; closed after one byte
  std::unique_ptr<fuse_session, SessionDeleter> mount_session_;
  int fuse_fd_ = -1;
  Fd guard_;                   // while open, the unmount guard waits (unmount_guard.h); only this process holds it
  std::array<Fd, 2> journal_;  // the inode journal's two files
  std::optional<SharedInitPage> init_;
  std::optional<RequestJournal> requests_;
  std::optional<SharedStats> stats_;  // counters of every server of this mount
  sigset_t old_mask_{};
  Fd signals_;

  pid_t server_ = -1;
  Fd server_ready_;
  uint64_t generation_ = 0;
  bool ever_served_ = false;
  bool stopping_ = false;
  int exit_status_ = -1;  // set when the supervisor is done
  Clock::time_point crashed_at_{};
  Clock::time_point serving_since_{};
  int quick_crashes_ = 0;
  std::optional<Clock::time_point> restart_at_;
};

Status Supervisor::mount() {
  FuseArgs args(fuse_argv_);
  static const fuse_lowlevel_ops kNoOps{};  // this session only mounts; servers answer
  mount_session_.reset(fuse_session_new(args.get(), &kNoOps, sizeof kNoOps, nullptr));
  if (!mount_session_) return make_error(EINVAL, "cannot start the FUSE session (see the messages above)");
  if (fuse_session_mount(mount_session_.get(), options_.mountpoint.c_str()) != 0) {
    mount_session_.reset();
    return make_error(EIO, "cannot mount on " + options_.mountpoint);
  }
  fuse_fd_ = fuse_session_fd(mount_session_.get());
  auto guard = start_unmount_guard(options_.mountpoint, options_.log_file);
  if (!guard) {
    unmount();
    return guard.error();
  }
  guard_ = std::move(*guard);
  return {};
}

void Supervisor::unmount() {
  if (!mount_session_) return;
  fuse_session_unmount(mount_session_.get());
  mount_session_.reset();
}

Status Supervisor::start_server() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return make_error(errno, std::string("pipe: ") + std::strerror(errno));
  Fd ready_read(fds[0]);
  Fd ready_write(fds[1]);
  ++generation_;
  pid_t supervisor = getpid();
  require_single_thread("starting a server");
  pid_t pid = fork();
  if (pid < 0) return make_error(errno, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // The server. It must not outlive the supervisor: the mount ends with it anyway.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != supervisor) _exit(1);
    sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
    ready_read.reset();
    report_.reset();
    signals_.reset();
    guard_.reset();
    Takeover takeover;
    takeover.fuse_fd = fuse_fd_;
    takeover.journal = {journal_[0].get(), journal_[1].get()};
    takeover.generation = generation_;
    takeover.init = init_->get();
    takeover.requests = &*requests_;
    takeover.ready_fd = ready_write.release();
    takeover.stats = stats_ ? stats_->get() : nullptr;
    int status = serve(options_, fuse_argv_, &takeover);
    std::fflush(nullptr);
    _exit(status);
  }
  server_ = pid;
  server_ready_ = std::move(ready_read);
  serving_since_ = Clock::now();  // one that dies before it serves is young too
  return {};
}

void Supervisor::on_server_exit(int status) {
  std::string how = describe_exit(status);
  server_ = -1;
  server_ready_.reset();
  if (stopping_) {
    exit_status_ = 0;
    return;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    LOG_INFO("the server ended the mount of %s", options_.mountpoint.c_str());
    exit_status_ = 0;
    return;
  }
  if (!ever_served_) {
    LOG_ERROR("the server %s before it could serve %s", how.c_str(), options_.mountpoint.c_str());
    exit_status_ = 1;
    return;
  }
  auto now = Clock::now();
  crashed_at_ = now;
  quick_crashes_ = now - serving_since_ < kYoung ? quick_crashes_ + 1 : 0;
  if (quick_crashes_ >= kGiveUpAfter) {
    LOG_ERROR(
        "the server of %s %s, the %dth to die within %lld ms of starting in a row: "
        "ending the mount",
        options_.mountpoint.c_str(), how.c_str(), quick_crashes_,
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(kYoung).count()));
    exit_status_ = 1;
    return;
  }
  auto delay = Clock::duration::zero();
  if (quick_crashes_ > kQuickCrashes) {
    int doublings = std::min(quick_crashes_ - kQuickCrashes - 1, 6);
    delay = std::min<Clock::duration>(kFirstBackoff * (1 << doublings), kLongestBackoff);
  }
  LOG_ERROR("the server of %s %s; starting another in %lld ms (requests wait meanwhile)", options_.mountpoint.c_str(),
            how.c_str(), static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(delay).count()));
  restart_at_ = now + delay;
}

int Supervisor::run() {
  auto done = [this](int status) {
    report_status(report_, status);
    return status;
  };
  if (auto mounted = mount(); !mounted) {
    LOG_ERROR("%s", mounted.error().message.c_str());
    return done(1);
  }
  // What outlives each server: the inode journal, the INIT copy, the requests in flight.
  auto journal = InodeJournal::create_memfds();
  auto page = SharedInitPage::create();
  auto requests = RequestJournal::create(RequestJournal::slots_for(options_.single_thread ? 1 : options_.max_threads));
  if (!journal || !page || !requests) {
    LOG_ERROR("%s", (!journal ? journal.error() : !page ? page.error() : requests.error()).message.c_str());
    unmount();
    return done(1);
  }
  journal_[0].reset((*journal)[0]);
  journal_[1].reset((*journal)[1]);
  init_.emplace(std::move(*page));
  requests_.emplace(std::move(*requests));
  stats_ = SharedStats::create();  // without it (mmap failed) each server counts from zero
  set_process_title({"[supervisor]", options_.mountpoint});

  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&handled, sig);
  sigprocmask(SIG_BLOCK, &handled, &old_mask_);
  signals_.reset(signalfd(-1, &handled, SFD_CLOEXEC));
  signal(SIGPIPE, SIG_IGN);
  if (!signals_) {
    LOG_ERROR("signalfd: %s", std::strerror(errno));
    unmount();
    return done(1);
  }
  restart_at_ = Clock::now();

  while (exit_status_ < 0) {
    if (restart_at_ && Clock::now() >= *restart_at_) {
      restart_at_.reset();
      if (auto started = start_server(); !started) {
        LOG_ERROR("%s", started.error().message.c_str());
        restart_at_ = Clock::now() + std::chrono::seconds(1);
      }
    }
    int timeout = -1;
    if (restart_at_) {
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*restart_at_ - Clock::now());
      timeout = static_cast<int>(std::max<int64_t>(0, wait.count()));
    }
    pollfd fds[2] = {{signals_.get(), POLLIN, 0}, {server_ready_.get(), POLLIN, 0}};
    int n = poll(fds, server_ready_ ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("poll: %s", std::strerror(errno));
      break;
    }
    if (server_ready_ && (fds[1].revents & (POLLIN | POLLHUP))) {
      char byte;
      if (read(server_ready_.get(), &byte, 1) == 1) {
        serving_since_ = Clock::now();
        if (!ever_served_) {
          ever_served_ = true;
          report_status(report_, 0);
          if (!options_.foreground) detach_logging();
        } else {
          auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - crashed_at_);
          LOG_WARNING("server %llu of %s serves again, %lld ms after the crash",
                      static_cast<unsigned long long>(generation_), options_.mountpoint.c_str(),
                      static_cast<long long>(ms.count()));
        }
      }
      server_ready_.reset();
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (read(signals_.get(), &info, sizeof info) != sizeof info) continue;
      if (info.ssi_signo == SIGCHLD) {
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
          if (pid == server_) on_server_exit(status);
        }
      } else if (!stopping_) {
        LOG_INFO("signal %u: unmounting %s", info.ssi_signo, options_.mountpoint.c_str());
        stopping_ = true;
        restart_at_.reset();
        unmount();
        if (server_ > 0) {
          kill(server_, SIGTERM);
        } else {
          exit_status_ = 0;
        }
      }
    }
  }
  unmount();
  sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  return done(exit_status_ < 0 ? 1 : exit_status_);
}

}  // namespace

int supervise(const MountOptions& options, const std::vector<std::string>& fuse_argv) {
  Fd report;
  if (!options.foreground) {
    // The supervisor must stay the servers' parent, so it forks before them (fuse_daemonize
    // would fork after mounting); the process started by the user exits with its report.
    auto daemon = daemonize();
    if (!daemon) {
      LOG_ERROR("%s", daemon.error().message.c_str());
      return 1;
    }
    report = std::move(*daemon);
  }
  Supervisor supervisor(options, fuse_argv, std::move(report));
  return supervisor.run();
}

}  // namespace lazystore
