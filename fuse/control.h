// The control server behind lazystore-ctl: a unix socket (mode 0600, root only) in the server
// process, speaking control_protocol.h (one JSON request line, JSON answer lines). It answers
// data — the stats table, the mount's status, cache maintenance and prefetch results — and
// never formats for people; lazystore-ctl does. Data flows one way: control → caches →
// upstream; the FUSE ops know nothing of it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "chunk_cache.h"
#include "read_log.h"
#include "read_pins.h"
#include "control_protocol.h"
#include "fd.h"
#include "log.h"
#include "metadata_cache.h"
#include "prefetch.h"
#include "result.h"
#include "stats.h"
#include "upstream/upstream.h"

namespace lazystore {

struct ControlContext {
  Stats& stats;
  ChunkCache& cache;
  MetadataCache& metadata;
  Upstream& upstream;   // what prefetch reads from (the metered upstream)
  MountIdentity mount;  // prefetch also accepts paths under mount.mountpoint
  std::string cache_dir;
  uint64_t generation = 1;  // of this server (Takeover::generation; 1 unsupervised)
  // The pins of files read without an open: evict releases them first (null: none).
  FileReadPins* read_pins = nullptr;
  // The files this mount read (`reads`; null: none kept).
  const ReadLog* read_log = nullptr;
};

class ControlServer {
 public:
  // Binds and listens now (no threads, so the daemon may still fork); a socket left by a dead
  // daemon is replaced, a live one is an error.
  static Result<std::unique_ptr<ControlServer>> open(const std::string& path, ControlContext context);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // The accepting thread (call after daemonizing); from now on the last warning or error this
  // process logs is kept in the stats for `status`.
  void start();
  void stop();  // stops accepting, cancels prefetches, joins every thread, removes the socket

  // Answers one request line: each answer line (progress, then the result) goes to `send`,
  // which returns false once the client is gone. Public for tests.
  void handle_line(std::string_view line, const std::function<bool(std::string_view)>& send);

  // How long prefetch --wait waits between progress lines.
  static constexpr std::chrono::milliseconds kProgressInterval{250};

 private:
  ControlServer(std::string path, Fd listener, ControlContext context);
  void accept_loop();
  // accept4 failed with `error`: waits (backing off) so that a lasting EMFILE does not spin.
  void accept_failed(int error);
  void serve_connection(Fd connection);
  void handle(const Request& request, const std::function<bool(std::string_view)>& send);
  StatusReport status() const;
  void reap_finished_connections();
  static void observe_log(void* self, LogLevel level, std::string_view message);

  const std::string path_;
  Fd listener_;
  Fd wake_;     // an eventfd that stop() signals
  Fd reserve_;  // a spare descriptor, given up to answer one client when out of descriptors
  ControlContext context_;
  Prefetcher prefetcher_;
  const int64_t started_;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point warned_at_{};

  struct Connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;  // set by the thread as it ends: joinable at once
  };
  std::mutex mutex_;  // guards connections_
  std::list<Connection> connections_;
};

}  // namespace lazystore
