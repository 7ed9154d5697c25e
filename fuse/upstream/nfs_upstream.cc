#include "nfs_upstream.h"

// libnfs 4.0 needs <sys/time.h> before its header.
#include <sys/stat.h>
#include <sys/time.h>
#include <fcntl.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw-nfs.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <list>

#include "log.h"
#include "nfs3_read.h"
#include "nfs3_tree_walk.h"
#include "nfs4_lookup.h"
#include "nfs4_read.h"
#include "nfs4_tree_walk.h"
#include "stats.h"

namespace lazystore {
namespace {

constexpr size_t kMaxRead = 1 << 20;  // libnfs 4.0 fails NFSv4 READs over 1 MiB
// Reads measured for the window's round trip and bandwidth: at least this many bytes.
constexpr size_t kMinMeasured = 128 << 10;
// READs of one read() in flight at least (more when bandwidth x round trip needs more).
constexpr size_t kMinPieces = 4;
constexpr size_t kOpenFilesPerConnection = 64;
// After a connection attempt that got no answer within the deadline, further attempts wait this
// long (at most the deadline): while the server is silent, the many requests readers make fail at
// once instead of each waiting out a deadline. A refused or reset attempt costs nothing: no hold.
constexpr double kReconnectHoldSeconds = 1.0;

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

// libnfs reports its own RPC timeout as an error text only.
bool is_timeout_text(const std::string& text) { return text.find("timed out") != std::string::npos; }

// libnfs' last error text; it may be NULL.
std::string error_text(nfs_context* ctx) {
  const char* text = ctx ? nfs_get_error(ctx) : nullptr;
  return text && *text ? text : "unknown error";
}

bool is_answer(int code) {
  // The server answered: the connection is fine.
  return code == ENOENT || code == ENOTDIR || code == ELOOP || code == EACCES || code == EPERM || code == EISDIR ||
         code == EINVAL || code == ENAMETOOLONG;
}

}  // namespace

// One mounted nfs_context and the file handles it opened (LRU), used by one thread at a time.
// Calls go through libnfs' async API and our own poll loop, so each has a hard deadline: on
// timeout or a transport error the context is destroyed at once (its pending callbacks run
// while their state is still alive) and the connection is dead.
class NfsConnection {
 public:
  struct DirEntry {
    std::string name;
    uint64_t mode = 0;
    uint64_t size = 0;
  };

  static Result<std::unique_ptr<NfsConnection>> connect(const NfsSource& source, double timeout_seconds) {
    std::unique_ptr<NfsConnection> c(new NfsConnection(nfs_init_context(), timeout_seconds));
    if (!c->ctx_) return make_error(ENOMEM, "cannot create an NFS context");
    nfs_url* url = nfs_parse_url_dir(c->ctx_, source.url.c_str());
    if (!url) return make_error(EINVAL, source.display + ": " + error_text(c->ctx_));
    std::unique_ptr<nfs_url, decltype(&nfs_destroy_url)> owned(url, &nfs_destroy_url);
    // Our own poll loop enforces the deadline; libnfs' per-RPC timer is only a backstop.
    nfs_set_timeout(c->ctx_, static_cast<int>(timeout_seconds * 1000) + 1000);
    nfs_set_autoreconnect(c->ctx_, 0);  // we reconnect ourselves, within the deadline
    nfs_set_dircache(c->ctx_, 0);       // a path pushed a moment ago must show up
    // NFSv4: each connection is its own client; a shared client id would make the server
    // revoke the others' state (NFS4ERR_STALE_CLIENTID) on every new connection.
    static std::atomic<uint64_t> serial{0};
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    std::string client = std::string("lazystore-") + host + "-" + std::to_string(getpid()) + "-" +
                         std::to_string(serial++) + "-" + std::to_string(std::random_device{}());
    nfs4_set_client_name(c->ctx_, client.c_str());
    char verifier[8];
    for (char& b : verifier) b = static_cast<char>(std::random_device{}());
    nfs4_set_verifier(c->ctx_, verifier);
    std::string where = std::string(url->server) + ":" + url->path;
    c->anonymous_reads_ = source.version == 4;
    for (std::string_view rest = url->path; !rest.empty();) {
      size_t slash = rest.find('/');
      std::string_view component = rest.substr(0, slash);
      if (!component.empty()) c->export_path_.emplace_back(component);
      rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    }
    int rc = c->call([&](nfs_cb cb, void* p) { return nfs_mount_async(c->ctx_, url->server, url->path, cb, p); },
                     [](int, void*) {});
    if (rc != 0) {
      return make_error(rc == -ETIMEDOUT || is_timeout_text(c->error()) ? ETIMEDOUT : EIO,
                        "mounting " + where + " over NFSv" + std::to_string(source.version) + ": " + c->error());
    }
    c->version_ = source.version;
    if (source.version == 3) {
      c->root_handle_ = nfs3_root_handle(c->ctx_);
      if (c->root_handle_.empty()) return make_error(EIO, "mounting " + where + " over NFSv3: no root file handle");
    }
    uint64_t readmax = nfs_get_readmax(c->ctx_);
    c->readmax_ = static_cast<size_t>(std::clamp<uint64_t>(readmax ? readmax : kMaxRead, 4096, kMaxRead));
    return c;
  }

