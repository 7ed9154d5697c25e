// The FUSE low-level operations of the read-only store. Data flows one way:
// kernel → these ops → MetadataCache / ChunkCache → Upstream. Every op makes exactly one reply
// on every path and no exception leaves it.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "chunk_cache.h"
#include "fuse_version.h"
#include "handle_table.h"
#include "inode_table.h"
#include "metadata_cache.h"
#include "options.h"
#include "read_log.h"
#include "read_pins.h"
#include "stats.h"
#include "upstream/upstream.h"

namespace lazystore {

class Filesystem {
 public:
  // `generation`: 1 for the first server of a mount, +1 for each one that took over after a crash.
  // `read_pins`: where the pins of files read without an open are kept (shared with the control
  // server, whose evict releases them); null: the filesystem's own. `read_log`: where the files
  // read are listed (the control server's `reads`); null: nowhere.
  Filesystem(const MountOptions& options, Upstream& upstream, MetadataCache& metadata, ChunkCache& cache, Stats& stats,
             uint64_t generation = 1, FileReadPins* read_pins = nullptr, ReadLog* read_log = nullptr);
  ~Filesystem();

  static const fuse_lowlevel_ops& operations();

  // The ops, called through operations() with `this` as the session's userdata.
  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void forget(fuse_ino_t ino, uint64_t count);
  void getattr(fuse_req_t req, fuse_ino_t ino);
  void readlink(fuse_req_t req, fuse_ino_t ino);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi, bool plus);
  void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi);
  void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void statfs(fuse_req_t req, fuse_ino_t ino);
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void access(fuse_req_t req, fuse_ino_t ino, int mask);
  void reply_error(fuse_req_t req, int code);

  // The inode table, for a supervised server to attach the mount's inode journal to.
  InodeTable& inodes() { return inodes_; }
  // The session, for notifications to the kernel (the top level's cached listing); set once
  // the session exists, before it serves requests.
  void set_session(fuse_session* session) { session_ = session; }

 private:
  using FileHandle = PinnedFile;
  struct DirHandle;
  struct stat attributes(uint64_t ino, const StoreTree& tree, uint32_t node) const;
  // An inode the kernel holds: from the table, or one an earlier server handed out (journal).
  std::optional<InodeRef> find_inode(uint64_t ino);
  // The handle behind a kernel `fh`, rebuilt from the inode if an earlier server opened it.
  std::shared_ptr<FileHandle> file_handle(fuse_ino_t ino, uint64_t fh);
  // A regular file's inode, pinned (null: no such inode, not a file, or the cache refused).
  std::shared_ptr<FileHandle> pin_inode(fuse_ino_t ino);
  // The pin of a file read without an open (fh 0), kept in read_pins_.
  std::shared_ptr<FileHandle> unopened_file(fuse_ino_t ino);
  std::shared_ptr<DirHandle> top_handle(uint64_t fh);
  Result<std::shared_ptr<FileHandle>> open_file(const InodeRef& ref);
  Result<std::shared_ptr<DirHandle>> open_top();
  // The top level read without an opendir (fh 0): a snapshot taken at offset 0, shared by the
  // readdir calls after it.
  std::shared_ptr<DirHandle> unopened_top(off_t offset);
  void reply_node_entry(fuse_req_t req, const StoreTreePtr& tree, uint32_t node);
  FetchFn fetcher(const StoreTreePtr& tree, uint32_t node);
  // Replies to getxattr/listxattr with `value` following the size-probe protocol.
  static void reply_xattr_value(fuse_req_t req, const std::string& value, size_t size);

  const MountOptions& options_;
  Upstream& upstream_;
  MetadataCache& metadata_;
  ChunkCache& cache_;
  Stats& stats_;
  InodeTable inodes_;
  HandleTable<FileHandle> files_;
  std::unique_ptr<FileReadPins> own_read_pins_;
  FileReadPins& read_pins_;
  ReadLog* read_log_;
  HandleTable<DirHandle> dirs_;
  std::atomic<fuse_session*> session_{nullptr};
  // The kernel opens directories without asking (FUSE_CAP_NO_OPENDIR_SUPPORT): opendir answers
  // ENOSYS, and the kernel keeps every directory's listing, the top level's too, so the top
  // level's mtime moves (root_version_) and its attributes are dropped when a new name appears.
  std::atomic<bool> no_opendir_{false};
  // The same for files (FUSE_CAP_NO_OPEN_SUPPORT, -o no-open): open answers ENOSYS once, the
  // kernel sends no OPEN and no RELEASE from then on, and reads come with fh 0 (unopened_file).
  std::atomic<bool> no_open_{false};
  std::atomic<uint64_t> root_version_{0};
  std::mutex unopened_top_mutex_;
  std::shared_ptr<DirHandle> unopened_top_;
};

}  // namespace lazystore
