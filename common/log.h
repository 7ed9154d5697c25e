// Levelled logging to stderr: "lazystore: LEVEL: message". printf-style, checked by the compiler.
#pragma once

#include <string_view>

namespace lazystore {

enum class LogLevel { Error = 0, Warning = 1, Info = 2, Debug = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
// Parses "error", "warning", "info", "debug"; returns false on anything else.
bool parse_log_level(std::string_view text, LogLevel& out);
void set_log_program(std::string_view name);  // the prefix, default "lazystore"
// A daemon without a terminal logs to syslog (facility daemon) instead of stderr.
void set_log_to_syslog(bool enabled);
// A process that goes on in the background: messages to syslog, stdin/stdout/stderr /dev/null.
void detach_to_syslog();
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