  ~NfsConnection() { kill(); }
  NfsConnection(const NfsConnection&) = delete;
  NfsConnection& operator=(const NfsConnection&) = delete;

  bool dead() const { return ctx_ == nullptr; }
  const std::string& error() const { return last_error_; }

  int list(const std::string& path, std::vector<DirEntry>* out) {
    nfsdir* dir = nullptr;
    int rc = call([&](nfs_cb cb, void* p) { return nfs_opendir_async(ctx_, path.c_str(), cb, p); },
                  [&dir](int, void* data) { dir = static_cast<nfsdir*>(data); });
    if (rc != 0) return rc;
    while (nfsdirent* entry = nfs_readdir(ctx_, dir)) {  // local: the whole listing is in memory
      std::string_view name(entry->name);
      if (name != "." && name != "..") out->push_back({std::string(name), entry->mode, entry->size});
    }
    nfs_closedir(ctx_, dir);
    return 0;
  }

  // The tree of /name into `builder` (nfs4_tree_walk.h, nfs3_tree_walk.h). Transport failures
  // and timeouts destroy the context, as for every other call.
  Status walk_tree(const std::string& name, TreeBuilder& builder, NfsHandleSink handles) {
    if (!ctx_) return make_error(EIO, "connection is closed");
    auto pump = [this](const std::function<bool()>& done, const size_t& progress) {
      return pump_until(done, progress);
    };
    if (version_ == 3) return nfs3_walk_tree(ctx_, root_handle_, name, builder, pump, std::move(handles));
    return nfs4_walk_tree(ctx_, export_path_, name, builder, pump);
  }

  int version() const { return version_; }
  const std::string& root_handle() const { return root_handle_; }
  size_t readmax() const { return readmax_; }

  // NFSv3: LOOKUPs of names in the directory with handle `dir`, all at once.
  int lookup3(const std::string& dir, const std::vector<std::string>& names, std::vector<Nfs3Lookup>* answers) {
    if (!ctx_) return fail_closed();
    int rc = nfs3_lookup_all(ctx_, dir, names, answers, pump_fn());
    return rc < 0 ? rc : first_failure(*answers);
  }

  // NFSv4: the same, by path from the export's root (the store's top level).
  int lookup4(const std::vector<std::string>& names, std::vector<Nfs4Lookup>* answers) {
    if (!ctx_) return fail_closed();
    int rc = nfs4_lookup_all(ctx_, export_path_, names, answers, pump_fn());
    return rc < 0 ? rc : first_failure(*answers);
  }

  // The rc of the first LOOKUP that failed otherwise than ENOENT (its error kept), else 0.
  template <class Lookup>
  int first_failure(const std::vector<Lookup>& answers) {
    for (const Lookup& answer : answers) {
      if (answer.rc < 0 && answer.rc != -ENOENT) {
        last_error_ = answer.error;
        return answer.rc;
      }
    }
    return 0;
  }

