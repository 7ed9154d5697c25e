#include "log.h"

#include <fcntl.h>
#include <paths.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "fd.h"
#include "unix_socket.h"

namespace lazystore {
namespace {

std::atomic<LogLevel> g_level{LogLevel::Warning};
std::mutex g_mutex;  // guards g_program and keeps lines from interleaving
std::string g_program = "lazystore";
bool g_stderr = true;   // lines go to fd 2
bool g_syslog = false;  // lines go to syslog(3)
Fd g_file;              // -o log=FILE
std::string g_file_path;
LogObserver g_observer = nullptr;  // guarded by g_mutex, like its context
void* g_observer_context = nullptr;

int syslog_priority(LogLevel level) {
  switch (level) {
    case LogLevel::Error: return LOG_ERR;
    case LogLevel::Warning: return LOG_WARNING;
    case LogLevel::Info: return LOG_INFO;
    case LogLevel::Debug: return LOG_DEBUG;
  }
  return LOG_NOTICE;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::Error: return "error";
    case LogLevel::Warning: return "warning";
    case LogLevel::Info: return "info";
    case LogLevel::Debug: return "debug";
  }
  return "log";
}

// One write per line, so that lines of concurrent processes sharing a file stay whole.
void write_line(int fd, const std::string& line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // nowhere left to report a failing log destination
    p += w;
    left -= static_cast<size_t>(w);
  }
}

// "2026-12-01T10:00:00.123Z" (UTC, milliseconds).
std::string timestamp() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  gmtime_r(&now.tv_sec, &utc);
  char text[40];
  size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + n, sizeof text - n, ".%03ldZ", now.tv_nsec / 1000000);
  return text;
}

}  // namespace

std::string_view log_level_name(LogLevel level) { return level_name(level); }

void set_log_observer(LogObserver observer, void* context) {
  std::lock_guard lock(g_mutex);
  g_observer = observer;
  g_observer_context = context;
}

void set_log_level(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }

LogLevel log_level() { return g_level.load(std::memory_order_relaxed); }

bool parse_log_level(std::string_view text, LogLevel& out) {
  for (LogLevel level : {LogLevel::Error, LogLevel::Warning, LogLevel::Info, LogLevel::Debug}) {
    if (text == level_name(level)) {
      out = level;
      return true;
    }
  }
  return false;
}

void set_log_program(std::string_view name) {
  std::lock_guard lock(g_mutex);
  g_program.assign(name);
}

Status set_log_file(const std::string& path) {
  Fd file(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600));
  if (!file) return make_error(errno, "log file " + path + ": " + std::strerror(errno));
  std::lock_guard lock(g_mutex);
  g_file = std::move(file);
  g_file_path = path;
  return {};
}

bool syslog_available() {
  // glibc's syslog(3) tries a datagram socket first, then a stream socket.
  auto address = unix_socket_address(_PATH_LOG);
  if (!address) return false;
  for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
    Fd probe(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    if (probe && ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) == 0) {
      return true;
    }
  }
  return false;
}

void detach_logging() {
  bool use_syslog = false;
  {
    std::lock_guard lock(g_mutex);
    if (!g_file) use_syslog = syslog_available();
  }
  Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  std::lock_guard lock(g_mutex);
  if (use_syslog) {
    openlog(g_program.c_str(), LOG_PID | LOG_NDELAY, LOG_DAEMON);
    g_syslog = true;
  }
  g_stderr = !g_file && !use_syslog;  // no other place: stderr stays
  if (!null) return;
  ::dup2(null.get(), STDIN_FILENO);
  ::dup2(null.get(), STDOUT_FILENO);
  if (!g_stderr) ::dup2(null.get(), STDERR_FILENO);
}

std::string log_destination() {
  std::lock_guard lock(g_mutex);
  std::string where;
  auto add = [&where](const std::string& what) { where += (where.empty() ? "" : " and ") + what; };
  if (g_file) add(g_file_path);
  if (g_syslog) add("syslog");
  if (g_stderr) add("stderr");
  return where.empty() ? "nowhere" : where;
}

void log_printf(LogLevel level, const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list again;
  va_copy(again, args);
  char small[512];
  int n = std::vsnprintf(small, sizeof small, format, args);
  va_end(args);
  std::string message;
  if (n < 0) {
    message = "(unformattable log message)";
  } else if (static_cast<size_t>(n) < sizeof small) {
    message.assign(small, static_cast<size_t>(n));
  } else {
    message.resize(static_cast<size_t>(n) + 1);
    std::vsnprintf(message.data(), message.size(), format, again);
    message.resize(static_cast<size_t>(n));
  }
  va_end(again);
  while (!message.empty() && message.back() == '\n') message.pop_back();

  std::lock_guard lock(g_mutex);
  if (g_observer) g_observer(g_observer_context, level, message);
  if (g_syslog) syslog(syslog_priority(level), "%s: %s", level_name(level), message.c_str());
  if (g_stderr) write_line(STDERR_FILENO, g_program + ": " + level_name(level) + ": " + message + "\n");
  if (g_file) {
    write_line(g_file.get(), timestamp() + " " + g_program + "[" + std::to_string(getpid()) +
                                 "]: " + level_name(level) + ": " + message + "\n");
  }
}

}  // namespace lazystore
