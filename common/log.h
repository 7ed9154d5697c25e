// Levelled logging: "lazystore: LEVEL: message", printf-style, checked by the compiler.
// Where lines go: stderr while the process has the terminal it was started from; in the
// background (detach_logging) syslog when /dev/log answers, else still stderr (most containers
// have no /dev/log); with a log file (-o log=FILE) that file as well, with time and pid.
#pragma once

#include <string>
#include <string_view>

#include "result.h"

namespace lazystore {

enum class LogLevel { Error = 0, Warning = 1, Info = 2, Debug = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
// Parses "error", "warning", "info", "debug"; returns false on anything else.
bool parse_log_level(std::string_view text, LogLevel& out);
void set_log_program(std::string_view name);  // the prefix, default "lazystore"
// Appends every line from now on to `path` too ("2026-12-01T10:00:00.123Z lazystore[PID]:
// LEVEL: message"), created 0600 if missing.
Status set_log_file(const std::string& path);
// Whether syslog(3) reaches a logging daemon: something listens on /dev/log.
bool syslog_available();
// A process that goes on in the background: stdin and stdout become /dev/null; lines go to the
// log file if there is one, else to syslog (facility daemon) if it is available (stderr then
// becomes /dev/null too, so that no terminal or pipe is held), else stay on stderr.
void detach_logging();
// Where lines go now, for a start-up message: "stderr", "syslog", "/var/log/x (and stderr)"...
std::string log_destination();
void log_printf(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));
// Sees every message that is logged (after the level filter), e.g. to keep the last error for
// `lazystore-ctl status`. Called with the log's lock held: it must not log. nullptr removes it;
// once set_log_observer returns, the previous observer is no longer running.
using LogObserver = void (*)(void* context, LogLevel level, std::string_view message);
void set_log_observer(LogObserver observer, void* context);
std::string_view log_level_name(LogLevel level);

}  // namespace lazystore

#define LZ_LOG(level, ...)                                                     \
  do {                                                                         \
    if (static_cast<int>(level) <= static_cast<int>(::lazystore::log_level())) \
      ::lazystore::log_printf(level, __VA_ARGS__);                             \
  } while (0)
#define LOG_ERROR(...) LZ_LOG(::lazystore::LogLevel::Error, __VA_ARGS__)
#define LOG_WARNING(...) LZ_LOG(::lazystore::LogLevel::Warning, __VA_ARGS__)
#define LOG_INFO(...) LZ_LOG(::lazystore::LogLevel::Info, __VA_ARGS__)
#define LOG_DEBUG(...) LZ_LOG(::lazystore::LogLevel::Debug, __VA_ARGS__)