  // NFSv3: reads buf at offset from the file with handle fh, `window` READs in flight.
  int64_t read3(const std::string& fh, uint64_t offset, std::span<std::byte> buf, size_t window) {
    if (!ctx_) return fail_closed();
    std::string error;
    int64_t rc = nfs3_read(ctx_, fh, offset, buf, piece_for(buf.size()), window, &error, pump_fn());
    if (rc < 0 && !error.empty() && ctx_) last_error_ = error;
    return rc;
  }

  int statvfs(nfs_statvfs_64* out) {
    return call([&](nfs_cb cb, void* p) { return nfs_statvfs64_async(ctx_, "/", cb, p); },
                [out](int, void* data) { *out = *static_cast<nfs_statvfs_64*>(data); });
  }

  // Reads buf from `path` at offset (NFSv4), `window` READs in flight; bytes read (short only at
  // the end of the file) or -errno.
  int64_t read4(const std::string& path, uint64_t offset, std::span<std::byte> buf, size_t window) {
    if (anonymous_reads_) {
      int64_t rc = anonymous_read(path, offset, buf, window);
      if (rc != kNfs4AnonymousReadRefused) return rc;
      LOG_INFO("%s: the NFS server refuses READ without OPEN: reading through OPEN", path.c_str());
      anonymous_reads_ = false;
    }
    nfsfh* fh = nullptr;
    if (int rc = open_file(path, &fh); rc != 0) return rc;
    size_t done = 0;
    while (done < buf.size()) {  // libnfs' own reads: one at a time
      size_t want = std::min(kMaxRead, buf.size() - done);
      int rc = call([&](nfs_cb cb, void* p) { return nfs_pread_async(ctx_, fh, offset + done, want, cb, p); },
                    [&buf, done, want](int status, void* data) {
                      std::memcpy(buf.data() + done, data, std::min<size_t>(static_cast<size_t>(status), want));
                    });
      if (rc < 0) return rc;
      if (rc == 0) break;
      done += static_cast<size_t>(rc);
    }
    return static_cast<int64_t>(done);
  }

 private:
  struct Pending {
    std::function<void(int, void*)> on_success;
    std::string error;
    int status = 0;
    bool done = false;
  };

  NfsConnection(nfs_context* ctx, double timeout_seconds)
      : ctx_(ctx),
        timeout_(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(timeout_seconds))) {}

  static void callback(int status, nfs_context*, void* data, void* private_data) {
    if (!private_data) return;  // a fire-and-forget call (close)
    auto* pending = static_cast<Pending*>(private_data);
    pending->status = status;
    if (status < 0) {
      pending->error = data ? static_cast<const char*>(data) : "cancelled";
    } else {
      pending->on_success(status, data);
    }
    pending->done = true;
  }

  template <class Start>
  int call(Start&& start, std::function<void(int, void*)> on_success) {
    if (!ctx_) {
      last_error_ = "connection is closed";
      return -EIO;
    }
    Pending pending;
    pending.on_success = std::move(on_success);
    if (start(&NfsConnection::callback, &pending) != 0) {
      last_error_ = error_text(ctx_);
      kill();
      return -EIO;
    }
    static const size_t kNoProgress = 0;
    if (int rc = pump_until([&pending] { return pending.done; }, kNoProgress); rc < 0) {
      return rc == -EIO && pending.done && pending.status >= 0 ? pending.status : rc;
    }
    if (pending.status < 0) {
      last_error_ = pending.error;
      if (is_timeout_text(last_error_)) return -ETIMEDOUT;  // libnfs' own timer, the backstop
    }
    return pending.status;
  }

  // Services the context until done(); the deadline restarts whenever `progress` changes.
  // On timeout or a transport error the context is destroyed (cancelling what is in flight).
  int pump_until(const std::function<bool()>& done, const size_t& progress) {
    auto deadline = std::chrono::steady_clock::now() + timeout_;
    size_t seen = progress;
    while (!done()) {
      if (!ctx_) return -EIO;
      if (progress != seen) {
        seen = progress;
        deadline = std::chrono::steady_clock::now() + timeout_;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        last_error_ = "no answer within the deadline (upstream-timeout)";
        kill();
        return -ETIMEDOUT;
      }
      pollfd pfd{nfs_get_fd(ctx_), static_cast<short>(nfs_which_events(ctx_)), 0};
      int ready = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
      if (ready < 0 && errno == EINTR) continue;
      // libnfs words a refused connection "Socket failed with POLLHUP": the socket knows why.
      int socket_error = 0;
      socklen_t length = sizeof socket_error;
      if (ready > 0 && (pfd.revents & (POLLERR | POLLHUP))) {
        getsockopt(pfd.fd, SOL_SOCKET, SO_ERROR, &socket_error, &length);
      }
      if (ready < 0 || nfs_service(ctx_, ready > 0 ? pfd.revents : 0) < 0) {
        last_error_ =
            "connection lost: " + (socket_error ? std::string(std::strerror(socket_error)) : error_text(ctx_));
        kill();
        return -EIO;
      }
    }
    return 0;
  }

