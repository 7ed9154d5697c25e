// lazystore SOURCE MOUNTPOINT [-o opts] [-f] [-d] [-s]: options → supervisor (or not) → serve.
#include <csignal>
#include <cstdio>

#include "log.h"
#include "options.h"
#include "server.h"
#include "supervisor.h"

int main(int argc, char* argv[]) {
  using namespace lazystore;
  set_log_program("lazystore");
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
  if (options->show_help) {
    print_usage(argv[0]);
    std::printf("\nFUSE options:\n");
    std::fflush(stdout);
    fuse_lowlevel_help();
    return 0;
  }
  if (options->show_version) {
    std::signal(SIGPIPE, SIG_IGN);  // a reader that stops after our line (grep -q) is no failure
    std::printf("lazystore %s\n", LAZYSTORE_VERSION);
    std::fflush(stdout);  // before fusermount3, a child writing to the same stdout, says its own
    fuse_lowlevel_version();
    return 0;
  }
  set_log_level(options->log_level);
  std::vector<std::string> fuse_argv = FuseArgs::save(args);
  if (options->supervise) return supervise(*options, fuse_argv);
  return serve(*options, fuse_argv, nullptr);
}
