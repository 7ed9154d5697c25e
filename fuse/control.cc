#include "control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "io.h"
#include "log.h"
#include "unix_socket.h"

namespace lazystore {
namespace {

constexpr size_t kMaxConnections = 32;
constexpr timeval kClientTimeout{10, 0};  // a stuck client must not hold a thread for ever
// accept4 failing for want of descriptors or memory: wait before the next try, doubling.
constexpr std::chrono::milliseconds kFirstBackoff{50};
constexpr std::chrono::milliseconds kLongestBackoff{1000};
constexpr auto kWarnEvery = std::chrono::seconds(30);
constexpr size_t kMaxDrainBytes = 16 << 20;  // of a request past its end, read to close cleanly

bool out_of_resources(int error) { return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM; }

Fd open_reserve() { return Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

}  // namespace

ControlServer::ControlServer(std::string path, Fd listener, ControlContext context)
    : path_(std::move(path)),
      listener_(std::move(listener)),
      context_(std::move(context)),
      prefetcher_(context_.cache, context_.metadata, context_.upstream, context_.mount.mountpoint),
      started_(unix_now()) {}

Result<std::unique_ptr<ControlServer>> ControlServer::open(const std::string& path, ControlContext context) {
  if (auto address = unix_socket_address(path); !address) {
    return make_error(address.error().code, "control socket: " + address.error().message);
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(EEXIST, "control socket " + path + " exists and is not a socket");
    if (connect_unix_socket(path)) {
      return make_error(EADDRINUSE, "control socket " + path + " is in use by a running lazystore");
    }
    ::unlink(path.c_str());  // left by a daemon that is gone
  }
  // Created 0600 from the start: no window in which another user could connect.
  mode_t old_mask = ::umask(0177);
  auto listening = listen_unix_socket(path, 16, SOCK_NONBLOCK);
  ::umask(old_mask);
  if (!listening) {
    if (listening.error().code != EADDRINUSE) ::unlink(path.c_str());
    return make_error(listening.error().code, "control socket " + path + ": " + listening.error().message);
  }
  if (context.generation > 1) context.stats.server_restarts++;
  std::unique_ptr<ControlServer> server(new ControlServer(path, std::move(*listening), std::move(context)));
  server->wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  server->reserve_ = open_reserve();
  if (!server->wake_ || !server->reserve_) {
    auto error = errno_error("control socket: eventfd or /dev/null");
    ::unlink(path.c_str());
    return error;
  }
  return server;
}

ControlServer::~ControlServer() { stop(); }

void ControlServer::observe_log(void* self, LogLevel level, std::string_view message) {
  if (level > LogLevel::Warning) return;
  static_cast<ControlServer*>(self)->context_.stats.last_error.record(log_level_name(level), message);
}

void ControlServer::start() {
  set_log_observer(&ControlServer::observe_log, this);
  acceptor_ = std::thread([this] { accept_loop(); });
}

void ControlServer::stop() {
  if (stopping_.exchange(true)) return;
  set_log_observer(nullptr, nullptr);
  uint64_t one = 1;
  if (wake_) (void)!::write(wake_.get(), &one, sizeof one);
  if (acceptor_.joinable()) acceptor_.join();
  prefetcher_.stop();  // wakes the connections that wait for a prefetch
  std::list<Connection> connections;
  {
    std::lock_guard lock(mutex_);
    connections.swap(connections_);
  }
  for (auto& c : connections) c.thread.join();
  ::unlink(path_.c_str());
}

void ControlServer::accept_failed(int error) {
  // The listener stays readable while a client waits, so returning to poll() at once would
  // spin. With the spare descriptor given up, that client at least hears why.
  if (out_of_resources(error) && reserve_) {
    reserve_.reset();
    Fd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (client) (void)send_all(client.get(), error_line("the daemon is out of file descriptors; try again later"));
    client.reset();
    reserve_ = open_reserve();  // may fail while descriptors are short: retried next time
  }
  backoff_ = std::clamp(backoff_ * 2, kFirstBackoff, kLongestBackoff);
  auto now = std::chrono::steady_clock::now();
  if (now - warned_at_ >= kWarnEvery) {
    warned_at_ = now;
    LOG_WARNING("control socket: accept: %s; retrying every %lld ms at most", std::strerror(error),
                static_cast<long long>(kLongestBackoff.count()));
  }
  pollfd wake{wake_.get(), POLLIN, 0};
  (void)::poll(&wake, 1, static_cast<int>(backoff_.count()));
}

void ControlServer::accept_loop() {
  while (!stopping_) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("control socket: poll: %s", std::strerror(errno));
      return;
    }
    if (fds[1].revents || stopping_) return;
    if (!reserve_) reserve_ = open_reserve();
    Fd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection) {
      int error = errno;
      if (error != EINTR && error != EAGAIN && error != ECONNABORTED) accept_failed(error);
      continue;
    }
    backoff_ = std::chrono::milliseconds(0);
    reap_finished_connections();
    std::lock_guard lock(mutex_);
    if (connections_.size() >= kMaxConnections) {
      (void)send_all(connection.get(), error_line("too many control connections"));
      continue;
    }
    try {
      auto done = std::make_shared<std::atomic<bool>>(false);
      connections_.emplace_back();  // nothing started yet if this throws
      connections_.back().done = done;
      try {
        int fd = connection.get();
        connections_.back().thread = std::thread([this, fd, done] {
          serve_connection(Fd(fd));
          *done = true;
        });
        (void)connection.release();  // the thread owns it now
      } catch (...) {
        connections_.pop_back();
        throw;
      }
    } catch (const std::exception& e) {
      LOG_WARNING("control socket: cannot serve a connection: %s", e.what());
    }
  }
}