  // One READ is as large as the server allows: a read() of more is cut in READs in flight.
  size_t piece_for(size_t bytes) const { return std::min(bytes, readmax_); }
  NfsPump pump_fn() {
    return [this](const std::function<bool()>& done, const size_t& progress) { return pump_until(done, progress); };
  }
  int fail_closed() {
    last_error_ = "connection is closed";
    return -EIO;
  }

  // NFSv4: COMPOUNDs with the anonymous stateid (nfs4_read.h); handles by path, LRU.
  int64_t anonymous_read(const std::string& path, uint64_t offset, std::span<std::byte> buf, size_t window) {
    if (!ctx_) return fail_closed();
    auto it = std::find_if(file_handles_.begin(), file_handles_.end(), [&](const auto& e) { return e.first == path; });
    if (it != file_handles_.end()) {
      file_handles_.splice(file_handles_.begin(), file_handles_, it);
    } else {
      if (file_handles_.size() >= kOpenFilesPerConnection) file_handles_.pop_back();
      file_handles_.emplace_front(path, std::string());
    }
    std::vector<std::string> components = export_path_;
    for (std::string_view rest = path; !rest.empty();) {
      size_t slash = rest.find('/');
      if (slash != 0) components.emplace_back(rest.substr(0, slash));
      rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    }
    std::string error;
    int64_t rc = nfs4_read(ctx_, std::move(components), &file_handles_.front().second, offset, buf,
                           piece_for(buf.size()), window, &error, pump_fn());
    if (rc < 0) {
      if (!error.empty() && ctx_) last_error_ = error;  // else the pump's reason stands
      if (!file_handles_.empty() && file_handles_.front().first == path) file_handles_.pop_front();
    }
    return rc;
  }

  int open_file(const std::string& path, nfsfh** out) {
    for (auto it = handles_.begin(); it != handles_.end(); ++it) {
      if (it->first == path) {
        handles_.splice(handles_.begin(), handles_, it);
        *out = it->second;
        return 0;
      }
    }
    nfsfh* fh = nullptr;
    int rc = call([&](nfs_cb cb, void* p) { return nfs_open_async(ctx_, path.c_str(), O_RDONLY, cb, p); },
                  [&fh](int, void* data) { fh = static_cast<nfsfh*>(data); });
    if (rc != 0) return rc;
    if (handles_.size() >= kOpenFilesPerConnection) {
      // Closing needs no answer: it completes during later calls, or with the context.
      nfs_close_async(ctx_, handles_.back().second, &NfsConnection::callback, nullptr);
      handles_.pop_back();
    }
    handles_.emplace_front(path, fh);
    *out = fh;
    return 0;
  }

  void kill() {
    if (!ctx_) return;
    // nfs_destroy_context does not free open file handles (LeakSanitizer, tests/run.sh
    // --sanitize): close them first. NFSv3 frees at once; an NFSv4 CLOSE still queued is
    // cancelled by the destroy, which runs its callback and frees the handle.
    for (auto& handle : handles_) nfs_close_async(ctx_, handle.second, &NfsConnection::callback, nullptr);
    handles_.clear();
    file_handles_.clear();
    nfs_destroy_context(std::exchange(ctx_, nullptr));
  }

  nfs_context* ctx_;
  std::vector<std::string> export_path_;  // the URL's path, as components
  const std::chrono::steady_clock::duration timeout_;
  std::string last_error_;
  std::list<std::pair<std::string, nfsfh*>> handles_;            // most recently used first
  std::list<std::pair<std::string, std::string>> file_handles_;  // path, NFSv4 handle; MRU first
  bool anonymous_reads_ = false;                                 // NFSv4, until the server refuses one
  int version_ = 3;
  std::string root_handle_;    // NFSv3: the export's root
  size_t readmax_ = kMaxRead;  // the server's largest READ (at most kMaxRead)
};

