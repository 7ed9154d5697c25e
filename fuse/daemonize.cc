#include "daemonize.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "log.h"

namespace lazystore {
namespace {

// How long a thread that was just joined may still be listed in /proc (the kernel removes it
// a moment after pthread_join returns).
constexpr auto kJoinedThreadGrace = std::chrono::seconds(2);

// The "Threads:" count of /proc/self/status; 0 when it cannot be read.
int thread_count() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("Threads:")) return std::atoi(line.c_str() + 8);
  }
  return 0;
}

}  // namespace

void require_single_thread(const char* before) {
  auto deadline = std::chrono::steady_clock::now() + kJoinedThreadGrace;
  int threads = thread_count();
  while (threads > 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling, bounded by the deadline
    threads = thread_count();
  }
  if (threads <= 1) return;
  LOG_ERROR(
      "internal error: %d threads run before %s; a fork keeps only the calling thread, so no "
      "thread may start before the last fork (see Upstream::start)",
      threads, before);
  std::abort();
}

Result<Fd> daemonize() {
  require_single_thread("going to the background");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return make_error(errno, std::string("pipe: ") + std::strerror(errno));
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  std::fflush(nullptr);  // nothing buffered is written twice
  pid_t pid = fork();
  if (pid < 0) return make_error(errno, std::string("fork: ") + std::strerror(errno));
  if (pid > 0) {
    write_end.reset();
    char code = 1;  // the background process died without a word: a failure
    ssize_t n;
    do {
      n = read(read_end.get(), &code, 1);
    } while (n < 0 && errno == EINTR);
    _exit(n == 1 ? static_cast<unsigned char>(code) : 1);
  }
  read_end.reset();
  setsid();
  if (chdir("/") != 0) LOG_WARNING("chdir /: %s", std::strerror(errno));
  return write_end;
}

void report_status(Fd& report, int status) {
  if (!report) return;
  char value = static_cast<char>(status);
  (void)!write(report.get(), &value, 1);
  report.reset();
}

}  // namespace lazystore