void ControlServer::reap_finished_connections() {
  std::list<Connection> finished;
  {
    std::lock_guard lock(mutex_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (*it->done)
        finished.splice(finished.end(), connections_, it++);
      else
        ++it;
    }
  }
  for (auto& c : finished) c.thread.join();
}

void ControlServer::serve_connection(Fd connection) {
  try {
    int fd = connection.get();
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &kClientTimeout, sizeof kClientTimeout);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &kClientTimeout, sizeof kClientTimeout);
    std::string line;
    char buf[4096];
    while (line.find('\n') == std::string::npos && line.size() <= kMaxRequestBytes) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    auto send = [fd](std::string_view answer) { return static_cast<bool>(send_all(fd, answer)); };
    size_t end = line.find('\n');
    if (end != std::string::npos && end <= kMaxRequestBytes) {
      handle_line(std::string_view(line).substr(0, end), send);
    } else if (line.size() > kMaxRequestBytes) {
      send(error_line("invalid request: longer than " + std::to_string(kMaxRequestBytes) + " bytes"));
    } else {
      send(error_line("invalid request: incomplete (one JSON line ending in LF expected)"));
    }
    // Closing with unread input would reset the connection, and the client could lose the
    // answer before reading it: say we are done, then read what is left (bounded).
    ::shutdown(fd, SHUT_WR);
    constexpr timeval kDrain{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &kDrain, sizeof kDrain);
    for (size_t drained = 0; drained < kMaxDrainBytes;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      drained += static_cast<size_t>(n);
    }
  } catch (const std::exception& e) {
    LOG_WARNING("control socket: %s", e.what());
  }
}

void ControlServer::handle_line(std::string_view line, const std::function<bool(std::string_view)>& send) {
  // The guard every request passes: nothing may throw out of the control thread.
  try {
    auto request = decode_request(line);
    if (!request) {
      send(error_line(request.error().message));
      return;
    }
    handle(*request, send);
  } catch (const std::exception& e) {
    send(error_line(std::string("internal error: ") + e.what()));
  }
}

StatusReport ControlServer::status() const {
  StatusReport report;
  report.mount = context_.mount;
  report.cache_dir = context_.cache_dir;
  report.now = unix_now();
  report.started = context_.stats.started;
  report.server = {static_cast<int64_t>(::getpid()), context_.generation, started_};
  report.upstream = context_.stats.upstream_health.snapshot();
  report.last_error = context_.stats.last_error.snapshot();
  report.stats = context_.stats.snapshot(context_.cache.used_bytes(), context_.cache.limit());
  report.stats.mount = context_.mount;
  return report;
}

void ControlServer::handle(const Request& request, const std::function<bool(std::string_view)>& send) {
  switch (request.command) {
    case Command::Stats: {
      StatsSnapshot snapshot = context_.stats.snapshot(context_.cache.used_bytes(), context_.cache.limit());
      snapshot.mount = context_.mount;
      send(ok_line(snapshot));
      return;
    }
    case Command::Status: send(ok_line(status())); return;
    case Command::CacheUsage: send(ok_line(CacheUsage{context_.cache.used_bytes(), context_.cache.limit()})); return;
    case Command::Evict: {
      // Files read without an open are pinned because they were read lately, not because they
      // are in use: evict drops them too (a later read pins and fetches again).
      if (context_.read_pins) context_.read_pins->clear();
      auto report = context_.cache.evict_all();
      LOG_INFO("control: evicted %" PRIu64 " files, %" PRIu64 " bytes", report.files, report.bytes);
      send(ok_line(EvictResult{report.files, report.bytes, report.pinned_files}));
      return;
    }
    case Command::Verify: {
      auto started = std::chrono::steady_clock::now();
      auto report = context_.cache.verify_all();
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      LOG_INFO("control: verified %" PRIu64 " blocks, %" PRIu64 " bad", report.blocks, report.bad_blocks);
      send(ok_line(
          VerifyResult{report.files, report.blocks, report.bytes, report.bad_blocks, report.dropped_files, seconds}));
      return;
    }
    case Command::Reads: {
      ReadList list;
      if (context_.read_log) {
        auto snapshot = context_.read_log->snapshot();
        list.paths.reserve(snapshot.keys.size());
        for (auto& key : snapshot.keys) list.paths.push_back("/nix/store/" + key);
        list.dropped = snapshot.dropped;
      }
      send(ok_line(list));
      return;
    }
    case Command::Prefetch: {
      if (stopping_) {
        send(error_line("the daemon is stopping"));
        return;
      }
      auto job = prefetcher_.start(request.paths);
      if (!job) {
        send(error_line(job.error().message));
        return;
      }
      if (!request.wait) {
        send(ok_line(Prefetcher::queued(**job)));
        return;
      }
      std::function<bool(const PrefetchProgress&)> report;
      if (request.progress) report = [&send](const PrefetchProgress& p) { return send(progress_line(p)); };
      send(ok_line(prefetcher_.wait(**job, kProgressInterval, report)));
      return;
    }
  }
  send(error_line("unknown command"));
}

}  // namespace lazystore