NfsUpstream::Lease::Lease(NfsUpstream& owner, std::unique_ptr<NfsConnection> connection, bool reused)
    : owner_(&owner), connection_(std::move(connection)), reused_(reused) {}

NfsUpstream::Lease::Lease(Lease&& other) noexcept
    : owner_(other.owner_), connection_(std::move(other.connection_)), broken_(other.broken_), reused_(other.reused_) {}

NfsUpstream::Lease::~Lease() {
  if (connection_) owner_->give_back(std::move(connection_), broken_);
}

Error NfsUpstream::Lease::failed(int rc, const std::string& what) {
  int code = rc < 0 ? -rc : EIO;
  Stats* stats = owner_->options_.stats;
  std::string detail = connection_->error();
  bool timed_out = code == ETIMEDOUT;
  if (timed_out && stats) stats->upstream_timeouts++;
  if (!is_answer(code) || connection_->dead()) broken_ = true;
  if (code == ENOENT) return make_error(ENOENT, what + ": no such file");
  return make_error(timed_out ? ETIMEDOUT : (is_answer(code) ? code : EIO),
                    what + ": " + (detail.empty() ? std::strerror(code) : detail));
}

Error NfsUpstream::Lease::failed(Error error) {
  if (error.code == ETIMEDOUT && owner_->options_.stats) owner_->options_.stats->upstream_timeouts++;
  if (!is_answer(error.code) || connection_->dead()) broken_ = true;
  if (!is_answer(error.code) && error.code != ETIMEDOUT) error.code = EIO;
  return error;
}

Result<std::unique_ptr<NfsUpstream>> NfsUpstream::open(NfsSource source, const UpstreamOptions& options) {
  // No connection is made here: the daemon must start (and serve its cache) with the server down.
  return std::unique_ptr<NfsUpstream>(new NfsUpstream(std::move(source), options));
}

NfsUpstream::NfsUpstream(NfsSource source, const UpstreamOptions& options)
    : source_(std::move(source)), options_(options) {}

NfsUpstream::~NfsUpstream() = default;

Result<NfsUpstream::Lease> NfsUpstream::lease() {
  auto deadline = std::chrono::steady_clock::now() + seconds(options_.timeout_seconds);
  std::unique_lock lock(mutex_);
  for (;;) {
    if (!idle_.empty()) {
      auto connection = std::move(idle_.back());
      idle_.pop_back();
      return Lease(*this, std::move(connection), true);
    }
    if (open_connections_ < std::max(1u, options_.connections)) break;
    if (returned_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty()) {
      if (options_.stats) options_.stats->upstream_timeouts++;
      return make_error(ETIMEDOUT, source_.display + ": every NFS connection stayed busy past the deadline");
    }
  }
  if (auto now = std::chrono::steady_clock::now(); now < reconnect_after_) {
    // The last attempt failed a moment ago: the server is most likely still unreachable.
    if (options_.stats) options_.stats->upstream_connect_failures++;
    return make_error(last_connect_error_.code, last_connect_error_.message + " (a moment ago; not retried yet)");
  }
  open_connections_++;
  lock.unlock();
  auto connection = NfsConnection::connect(source_, options_.timeout_seconds);
  if (options_.stats) {
    (connection ? options_.stats->upstream_connects : options_.stats->upstream_connect_failures)++;
    if (!connection && connection.error().code == ETIMEDOUT) options_.stats->upstream_timeouts++;
  }
  lock.lock();
  if (!connection) {
    open_connections_--;
    if (connection.error().code == ETIMEDOUT) {
      reconnect_after_ =
          std::chrono::steady_clock::now() + seconds(std::min(kReconnectHoldSeconds, options_.timeout_seconds));
      last_connect_error_ = connection.error();
    }
    returned_.notify_one();
    return connection.error();
  }
  reconnect_after_ = {};
  return Lease(*this, std::move(*connection), false);
}

