#include "log.h"

#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <string>

namespace lazystore {
namespace {

std::atomic<LogLevel> g_level{LogLevel::Warning};
std::mutex g_mutex;  // guards g_program and keeps lines from interleaving
std::string g_program = "lazystore";
bool g_syslog = false;
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

void set_log_to_syslog(bool enabled) {
  std::lock_guard lock(g_mutex);
  if (enabled && !g_syslog) openlog(g_program.c_str(), LOG_PID | LOG_NDELAY, LOG_DAEMON);
  g_syslog = enabled;
}

void detach_to_syslog() {
  set_log_to_syslog(true);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) return;
  for (int fd = 0; fd <= 2; ++fd) dup2(null, fd);
  if (null > 2) close(null);
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
  if (g_syslog) {
    syslog(syslog_priority(level), "%s: %s", level_name(level), message.c_str());
    return;
  }
  // One write per line so that lines of concurrent processes sharing stderr stay whole.
  std::string line = g_program + ": " + level_name(level) + ": " + message + "\n";
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t w = ::write(STDERR_FILENO, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // nowhere left to report a failing stderr
    p += w;
    left -= static_cast<size_t>(w);
  }
}

}  // namespace lazystore
