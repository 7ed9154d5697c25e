#include "filesystem.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <new>

#include "control_protocol.h"
#include "log.h"
#include "readahead_window.h"

namespace lazystore {
namespace {

// Inside a store path nothing ever changes: the kernel may cache entries and attributes forever.
constexpr double kForever = 365.0 * 24 * 3600;
constexpr double kRootAttrTimeout = 1.0;
constexpr size_t kLargestSplicedRead = 128 * 1024;
constexpr const char* kCachedXattr = "user.lazystore.cached";
constexpr const char* kStatsXattr = "user.lazystore.stats";

Filesystem& fs_of(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }

// Runs an op body; an exception that escapes it becomes an error reply, never a crash.
template <class Body>
void guarded(fuse_req_t req, Body&& body) {
  try {
    body();
  } catch (const std::bad_alloc&) {
    fs_of(req).reply_error(req, ENOMEM);
  } catch (...) {
    fs_of(req).reply_error(req, EIO);
  }
}

struct stat root_attributes() {
  struct stat st {};
  st.st_ino = InodeTable::kRootInode;
  st.st_mode = S_IFDIR | 0555;
  st.st_nlink = 2;
  st.st_mtim.tv_sec = st.st_ctim.tv_sec = st.st_atim.tv_sec = 1;
  return st;
}

void refuse(fuse_req_t req) { fuse_reply_err(req, EROFS); }

}  // namespace

struct Filesystem::DirHandle {
  std::vector<std::pair<std::string, uint64_t>> entries;  // the top level: name, inode number
};

Filesystem::Filesystem(const MountOptions& options, Upstream& upstream, MetadataCache& metadata, ChunkCache& cache,
                       Stats& stats, uint64_t generation, FileReadPins* read_pins, ReadLog* read_log)
    : options_(options),
      upstream_(upstream),
      metadata_(metadata),
      cache_(cache),
      stats_(stats),
      files_(generation),
      own_read_pins_(read_pins
                         ? nullptr
                         : std::make_unique<FileReadPins>(options.read_pins, cache.limit() / kReadPinsShareOfCache)),
      read_pins_(read_pins ? *read_pins : *own_read_pins_),
      read_log_(read_log),
      dirs_(generation) {}

Filesystem::~Filesystem() { read_pins_.clear(); }

void Filesystem::forget(fuse_ino_t ino, uint64_t count) {
  if (!inodes_.forget(ino, count)) return;
  stats_.forgotten_inodes++;
  read_pins_.erase(ino);
}

std::optional<InodeRef> Filesystem::find_inode(uint64_t ino) {
  if (auto ref = inodes_.find(ino)) return ref;
  auto key = inodes_.restored_key(ino);
  if (!key) return std::nullopt;
  auto parts = parse_node_key(*key);
  if (!parts) return std::nullopt;
  // Only what is on the way to it needs to be listed (the rest of the walk goes on).
  auto settled = metadata_.settle(parts->path, parts->relative);
  if (!settled) {
    if (settled.error().code != ENOENT) {
      LOG_WARNING("inode of %s from before the restart: %s", key->c_str(), settled.error().message.c_str());
    }
    return std::nullopt;
  }
  inodes_.adopt(ino, settled->tree, settled->node);
  return InodeRef{settled->tree, settled->node};
}

void Filesystem::reply_error(fuse_req_t req, int code) {
  if (code != ENOENT) stats_.errors++;
  fuse_reply_err(req, code);
}

void Filesystem::init(fuse_conn_info* conn) {
  // Directories open without a round trip (an OPENDIR and a RELEASEDIR per directory was most of
  // a hot `find`): opendir answers ENOSYS once and the kernel opens directories itself, keeping
  // their listings. The top level's cached listing is dropped when its mtime moves, which the
  // kernel checks only with auto_inval_data.
  if ((conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) && (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)) {
    conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    no_opendir_ = true;
  }
  // Files open without a round trip too (an OPEN and a RELEASE per file was most of what a hot
  // compile of cached headers sent): open answers ENOSYS once (Linux 4.19 on). The kernel then
  // opens every file itself as if open had answered FOPEN_KEEP_CACHE (fuse_file_open(): "Default
  // for no-open"), so the page cache is kept across opens as with keep_cache today, and it sends
  // no RELEASE (fuse_file_put() does nothing "when client does not implement 'open'"). What it
  // still sends is one FLUSH, at the first close: without FOPEN_NOFLUSH it asks, and our ENOSYS
  // (no flush op) makes it stop (fc->no_flush).
  if ((conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) && options_.no_open) {
    conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
    no_open_ = true;
  }
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_ATOMIC_O_TRUNC);
  // Every readdir a READDIRPLUS: entries and attributes never change, and with the "auto"
  // heuristic Linux 6.1 asks plus only for a directory's first page, then one LOOKUP per entry
  // (a walk of /usr/include: 8,397 LOOKUPs, twice the time in the lab's 6.1 guest).
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
}