template <class T, class Body>
Result<T> NfsUpstream::with_connection(Body&& body) {
  for (int attempt = 0;; ++attempt) {
    auto nfs = lease();
    if (!nfs) return nfs.error();
    Result<T> result = body(*nfs);
    // A pooled connection that died (reset, closed: the server restarted) is retried once on a
    // new one; a call past its deadline is not, so that the caller's wait stays one deadline.
    if (result || !nfs->broken() || !nfs->reused() || attempt > 0 || result.error().code == ETIMEDOUT) {
      return result;
    }
  }
}

void NfsUpstream::give_back(std::unique_ptr<NfsConnection> connection, bool broken) {
  std::vector<std::unique_ptr<NfsConnection>> dropped;
  {
    std::lock_guard lock(mutex_);
    if (broken) {
      // The idle connections most likely died with this one (a server restart): drop them too,
      // so that later calls reconnect instead of each finding out.
      dropped = std::move(idle_);
      idle_.clear();
      open_connections_ -= 1 + dropped.size();
      dropped.push_back(std::move(connection));
    } else {
      idle_.push_back(std::move(connection));
    }
    returned_.notify_all();
  }
  if (options_.stats) options_.stats->upstream_disconnects += dropped.size();
}

Result<bool> NfsUpstream::exists(const StorePath& path) {
  return with_connection<bool>([&](Lease& nfs) {
    auto started = std::chrono::steady_clock::now();
    auto answer = exists_on(nfs, path);
    // Small requests of one round trip (two LOOKUPs at once): the window's round trip.
    if (answer) {
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::lock_guard lock(mutex_);
      rtt_seconds_ = rtt_seconds_ > 0 ? std::min(rtt_seconds_, seconds) : seconds;
    }
    return answer;
  });
}

Result<bool> NfsUpstream::exists_on(Lease& nfs, const StorePath& path) {
  if (StorePath::is_build_scratch(path.base_name())) return false;
  // Both LOOKUPs at once, raw: one round trip (libnfs' lstat costs two per name over NFSv3, and
  // over NFSv4 resolves owner names through the user database).
  std::string base = path.base_name();
  std::vector<std::string> names{base + ".lock", base};
  int lock_rc = 0, rc = 0;
  uint64_t size = 0;
  bool regular = false;
  if (nfs->version() == 3) {
    std::vector<Nfs3Lookup> answers;
    if (int failed = nfs->lookup3(nfs->root_handle(), names, &answers); failed != 0) {
      return nfs.failed(failed, source_.display + "/" + base);
    }
    lock_rc = answers[0].rc;
    rc = answers[1].rc;
    size = answers[1].size;
    regular = answers[1].type == NF3REG;
    if (rc == 0) handles_.put(base, answers[1].fh);
  } else {
    std::vector<Nfs4Lookup> answers;
    if (int failed = nfs->lookup4(names, &answers); failed != 0) {
      return nfs.failed(failed, source_.display + "/" + base);
    }
    lock_rc = answers[0].rc;
    rc = answers[1].rc;
    size = answers[1].size;
    regular = answers[1].type == NF4REG;
  }
  if (lock_rc == 0) return false;  // Nix is still writing the path
  if (rc == -ENOENT) return false;
  if (rc != 0) return nfs.failed(rc, source_.display + "/" + base);
  // A lock file of another path ("<path>.lock", empty) is not a store path.
  bool lock_file = base.ends_with(".lock") && regular && size <= 1 &&
                   StorePath::is_valid(std::string_view(base).substr(0, base.size() - 5));
  return !lock_file;
}

Result<std::vector<StorePath>> NfsUpstream::list_store() {
  return with_connection<std::vector<StorePath>>([&](Lease& nfs) { return list_store_on(nfs); });
}

