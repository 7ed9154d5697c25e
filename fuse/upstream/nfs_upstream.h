// Upstream over an NFS export (the Nix server's /nix/store), through libnfs in user space.
//
// Debian's libnfs 4.0 has no thread-safe context, so concurrency comes from a pool of
// connections (one nfs_context each, used by one thread at a time). Every call has a deadline
// (libnfs' timeout); a connection that failed in any way but "no such file" is thrown away, so
// the next call reconnects by itself after a server restart.
//
// NFSv4 skips libnfs' high-level calls where they cost round trips or CPU: a store path's tree
// is listed by raw COMPOUNDs with many directories in flight (nfs4_tree_walk.h), and file data
// is read by one COMPOUND per READ with the anonymous stateid (nfs4_read.h). Neither asks for
// owner strings, which libnfs 4.0 resolves through NSS for every entry it decodes.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "nfs_handle_cache.h"
#include "nfs_source.h"
#include "upstream.h"

namespace lazystore {

class NfsConnection;

class NfsUpstream final : public Upstream {
 public:
  static Result<std::unique_ptr<NfsUpstream>> open(NfsSource source, const UpstreamOptions& options);
  ~NfsUpstream() override;

  std::string describe() const override { return source_.display; }
  Result<bool> exists(const StorePath& path) override;
  Result<std::vector<StorePath>> list_store() override;
  Result<Tree> list_tree(const StorePath& path) override;
  Status walk_tree(const StorePath& path, TreeBuilder& builder) override;
  uint64_t read_window_bytes() override;
  Result<size_t> read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                      std::span<std::byte> buf) override;
  Result<UpstreamStatfs> statfs() override;

 private:
  // A connection lent to one call; given back (or, when broken, dropped) at scope exit.
  class Lease {
   public:
    Lease(NfsUpstream& owner, std::unique_ptr<NfsConnection> connection, bool reused);
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    NfsConnection& operator*() const { return *connection_; }
    NfsConnection* operator->() const { return connection_.get(); }
    // Records the failure of a libnfs call (a negative errno) and returns its Error.
    Error failed(int rc, const std::string& what);
    // Records a failure already made into an Error (code an errno).
    Error failed(Error error);
    bool broken() const { return broken_; }
    bool reused() const { return reused_; }

   private:
    NfsUpstream* owner_;
    std::unique_ptr<NfsConnection> connection_;
    bool broken_ = false;
    bool reused_ = false;  // from the pool, not made for this call
  };

  NfsUpstream(NfsSource source, const UpstreamOptions& options);
  Result<Lease> lease();
  // Runs body on a leased connection; a pooled connection found dead (the server restarted)
  // is replaced and the body run once more.
  template <class T, class Body>
  Result<T> with_connection(Body&& body);
  void give_back(std::unique_ptr<NfsConnection> connection, bool broken);
  Result<bool> exists_on(Lease& nfs, const StorePath& path);
  Result<std::vector<StorePath>> list_store_on(Lease& nfs);
  Result<size_t> read_on(Lease& nfs, const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                         std::span<std::byte> buf);
  Result<UpstreamStatfs> statfs_on(Lease& nfs);
  // NFSv3: the handle of node key `key` (from a walk, else by LOOKUPs from the nearest known).
  Result<std::string> handle_of(Lease& nfs, const std::string& key);
  size_t window_pieces(size_t bytes, size_t readmax) const;
  void measure_read(uint64_t bytes, std::chrono::steady_clock::duration took);

  static constexpr uint64_t kMinWindow = 1 << 20;
  static constexpr uint64_t kMaxWindow = 64 << 20;

  const NfsSource source_;
  const UpstreamOptions options_;
  std::mutex mutex_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<NfsConnection>> idle_;
  size_t open_connections_ = 0;
  // After a failed connection attempt: no new attempt before this instant (see lease()).
  std::chrono::steady_clock::time_point reconnect_after_{};
  Error last_connect_error_;
  NfsHandleCache handles_;
  // Read-ahead window: measured round trip and bandwidth (guarded by mutex_), and their product.
  double rtt_seconds_ = 0;
  double bytes_per_second_ = 0;
  std::atomic<uint64_t> window_bytes_{kMinWindow};
};

}  // namespace lazystore