struct stat Filesystem::attributes(uint64_t ino, const StoreTree& tree, uint32_t node) const {
  const TreeNode& n = tree.tree.nodes[node];
  struct stat st {};
  st.st_ino = ino;
  st.st_nlink = 1;
  st.st_blksize = 4096;
  st.st_mtim.tv_sec = st.st_ctim.tv_sec = st.st_atim.tv_sec = 1;  // as in a Nix store
  switch (n.type) {
    case NodeType::Regular:
      st.st_mode = S_IFREG | (n.executable ? 0555 : 0444);
      st.st_size = static_cast<off_t>(n.size);
      break;
    case NodeType::Directory: {
      st.st_mode = S_IFDIR | 0555;
      st.st_nlink = 2;
      for (uint32_t child : n.children) {
        if (tree.tree.nodes[child].type == NodeType::Directory) st.st_nlink++;
      }
      break;
    }
    case NodeType::Symlink:
      st.st_mode = S_IFLNK | 0777;
      st.st_size = static_cast<off_t>(n.target.size());
      break;
  }
  st.st_blocks = (st.st_size + 511) / 512;
  return st;
}

void Filesystem::reply_node_entry(fuse_req_t req, const StoreTreePtr& tree, uint32_t node) {
  fuse_entry_param e{};
  e.ino = inodes_.acquire(tree, node);
  e.attr = attributes(e.ino, *tree, node);
  e.attr_timeout = e.entry_timeout = kForever;
  if (fuse_reply_entry(req, &e) != 0) inodes_.forget(e.ino, 1);  // the kernel did not take it
}

void Filesystem::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  stats_.lookups++;
  if (parent == InodeTable::kRootInode) {
    auto path = StorePath::parse(name);
    if (!path) {
      // Not a store path name: never a question for the upstream, and never will be one.
      stats_.invalid_names++;
      fuse_entry_param e{};
      e.entry_timeout = kForever;
      fuse_reply_entry(req, &e);
      return;
    }
    // Answered once the store path itself is listed, while the rest of its walk goes on.
    auto root = metadata_.settle(*path, "");
    if (!root) {
      if (root.error().code != ENOENT) {
        LOG_WARNING("lookup %s: %s", name, root.error().message.c_str());
        return reply_error(req, EIO);
      }
      fuse_entry_param e{};
      e.entry_timeout = options_.negative_timeout;  // a path pushed a moment later must show up
      fuse_reply_entry(req, &e);
      return;
    }
    // A name the kernel did not know (positive entries are kept for ever): the top level's
    // listing it caches may lack it, so its attributes go and the next listing checks its mtime.
    // Before the reply: a listing right after the lookup must already see them gone.
    if (fuse_session* session = session_.load(); no_opendir_ && session != nullptr) {
      fuse_lowlevel_notify_inval_inode(session, InodeTable::kRootInode, -1, 0);
    }
    reply_node_entry(req, root->tree, root->node);
    return;
  }
  auto ref = find_inode(parent);
  if (!ref) return reply_error(req, ESTALE);
  if (ref->tree->tree.nodes[ref->node].type != NodeType::Directory) return reply_error(req, ENOTDIR);
  // An inode handed out is settled in its tree (a directory listed): its entries are all here.
  auto dir = metadata_.settle(ref->tree, ref->node);
  if (!dir) {
    LOG_WARNING("lookup %s in %s: %s", name, ref->tree->key_of(ref->node).c_str(), dir.error().message.c_str());
    return reply_error(req, EIO);
  }
  auto child = dir->tree->tree.child(dir->node, name);
  if (!child) {
    fuse_entry_param e{};
    e.entry_timeout = kForever;
    fuse_reply_entry(req, &e);
    return;
  }
  // A directory's attributes (its link count) need its own listing.
  auto settled = metadata_.settle(dir->tree, *child);
  if (!settled) {
    LOG_WARNING("lookup %s in %s: %s", name, ref->tree->key_of(ref->node).c_str(), settled.error().message.c_str());
    return reply_error(req, EIO);
  }
  reply_node_entry(req, settled->tree, settled->node);
}

