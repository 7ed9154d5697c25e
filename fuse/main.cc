// lazystore SOURCE MOUNTPOINT [-o opts] [-f] [-d] [-s]: options → mount → serve; nothing else.
#include <cstdio>
#include <memory>

#include "cache_directory.h"
#include "chunk_cache.h"
#include "control.h"
#include "filesystem.h"
#include "log.h"
#include "metadata_cache.h"
#include "options.h"
#include "stats.h"
#include "upstream/metered_upstream.h"

namespace lazystore {
namespace {

constexpr unsigned kPrefetchThreads = 4;

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct LoopConfigDeleter {
  void operator()(fuse_loop_config* config) const { fuse_loop_cfg_destroy(config); }
};

int fail(const Error& error) {
  LOG_ERROR("%s", error.message.c_str());
  return 1;
}

int serve(const MountOptions& options, fuse_args& args) {
  Stats stats;
  UpstreamOptions upstream_options;
  upstream_options.timeout_seconds = options.upstream_timeout;
  upstream_options.nfs_version = options.nfs_version;
  upstream_options.trusted_public_keys = options.trusted_public_keys;
  upstream_options.require_sigs = options.require_sigs;
  upstream_options.spool_dir = options.cache_dir + "/http-spool";
  upstream_options.stats = &stats;
  auto made = make_upstream(options.source, upstream_options);
  if (!made) return fail(made.error());
  MeteredUpstream upstream(std::move(*made), stats);

  auto directory = CacheDirectory::open(options.cache_dir);
  if (!directory) return fail(directory.error());
  auto metadata = MetadataCache::open(upstream, directory->meta_dir(), options.negative_timeout, stats);
  if (!metadata) return fail(metadata.error());
  auto cache = ChunkCache::open({directory->data_dir(), options.cache_size, options.chunk_size}, stats);
  if (!cache) return fail(cache.error());

  auto control = ControlServer::open(options.control_socket,
                                    {stats, **cache, **metadata, upstream, options.mountpoint});
  std::unique_ptr<ControlServer> control_server;
  if (control) {
    control_server = std::move(*control);
  } else if (options.control_socket_given) {
    return fail(control.error());
  } else {
    // The default path (under the cache directory) may be too long for a unix socket: the
    // store is still served, only lazystore-ctl cannot reach it.
    LOG_WARNING("%s: lazystore-ctl is disabled (choose a socket with -o control=PATH)",
                control.error().message.c_str());
  }

  Filesystem filesystem(options, upstream, **metadata, **cache, stats);
  const fuse_lowlevel_ops& ops = Filesystem::operations();
  std::unique_ptr<fuse_session, SessionDeleter> session(fuse_session_new(&args, &ops, sizeof ops, &filesystem));
  if (!session) return fail(make_error(EINVAL, "cannot start the FUSE session (see the messages above)"));
  if (fuse_set_signal_handlers(session.get()) != 0) return fail(make_error(EIO, "cannot set signal handlers"));
  if (fuse_session_mount(session.get(), options.mountpoint.c_str()) != 0) {
    fuse_remove_signal_handlers(session.get());
    return fail(make_error(EIO, "cannot mount on " + options.mountpoint));
  }
  LOG_INFO("serving %s at %s (cache %s, %llu bytes)", upstream.describe().c_str(),
           options.mountpoint.c_str(), options.cache_dir.c_str(),
           static_cast<unsigned long long>(options.cache_size));
  fuse_daemonize(options.foreground ? 1 : 0);
  if (!options.foreground) set_log_to_syslog(true);  // stderr is /dev/null from here on
  // Threads start only now: daemonizing forks, and a fork keeps only the calling thread.
  (*cache)->start_workers(kPrefetchThreads);
  if (control_server) control_server->start();

  int status;
  if (options.single_thread) {
    status = fuse_session_loop(session.get());
  } else {
    std::unique_ptr<fuse_loop_config, LoopConfigDeleter> config(fuse_loop_cfg_create());
    fuse_loop_cfg_set_clone_fd(config.get(), options.clone_fd ? 1 : 0);
    fuse_loop_cfg_set_max_threads(config.get(), options.max_threads);
    fuse_loop_cfg_set_idle_threads(config.get(), 16);
    status = fuse_session_loop_mt(session.get(), config.get());
  }
  if (control_server) control_server->stop();
  (*cache)->stop_workers();
  fuse_session_unmount(session.get());
  fuse_remove_signal_handlers(session.get());
  LOG_INFO("unmounted %s", options.mountpoint.c_str());
  return status == 0 ? 0 : 1;
}

}  // namespace
}  // namespace lazystore

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
    std::printf("lazystore %s\n", LAZYSTORE_VERSION);
    fuse_lowlevel_version();
    return 0;
  }
  set_log_level(options->log_level);
  return serve(*options, args);
}