Result<std::vector<StorePath>> NfsUpstream::list_store_on(Lease& nfs) {
  std::vector<NfsConnection::DirEntry> entries;
  if (int rc = nfs->list("/", &entries); rc != 0) return nfs.failed(rc, "listing " + source_.display);
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  auto has = [&entries](const std::string& name) {
    return std::binary_search(entries.begin(), entries.end(), NfsConnection::DirEntry{name, 0, 0},
                              [](const auto& a, const auto& b) { return a.name < b.name; });
  };
  std::vector<StorePath> paths;
  for (const auto& e : entries) {
    if (!StorePath::is_valid(e.name) || has(e.name + ".lock") || StorePath::is_build_scratch(e.name)) continue;
    bool lock_file = S_ISREG(e.mode) && e.size <= 1 && e.name.ends_with(".lock") &&
                     StorePath::is_valid(e.name.substr(0, e.name.size() - 5));
    if (!lock_file) paths.emplace_back(e.name);
  }
  return paths;
}

namespace {

// Builds a whole Tree from a walk (list_tree).
class WholeTree final : public TreeBuilder {
 public:
  Status set_root(Entry root) override {
    tree_ = Tree::with_root(root.type);
    fill(tree_.nodes[Tree::kRoot], std::move(root));
    return {};
  }
  Result<std::vector<uint32_t>> add_listing(uint32_t dir, std::vector<Entry> entries) override {
    std::vector<uint32_t> nodes;
    nodes.reserve(entries.size());
    for (Entry& e : entries) {
      auto child = tree_.append_child(dir, e.name, e.type);
      if (!child) return child.error();
      fill(tree_.nodes[*child], std::move(e));
      nodes.push_back(*child);
    }
    if (auto sorted = tree_.sort_children(dir); !sorted) return sorted.error();
    return nodes;
  }
  Tree take() { return std::move(tree_); }

 private:
  static void fill(TreeNode& node, Entry e) {
    node.size = node.type == NodeType::Symlink ? e.target.size() : node.type == NodeType::Regular ? e.size : 0;
    node.executable = node.type == NodeType::Regular && e.executable;
    if (node.type == NodeType::Symlink) node.target = std::move(e.target);
  }
  Tree tree_;
};

}  // namespace

Result<Tree> NfsUpstream::list_tree(const StorePath& path) {
  WholeTree whole;
  if (auto walked = walk_tree(path, whole); !walked) return walked.error();
  return whole.take();
}

Status NfsUpstream::walk_tree(const StorePath& path, TreeBuilder& builder) {
  // Not retried on a fresh connection once the builder has something: a listing goes in once.
  bool started = false;
  struct Watch final : TreeBuilder {
    Watch(TreeBuilder& inner, bool& started) : inner_(inner), started_(started) {}
    Status set_root(Entry root) override {
      started_ = true;
      return inner_.set_root(std::move(root));
    }
    Result<std::vector<uint32_t>> add_listing(uint32_t dir, std::vector<Entry> entries) override {
      return inner_.add_listing(dir, std::move(entries));
    }
    std::vector<uint32_t> take_wanted() override { return inner_.take_wanted(); }
    void progressed() override { inner_.progressed(); }
    TreeBuilder& inner_;
    bool& started_;
  } watch(builder, started);
  const std::string base = path.base_name();
  for (int attempt = 0;; ++attempt) {
    auto nfs = lease();
    if (!nfs) return nfs.error();
    NfsHandleSink handles;
    if (source_.version == 3) {
      handles = [this, &base](const std::string& relative, const std::string& fh) {
        handles_.put(relative.empty() ? base : base + "/" + relative, fh);
      };
    }
    auto walked = (*nfs)->walk_tree(base, watch, std::move(handles));
    if (walked) return walked;
    Error error = walked.error();
    error.message = source_.display + ": " + error.message;
    Error failed = nfs->failed(std::move(error));
    // A pooled connection found dead (the server restarted) is replaced once, as in with_connection.
    if (started || !nfs->broken() || !nfs->reused() || attempt > 0 || failed.code == ETIMEDOUT) return failed;
  }
}