void Filesystem::getattr(fuse_req_t req, fuse_ino_t ino) {
  if (ino == InodeTable::kRootInode) {
    struct stat st = root_attributes();
    // Each fresh look at the top level is a new mtime (nanoseconds only; the seconds stay 1):
    // the kernel's cached listing of it, kept without opendir, is then dropped and reread.
    if (no_opendir_) st.st_mtim.tv_nsec = static_cast<long>(++root_version_ % 1000000000);
    fuse_reply_attr(req, &st, kRootAttrTimeout);
    return;
  }
  auto ref = find_inode(ino);
  if (!ref) return reply_error(req, ESTALE);
  struct stat st = attributes(ino, *ref->tree, ref->node);
  fuse_reply_attr(req, &st, kForever);
}

void Filesystem::readlink(fuse_req_t req, fuse_ino_t ino) {
  auto ref = ino == InodeTable::kRootInode ? std::nullopt : find_inode(ino);
  if (!ref) return reply_error(req, ino == InodeTable::kRootInode ? EINVAL : ESTALE);
  const TreeNode& node = ref->tree->tree.nodes[ref->node];
  if (node.type != NodeType::Symlink) return reply_error(req, EINVAL);
  fuse_reply_readlink(req, node.target.c_str());
}

void Filesystem::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  stats_.opendir_requests++;
  if (no_opendir_) {
    fuse_reply_err(req, ENOSYS);  // from now on the kernel opens directories without asking
    return;
  }
  if (ino == InodeTable::kRootInode) {
    auto handle = open_top();
    if (!handle) return reply_error(req, EIO);
    fi->fh = dirs_.insert(std::move(*handle));
    fi->cache_readdir = 0;
    if (fuse_reply_open(req, fi) != 0) dirs_.erase(fi->fh);
    return;
  }
  auto ref = find_inode(ino);
  if (!ref) return reply_error(req, ESTALE);
  if (ref->tree->tree.nodes[ref->node].type != NodeType::Directory) return reply_error(req, ENOTDIR);
  if (auto listed = metadata_.settle(ref->tree, ref->node); !listed) {
    LOG_WARNING("opendir %s: %s", ref->tree->key_of(ref->node).c_str(), listed.error().message.c_str());
    return reply_error(req, EIO);
  }
  fi->fh = 0;
  fi->cache_readdir = 1;  // immutable: the kernel may keep the listing
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void Filesystem::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi, bool plus) {
  stats_.readdir_requests++;
  std::vector<char> buffer(size);
  size_t used = 0;
  // Adds one entry at offset `index`; false when the buffer is full.
  auto add = [&](const char* name, struct stat st, const fuse_entry_param* entry, off_t index) {
    size_t room = size - used;
    size_t needed = plus ? fuse_add_direntry_plus(req, buffer.data() + used, room, name, entry, index + 1)
                         : fuse_add_direntry(req, buffer.data() + used, room, name, &st, index + 1);
    if (needed > room) return false;
    used += needed;
    return true;
  };
  auto add_unreferenced = [&](const char* name, struct stat st, off_t index) {
    fuse_entry_param e{};
    e.attr = st;  // ino 0: the kernel takes the name and d_ino, no lookup reference
    return add(name, st, &e, index);
  };

  if (ino == InodeTable::kRootInode) {
    auto handle = fi->fh == 0 ? unopened_top(offset) : top_handle(fi->fh);
    if (!handle) return reply_error(req, EIO);
    struct stat dir = root_attributes();
    for (off_t i = offset; i < static_cast<off_t>(handle->entries.size()) + 2; ++i) {
      bool fits;
      if (i < 2) {
        fits = add_unreferenced(i == 0 ? "." : "..", dir, i);
      } else {
        const auto& [name, number] = handle->entries[static_cast<size_t>(i - 2)];
        struct stat st {};
        st.st_ino = number;
        st.st_mode = S_IFDIR;  // only the type bits count here; a lookup gives the real ones
        fits = add_unreferenced(name.c_str(), st, i);
      }
      if (!fits) break;
    }
    fuse_reply_buf(req, buffer.data(), used);
    return;
  }

  auto ref = find_inode(ino);
  if (!ref) return reply_error(req, ESTALE);
  if (ref->tree->tree.nodes[ref->node].type != NodeType::Directory) return reply_error(req, ENOTDIR);
  // This directory's listing; with readdirplus, its subdirectories' too (their attributes).
  auto listed = metadata_.settle(ref->tree, ref->node, plus);
  if (!listed) {
    LOG_WARNING("readdir %s: %s", ref->tree->key_of(ref->node).c_str(), listed.error().message.c_str());
    return reply_error(req, EIO);
  }
  const StoreTreePtr& tree = listed->tree;
  const TreeNode& dir = tree->tree.nodes[listed->node];
  std::vector<uint64_t> acquired;  // lookups this reply hands the kernel
  for (off_t i = offset; i < static_cast<off_t>(dir.children.size()) + 2; ++i) {
    bool fits;
    if (i < 2) {
      struct stat st {};
      st.st_mode = S_IFDIR;
      if (i == 0) {
        st.st_ino = ino;
      } else {
        st.st_ino = listed->node == Tree::kRoot ? InodeTable::kRootInode : inodes_.number_of(*tree, dir.parent);
      }
      fits = add_unreferenced(i == 0 ? "." : "..", st, i);
    } else {
      uint32_t child = dir.children[static_cast<size_t>(i - 2)];
      const char* name = tree->tree.nodes[child].name.c_str();
      if (plus) {
        fuse_entry_param e{};
        e.ino = inodes_.acquire(tree, child);
        e.attr = attributes(e.ino, *tree, child);
        e.attr_timeout = e.entry_timeout = kForever;
        fits = add(name, e.attr, &e, i);
        if (fits) {
          acquired.push_back(e.ino);
        } else {
          inodes_.forget(e.ino, 1);
        }
      } else {
        fits = add(name, attributes(inodes_.number_of(*tree, child), *tree, child), nullptr, i);
      }
    }
    if (!fits) break;
  }
  if (fuse_reply_buf(req, buffer.data(), used) != 0) {
    // The kernel did not take them (e.g. a replayed request it had answered before a crash).
    for (uint64_t number : acquired) inodes_.forget(number, 1);
  }
}

