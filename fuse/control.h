// The control server behind lazystore-ctl: a unix socket (mode 0600, root only) in the daemon.
//
// Protocol: the client sends one request line, the server answers one JSON line and closes.
//   request  = word *( TAB word ) LF, words escaped: "\\" → \, "\t" → TAB, "\n" → LF
//   response = {"ok":true,"output":"<what the ctl prints>"} or {"ok":false,"error":"<why>"}
// Commands: stats, prefetch [--wait] PATH…, evict, verify, cache-usage; flags --json and
// --prometheus (stats only) choose the output's format. Data flows one way: control → caches →
// upstream; the FUSE ops know nothing of it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "chunk_cache.h"
#include "fd.h"
#include "metadata_cache.h"
#include "result.h"
#include "stats.h"
#include "upstream/upstream.h"

namespace lazystore {

// ---- the wire format (shared by the daemon and lazystore-ctl) ----

std::string encode_request(const std::vector<std::string>& words);
Result<std::vector<std::string>> decode_request(std::string_view line);

std::string json_escape(std::string_view text);  // with the quotes
std::string ok_response(std::string_view output);
std::string error_response(std::string_view message);

struct ControlResponse {
  bool ok = false;
  std::string text;  // output when ok, else the error
};
Result<ControlResponse> parse_response(std::string_view line);

enum class OutputFormat { Text, Json, Prometheus };

// The stats in each format; cache_bytes/cache_limit come from the cache.
std::string format_stats(const Stats& stats, uint64_t cache_bytes, uint64_t cache_limit,
                         OutputFormat format);

// ---- the server ----

struct ControlContext {
  Stats& stats;
  ChunkCache& cache;
  MetadataCache& metadata;
  Upstream& upstream;      // what prefetch reads from (the metered upstream)
  std::string mountpoint;  // prefetch also accepts paths under it
};

class ControlServer {
 public:
  // Binds and listens now (no threads, so the daemon may still fork); a socket left by a dead
  // daemon is replaced, a live one is an error.
  static Result<std::unique_ptr<ControlServer>> open(const std::string& path, ControlContext context);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  void start();  // the accepting thread; call after daemonizing
  void stop();   // stops accepting, cancels prefetches, joins every thread, removes the socket

  // One request's answer (a response line without the LF); public for tests.
  std::string handle(const std::vector<std::string>& words);

 private:
  struct PrefetchItem {
    StoreTreePtr tree;
    uint32_t node;
    uint64_t size;
  };
  struct PrefetchJob {
    std::vector<PrefetchItem> items;
    std::atomic<size_t> next{0};
    std::atomic<uint64_t> files_done{0};
    std::atomic<uint64_t> bytes_done{0};
    std::atomic<uint64_t> failed{0};
    std::mutex mutex;
    std::condition_variable finished;
    unsigned running = 0;  // threads still working; guarded by mutex
    std::vector<std::thread> threads;
  };

  ControlServer(std::string path, Fd listener, ControlContext context)
      : path_(std::move(path)), listener_(std::move(listener)), context_(std::move(context)) {}
  void accept_loop();
  void serve_connection(Fd connection);
  void serve_request(int connection_fd);
  std::string prefetch(const std::vector<std::string>& paths, bool wait, OutputFormat format);
  Status collect(std::string_view path, std::vector<PrefetchItem>& items);
  void prefetch_worker(PrefetchJob& job);
  void reap_finished_jobs();

  const std::string path_;
  Fd listener_;
  Fd wake_;  // an eventfd that stop() signals
  ControlContext context_;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;

  struct Connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;  // set by the thread as it ends: joinable at once
  };
  void reap_finished_connections();

  std::mutex mutex_;  // guards connections_ and jobs_
  std::list<Connection> connections_;
  std::list<std::shared_ptr<PrefetchJob>> jobs_;  // joined when finished (reaped) or at stop
};

}  // namespace lazystore