Result<std::string> NfsUpstream::handle_of(Lease& nfs, const std::string& key) {
  if (auto fh = handles_.get(key)) return *fh;
  // The deepest ancestor whose handle is known (the export's root at worst), then LOOKUPs.
  std::vector<std::string> missing;
  std::string at = key;
  std::string fh;
  for (;;) {
    if (auto known = handles_.get(at)) {
      fh = *known;
      break;
    }
    size_t slash = at.rfind('/');
    missing.push_back(slash == std::string::npos ? at : at.substr(slash + 1));
    if (slash == std::string::npos) {
      fh = nfs->root_handle();
      at.clear();
      break;
    }
    at.resize(slash);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    std::vector<Nfs3Lookup> answers;
    std::string what = "lookup " + source_.display + "/" + (at.empty() ? "" : at + "/") + *it;
    if (int rc = nfs->lookup3(fh, {*it}, &answers); rc != 0) return nfs.failed(rc, what);
    if (answers[0].rc != 0) return nfs.failed(answers[0].rc, what);
    at = at.empty() ? *it : at + "/" + *it;
    handles_.put(at, answers[0].fh);
    fh = std::move(answers[0].fh);
  }
  return fh;
}

Result<size_t> NfsUpstream::read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                                 std::span<std::byte> buf) {
  return with_connection<size_t>([&](Lease& nfs) { return read_on(nfs, path, tree, node, offset, buf); });
}

Result<size_t> NfsUpstream::read_on(Lease& nfs, const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                                    std::span<std::byte> buf) {
  std::string key = path.base_name();
  if (node != Tree::kRoot) key += "/" + tree.path_of(node);
  size_t window = window_pieces(buf.size(), nfs->readmax());
  auto started = std::chrono::steady_clock::now();
  int64_t rc;
  if (nfs->version() == 3) {
    auto fh = handle_of(nfs, key);
    if (!fh) return fh.error();
    rc = nfs->read3(*fh, offset, buf, window);
    if (rc == -ESTALE && !nfs->dead()) {  // the server forgot the handle (restarted without keeping them)
      handles_.erase(key);
      fh = handle_of(nfs, key);
      if (!fh) return fh.error();
      rc = nfs->read3(*fh, offset, buf, window);
    }
  } else {
    rc = nfs->read4("/" + key, offset, buf, window);
  }
  if (rc < 0) return nfs.failed(static_cast<int>(rc), "read " + source_.display + "/" + key);
  measure_read(static_cast<uint64_t>(rc), std::chrono::steady_clock::now() - started);
  return static_cast<size_t>(rc);
}

size_t NfsUpstream::window_pieces(size_t bytes, size_t readmax) const {
  // As many READs as fill bandwidth x round trip (read_window_bytes), at least kMinPieces.
  uint64_t window = std::min<uint64_t>(window_bytes_.load(std::memory_order_relaxed), bytes);
  uint64_t piece = std::max<size_t>(1, std::min(bytes, readmax));
  return static_cast<size_t>(std::max<uint64_t>(kMinPieces, (window + piece - 1) / piece));
}

void NfsUpstream::measure_read(uint64_t bytes, std::chrono::steady_clock::duration took) {
  double seconds = std::chrono::duration<double>(took).count();
  if (bytes < kMinMeasured || seconds <= 0) return;
  std::lock_guard lock(mutex_);
  // A small read's time is mostly the round trip; a large one's mostly the transfer.
  if (bytes <= kMinMeasured * 2) rtt_seconds_ = rtt_seconds_ > 0 ? std::min(rtt_seconds_, seconds) : seconds;
  double rate = static_cast<double>(bytes) / seconds;
  bytes_per_second_ = bytes_per_second_ > 0 ? 0.8 * bytes_per_second_ + 0.2 * rate : rate;
  double rtt = rtt_seconds_ > 0 ? rtt_seconds_ : seconds;
  double bdp = 2 * bytes_per_second_ * rtt;  // twice bandwidth x delay: the link stays full
  window_bytes_.store(static_cast<uint64_t>(std::clamp(bdp, double{kMinWindow}, double{kMaxWindow})),
                      std::memory_order_relaxed);
}

uint64_t NfsUpstream::read_window_bytes() { return window_bytes_.load(std::memory_order_relaxed); }

Result<UpstreamStatfs> NfsUpstream::statfs() {
  return with_connection<UpstreamStatfs>([&](Lease& nfs) { return statfs_on(nfs); });
}

Result<UpstreamStatfs> NfsUpstream::statfs_on(Lease& nfs) {
  nfs_statvfs_64 st{};
  if (int rc = nfs->statvfs(&st); rc != 0) return nfs.failed(rc, "statfs " + source_.display);
  return UpstreamStatfs::of(st);
}

}  // namespace lazystore