void Filesystem::releasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  if (fi->fh != 0) dirs_.erase(fi->fh);
  fuse_reply_err(req, 0);
}

Result<std::shared_ptr<Filesystem::DirHandle>> Filesystem::open_top() {
  // A snapshot of the top level, so offsets stay meaningful while the store changes.
  auto listed = metadata_.list_top();
  if (!listed) {
    LOG_WARNING("listing the store: %s", listed.error().message.c_str());
    return listed.error();
  }
  auto handle = std::make_shared<DirHandle>();
  handle->entries.reserve(listed->size());
  for (const StorePath& path : *listed) {
    handle->entries.emplace_back(path.base_name(), inodes_.number_of_key(path.base_name()));
  }
  return handle;
}

std::shared_ptr<Filesystem::DirHandle> Filesystem::unopened_top(off_t offset) {
  {
    std::lock_guard lock(unopened_top_mutex_);
    if (offset != 0 && unopened_top_) return unopened_top_;
  }
  auto handle = open_top();
  if (!handle) return nullptr;
  std::lock_guard lock(unopened_top_mutex_);
  unopened_top_ = std::move(*handle);
  return unopened_top_;
}

std::shared_ptr<Filesystem::DirHandle> Filesystem::top_handle(uint64_t fh) {
  if (auto handle = dirs_.find(fh)) return handle;
  if (fh == 0) return nullptr;
  // Opened before a restart: a fresh snapshot (offsets may shift if the store changed since).
  auto handle = open_top();
  if (!handle) return nullptr;
  return dirs_.adopt(fh, std::move(*handle));
}

