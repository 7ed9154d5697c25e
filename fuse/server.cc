#include "server.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "cache_directory.h"
#include "chunk_cache.h"
#include "control.h"
#include "daemonize.h"
#include "filesystem.h"
#include "fuse_version.h"
#include "inode_journal.h"
#include "log.h"
#include "metadata_cache.h"
#include "process_title.h"
#include "session_loop.h"
#include "stats.h"
#include "unmount_guard.h"
#include "upstream/metered_upstream.h"

namespace lazystore {
namespace {

constexpr unsigned kPrefetchThreads = 4;

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

int fail(const Error& error) {
  LOG_ERROR("%s", error.message.c_str());
  return 1;
}

}  // namespace

int serve(const MountOptions& options, const std::vector<std::string>& fuse_argv, const Takeover* takeover) {
  Stats local_stats;  // a supervised server counts in the supervisor's memory: it survives us
  Stats& stats = takeover && takeover->stats ? *takeover->stats : local_stats;
  UpstreamOptions for_upstream = upstream_options(options);
  for_upstream.stats = &stats;
  auto made = make_upstream(options.source, for_upstream);
  if (!made) return fail(made.error());
  MeteredUpstream upstream(std::move(*made), stats);

  auto directory = CacheDirectory::open(options.cache_dir);
  if (!directory) return fail(directory.error());
  MetadataCache::Options metadata_options;
  metadata_options.negative_timeout_seconds = options.negative_timeout;
  metadata_options.wait_timeout_seconds = options.upstream_timeout;  // a wait for a directory of a walk
  auto metadata = MetadataCache::open(upstream, directory->meta_dir(), stats, metadata_options);
  if (!metadata) return fail(metadata.error());
  auto cache = ChunkCache::open({directory->data_dir(), options.cache_size, options.chunk_size}, stats);
  if (!cache) return fail(cache.error());

  // Declared before the control server and the filesystem, which share it, and after the
  // cache, whose pins it holds.
  FileReadPins read_pins(options.read_pins, (*cache)->limit() / kReadPinsShareOfCache);
  ReadLog read_log;
  ControlContext control_context{
      stats,
      **cache,
      **metadata,
      upstream,
      {.source = options.source, .mountpoint = options.mountpoint, .control_socket = options.control_socket},
      options.cache_dir,
      takeover ? takeover->generation : 1,
      &read_pins,
      &read_log};
  auto control = ControlServer::open(options.control_socket, std::move(control_context));
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

  std::optional<InodeJournal> journal;  // outlives the filesystem's inode table
  Filesystem filesystem(options, upstream, **metadata, **cache, stats, takeover ? takeover->generation : 1, &read_pins,
                        &read_log);
  if (takeover) {
    std::vector<InodeJournal::Record> records;
    auto opened = InodeJournal::open(takeover->journal, records);
    if (!opened) return fail(opened.error());
    journal.emplace(std::move(*opened));
    if (!records.empty()) {
      LOG_INFO("taking over %zu inodes the kernel holds from the server before (inode journal: %llu bytes)",
               records.size(), static_cast<unsigned long long>(journal->bytes()));
    }
    filesystem.inodes().attach_journal(*journal, std::move(records));
  }

  const fuse_lowlevel_ops& ops = Filesystem::operations();
  FuseArgs args(fuse_argv);
  std::unique_ptr<fuse_session, SessionDeleter> session(fuse_session_new(args.get(), &ops, sizeof ops, &filesystem));
  if (!session) return fail(make_error(EINVAL, "cannot start the FUSE session (see the messages above)"));
  filesystem.set_session(session.get());
  if (fuse_set_signal_handlers(session.get()) != 0) return fail(make_error(EIO, "cannot set signal handlers"));
  struct SignalHandlers {
    fuse_session* session;
    ~SignalHandlers() { fuse_remove_signal_handlers(session); }
  } handlers{session.get()};

  // Under a supervisor the mount exists already: libfuse takes its descriptor as /dev/fd/N.
  std::string mount_target = takeover ? "/dev/fd/" + std::to_string(takeover->fuse_fd) : options.mountpoint;
  if (fuse_session_mount(session.get(), mount_target.c_str()) != 0) {
    return fail(make_error(EIO, "cannot mount on " + options.mountpoint));
  }
  Fd report;  // unsupervised in the background: to the process that waits for the mount
  Fd guard;   // unsupervised: the mount goes when this process does (unmount_guard.h)
  if (!takeover) {
    auto started = start_unmount_guard(options.mountpoint, options.log_file);
    if (!started) {
      fuse_session_unmount(session.get());
      return fail(started.error());
    }
    guard = std::move(*started);
    LOG_INFO("serving %s at %s (cache %s, %llu bytes)", upstream.describe().c_str(), options.mountpoint.c_str(),
             options.cache_dir.c_str(), static_cast<unsigned long long>(options.cache_size));
    if (!options.foreground) {
      auto daemon = daemonize();
      if (!daemon) {
        fuse_session_unmount(session.get());
        return fail(daemon.error());
      }
      report = std::move(*daemon);
    }
  } else {
    if (auto started = start_session(session.get(), *takeover); !started) {
      return fail(started.error());
    }
    LOG_INFO("serving %s at %s (cache %s, %llu bytes; server %llu of this mount)", upstream.describe().c_str(),
             options.mountpoint.c_str(), options.cache_dir.c_str(), static_cast<unsigned long long>(options.cache_size),
             static_cast<unsigned long long>(takeover->generation));
  }
  // Threads start only now: daemonizing forks, and a fork keeps only the calling thread.
  if (auto started = upstream.start(); !started) {
    if (!takeover) fuse_session_unmount(session.get());
    return fail(started.error());
  }
  (*cache)->start_workers(kPrefetchThreads);
  set_process_title(
      {takeover ? "[server " + std::to_string(takeover->generation) + "]" : "[server]", options.mountpoint});
  if (control_server) control_server->start();
  if (takeover && takeover->ready_fd >= 0) {
    char ready = 1;
    (void)!write(takeover->ready_fd, &ready, 1);
    close(takeover->ready_fd);
  }
  report_status(report, 0);
  if (!options.foreground) detach_logging();

  int status = run_session_loop(session.get(), options, takeover, stats);
  if (control_server) control_server->stop();
  (*cache)->stop_workers();
  if (!takeover) {
    fuse_session_unmount(session.get());
    LOG_INFO("unmounted %s", options.mountpoint.c_str());
  }
  return status == 0 ? 0 : 1;
}

}  // namespace lazystore
