// lazystore SOURCE MOUNTPOINT [-o opts] [-f] [-d] [-s]: options → checks of MOUNTPOINT and
// SOURCE → supervisor (or not) → serve.
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <string_view>

#include "fd_limit.h"
#include "fuse_version.h"
#include "log.h"
#include "mountpoint_check.h"
#include "option_table.h"
#include "options.h"
#include "server.h"
#include "source_probe.h"
#include "supervisor.h"
#include "unmount_guard.h"

namespace {

// libfuse's own messages ("fuse: bad mount point …") go where lazystore's lines go.
void forward_fuse_log(fuse_log_level level, const char* format, va_list args) {
  using lazystore::LogLevel;
  char text[1024];
  std::vsnprintf(text, sizeof text, format, args);
  LogLevel ours = level <= FUSE_LOG_ERR       ? LogLevel::Error
                  : level == FUSE_LOG_WARNING ? LogLevel::Warning
                  : level == FUSE_LOG_DEBUG   ? LogLevel::Debug
                                              : LogLevel::Info;
  LZ_LOG(ours, "%s", text);
}

}  // namespace

int main(int argc, char* argv[]) {
  using namespace lazystore;
  if (argc > 1 && std::string_view(argv[1]) == kUnmountGuardFlag) return run_unmount_guard(argc, argv);
  raise_fd_limit();  // systemd's default soft limit (1024) is far below what open files need
  set_log_program("lazystore");
  fuse_set_log_func(forward_fuse_log);
  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  struct ArgsOwner {
    fuse_args& args;
    ~ArgsOwner() { fuse_opt_free_args(&args); }
  } owner{args};

  auto options = parse_mount_options(args);
  if (!options) {
    LOG_ERROR("%s", options.error().message.c_str());
    return 2;
  }
  switch (options->help) {
    case MountOptions::Help::None: break;
    case MountOptions::Help::Text:
      std::fputs(usage_text(argv[0]).c_str(), stdout);
      std::printf("\nFUSE options:\n");
      std::fflush(stdout);
      fuse_lowlevel_help();
      return 0;
    case MountOptions::Help::Markdown: std::fputs(options_markdown().c_str(), stdout); return 0;
    case MountOptions::Help::Man: std::fputs(options_man().c_str(), stdout); return 0;
  }
  if (options->show_version) {
    std::signal(SIGPIPE, SIG_IGN);  // a reader that stops after our line (grep -q) is no failure
    std::printf("lazystore %s\n", LAZYSTORE_VERSION);
    std::fflush(stdout);  // before fusermount3, a child writing to the same stdout, says its own
    fuse_lowlevel_version();
    return 0;
  }
  set_log_level(options->log_level);
  if (!options->log_file.empty()) {
    if (auto opened = set_log_file(options->log_file); !opened) {
      LOG_ERROR("%s", opened.error().message.c_str());
      return 1;
    }
  }
  if (auto usable = check_mountpoint(options->mountpoint); !usable) {
    LOG_ERROR("%s", usable.error().message.c_str());
    return 1;
  }
  if (auto probed = probe_source(*options); !probed) {
    LOG_ERROR("cannot mount %s: %s", options->source.c_str(), probed.error().message.c_str());
    return 1;
  }
  std::vector<std::string> fuse_argv = FuseArgs::save(args);
  if (options->supervise) return supervise(*options, fuse_argv);
  return serve(*options, fuse_argv, nullptr);
}