Result<std::shared_ptr<Filesystem::FileHandle>> Filesystem::open_file(const InodeRef& ref) {
  const TreeNode& node = ref.tree->tree.nodes[ref.node];
  std::shared_ptr<CachedFile> file;
  if (node.size > 0) {
    auto pinned = cache_.pin(ref.tree->key_of(ref.node), node.size);
    if (!pinned) {
      LOG_ERROR("%s", pinned.error().message.c_str());
      return pinned.error();
    }
    file = std::move(*pinned);
  }
  return std::make_shared<FileHandle>(cache_, ref.tree, ref.node, std::move(file));
}

std::shared_ptr<Filesystem::FileHandle> Filesystem::pin_inode(fuse_ino_t ino) {
  auto ref = find_inode(ino);
  if (!ref || ref->tree->tree.nodes[ref->node].type != NodeType::Regular) return nullptr;
  auto handle = open_file(*ref);
  return handle ? std::move(*handle) : nullptr;
}

std::shared_ptr<Filesystem::FileHandle> Filesystem::file_handle(fuse_ino_t ino, uint64_t fh) {
  if (auto handle = files_.find(fh)) return handle;
  // Opened before a restart: the same file again, under the number the kernel holds.
  auto handle = pin_inode(ino);
  if (!handle) return nullptr;
  return files_.adopt(fh, std::move(handle));  // a handle that lost the race unpins as it goes
}

std::shared_ptr<Filesystem::FileHandle> Filesystem::unopened_file(fuse_ino_t ino) {
  if (auto pinned = read_pins_.find(ino)) return pinned;
  auto handle = pin_inode(ino);
  if (!handle) return nullptr;
  uint64_t size = handle->tree->tree.nodes[handle->node].size;
  return read_pins_.keep(ino, std::move(handle), size);
}

FetchFn Filesystem::fetcher(const StoreTreePtr& tree, uint32_t node) {
  return [this, tree, node](uint64_t offset, std::span<std::byte> buf) {
    return upstream_.read(tree->path, tree->tree, node, offset, buf);
  };
}

void Filesystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  stats_.open_requests++;
  // What the kernel checks itself once it opens files without asking is refused here first:
  // writing (the mount is read-only: the VFS answers EROFS), directories (opened as such) and
  // symlinks (never opened, followed).
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_APPEND | O_CREAT))) {
    return reply_error(req, EROFS);
  }
  if (ino == InodeTable::kRootInode) return reply_error(req, EISDIR);
  auto ref = find_inode(ino);
  if (!ref) return reply_error(req, ESTALE);
  const TreeNode& node = ref->tree->tree.nodes[ref->node];
  if (node.type == NodeType::Directory) return reply_error(req, EISDIR);
  if (node.type != NodeType::Regular) return reply_error(req, ELOOP);
  if (no_open_) {
    fuse_reply_err(req, ENOSYS);  // from now on the kernel opens files without asking
    return;
  }
  auto handle = open_file(*ref);
  if (!handle) return reply_error(req, EIO);
  fi->fh = files_.insert(*handle);
  fi->keep_cache = 1;  // the bytes of a store path never change
  fi->noflush = 1;
  if (fuse_reply_open(req, fi) != 0) files_.erase(fi->fh);  // the kernel did not take it
}

void Filesystem::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
  LatencyTimer timer(stats_.read_latency);
  // fh 0: no handle (HandleTable never hands out 0), the kernel opened the file itself; also
  // after a takeover of a session already in that mode, whose server never saw an OPEN.
  auto handle = fi->fh == 0 ? unopened_file(ino) : file_handle(ino, fi->fh);
  if (!handle) return reply_error(req, EIO);
  if (!handle->file || offset < 0) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  auto off = static_cast<uint64_t>(offset);
  // Once per handle, not per read: a stream's reads stay off the log's lock.
  if (read_log_ && !handle->logged.exchange(true, std::memory_order_relaxed)) {
    read_log_->note(ino, [&handle] { return handle->tree->key_of(handle->node); });
  }
  FetchFn fetch = fetcher(handle->tree, handle->node);
  ReadShape shape;
  {
    std::lock_guard lock(handle->readahead_mutex);
    shape.stream = handle->readahead.stream_read(off, size);
  }
  if (!shape.stream) {
    shape.alignment = [this, &tree = handle->tree] { return upstream_.read_alignment(tree->path); };
  }
  auto reply = cache_.read(*handle->file, off, size, fetch, shape);
  if (!reply) {
    LOG_WARNING("read %s at %llu: %s", handle->tree->key_of(handle->node).c_str(), static_cast<unsigned long long>(off),
                reply.error().message.c_str());
    return reply_error(req, EIO);
  }
  // Sequential reads pull the next chunks in the background, a window that grows with the stream.
  unsigned ahead = 0;
  {
    std::lock_guard lock(handle->readahead_mutex);
    ahead = handle->readahead.on_read(off, size, cache_.chunk_size(), options_.readahead_chunks * 4);
  }
  if (ahead > 0) cache_.prefetch(handle->file, off + size, ahead, std::move(fetch));
  size_t length = reply->fd >= 0 ? reply->length : reply->memory.size();
  stats_.served_bytes += length;
  if (reply->fd >= 0 && length > kLargestSplicedRead) {
    // libfuse 3.14 splices a reply through a per-thread pipe; past 128 KiB (a raised
    // read_ahead_kb) that path was 5x slower here than one copy, so large reads are copied.
    thread_local std::vector<char> scratch;
    scratch.resize(length);
    ssize_t n = pread(reply->fd, scratch.data(), length, static_cast<off_t>(reply->fd_offset));
    if (n != static_cast<ssize_t>(length)) return reply_error(req, EIO);
    fuse_reply_buf(req, scratch.data(), length);
  } else if (reply->fd >= 0) {
    fuse_bufvec buf{};
    buf.count = 1;
    buf.buf[0].size = length;
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = reply->fd;
    buf.buf[0].pos = static_cast<off_t>(reply->fd_offset);
    fuse_reply_data(req, &buf, static_cast<fuse_buf_copy_flags>(0));
  } else {
    fuse_reply_buf(req, reinterpret_cast<const char*>(reply->memory.data()), length);
  }
}

void Filesystem::release(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  files_.erase(fi->fh);  // unpins once no read holds the handle
  fuse_reply_err(req, 0);
}

void Filesystem::statfs(fuse_req_t req, fuse_ino_t /*ino*/) {
  struct statvfs st {};
  st.f_bsize = st.f_frsize = 4096;
  st.f_namemax = 255;
  // Offline, the store still answers: with zeros rather than an error that breaks df.
  if (auto up = upstream_.statfs()) {
    st.f_bsize = st.f_frsize = up->block_size;
    st.f_blocks = up->blocks;
    st.f_files = up->files;
  }
  fuse_reply_statfs(req, &st);
}

void Filesystem::reply_xattr_value(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (value.size() > size) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

void Filesystem::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  std::string_view wanted(name);
  if (ino == InodeTable::kRootInode) {
    if (wanted != kStatsXattr) {
      fuse_reply_err(req, ENODATA);
      return;
    }
    reply_xattr_value(
        req,
        stats_json(
            stats_, cache_.used_bytes(), cache_.limit(),
            {.source = options_.source, .mountpoint = options_.mountpoint, .control_socket = options_.control_socket}),
        size);
    return;
  }
  auto ref = find_inode(ino);
  if (!ref) return reply_error(req, ESTALE);
  const TreeNode& node = ref->tree->tree.nodes[ref->node];
  if (wanted != kCachedXattr || node.type != NodeType::Regular) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  uint64_t cached = 0;
  if (node.size > 0) {
    auto pinned = cache_.pin(ref->tree->key_of(ref->node), node.size);
    if (!pinned) return reply_error(req, EIO);
    cached = cache_.cached_bytes(**pinned);
    cache_.release(*pinned);
  }
  reply_xattr_value(req, std::to_string(cached), size);
}

void Filesystem::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  std::string names;
  if (ino == InodeTable::kRootInode) {
    names = std::string(kStatsXattr) + '\0';
  } else if (auto ref = find_inode(ino); ref && ref->tree->tree.nodes[ref->node].type == NodeType::Regular) {
    names = std::string(kCachedXattr) + '\0';
  }
  reply_xattr_value(req, names, size);
}

// Without default_permissions the kernel asks here for access(2) (`test -x`, shutil.which):
// the answer must follow the mode that getattr reports.
void Filesystem::access(fuse_req_t req, fuse_ino_t ino, int mask) {
  if (mask & W_OK) return (void)fuse_reply_err(req, EROFS);
  if (!(mask & X_OK) || ino == InodeTable::kRootInode) return (void)fuse_reply_err(req, 0);
  auto ref = find_inode(ino);
  if (!ref) return reply_error(req, ESTALE);
  struct stat st = attributes(ino, *ref->tree, ref->node);
  fuse_reply_err(req, (st.st_mode & 0111) ? 0 : EACCES);
}

const fuse_lowlevel_ops& Filesystem::operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = [](void* userdata, fuse_conn_info* conn) { static_cast<Filesystem*>(userdata)->init(conn); };
    o.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      guarded(req, [&] { fs_of(req).lookup(req, parent, name); });
    };
    o.forget = [](fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
      fs_of(req).forget(ino, nlookup);
      fuse_reply_none(req);
    };
    o.forget_multi = [](fuse_req_t req, size_t count, fuse_forget_data* forgets) {
      for (size_t i = 0; i < count; ++i) fs_of(req).forget(forgets[i].ino, forgets[i].nlookup);
      fuse_reply_none(req);
    };
    o.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
      guarded(req, [&] { fs_of(req).getattr(req, ino); });
    };
    o.readlink = [](fuse_req_t req, fuse_ino_t ino) { guarded(req, [&] { fs_of(req).readlink(req, ino); }); };
    o.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      guarded(req, [&] { fs_of(req).opendir(req, ino, fi); });
    };
    o.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
      guarded(req, [&] { fs_of(req).readdir(req, ino, size, off, fi, false); });
    };
    o.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
      guarded(req, [&] { fs_of(req).readdir(req, ino, size, off, fi, true); });
    };
    o.releasedir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      guarded(req, [&] { fs_of(req).releasedir(req, ino, fi); });
    };
    o.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      guarded(req, [&] { fs_of(req).open(req, ino, fi); });
    };
    o.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
      guarded(req, [&] { fs_of(req).read(req, ino, size, off, fi); });
    };
    o.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      guarded(req, [&] { fs_of(req).release(req, ino, fi); });
    };
    o.statfs = [](fuse_req_t req, fuse_ino_t ino) { guarded(req, [&] { fs_of(req).statfs(req, ino); }); };
    o.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
      guarded(req, [&] { fs_of(req).getxattr(req, ino, name, size); });
    };
    o.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) {
      guarded(req, [&] { fs_of(req).listxattr(req, ino, size); });
    };
    o.access = [](fuse_req_t req, fuse_ino_t ino, int mask) {
      guarded(req, [&] { fs_of(req).access(req, ino, mask); });
    };
    // The kernel forwards every ioctl on a file, ENOSYS or not (fs/fuse/ioctl.c keeps no "not
    // implemented" flag for it): Python's isatty() of each file it opens is one, also hot.
    // Counted, and answered as libfuse answers an op a filesystem leaves out.
    o.ioctl = [](fuse_req_t req, fuse_ino_t, unsigned int, void*, fuse_file_info*, unsigned, const void*, size_t,
                 size_t) {
      fs_of(req).stats_.ioctl_requests++;
      fuse_reply_err(req, ENOSYS);
    };
    // Every write-type operation: read-only store.
    o.setattr = [](fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) { refuse(req); };
    o.mknod = [](fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { refuse(req); };
    o.mkdir = [](fuse_req_t req, fuse_ino_t, const char*, mode_t) { refuse(req); };
    o.unlink = [](fuse_req_t req, fuse_ino_t, const char*) { refuse(req); };
    o.rmdir = [](fuse_req_t req, fuse_ino_t, const char*) { refuse(req); };
    o.symlink = [](fuse_req_t req, const char*, fuse_ino_t, const char*) { refuse(req); };
    o.rename = [](fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) { refuse(req); };
    o.link = [](fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { refuse(req); };
    o.write = [](fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) { refuse(req); };
    o.create = [](fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { refuse(req); };
    o.setxattr = [](fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { refuse(req); };
    o.removexattr = [](fuse_req_t req, fuse_ino_t, const char*) { refuse(req); };
    o.fallocate = [](fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) { refuse(req); };
    return o;
  }();
  return ops;
}

}  // namespace lazystore
