#include "nfs4_tree_walk.h"

#include "nfs4_compound.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <string_view>

namespace lazystore {
namespace {

constexpr size_t kMaxInFlight = 48;       // COMPOUNDs outstanding on the connection
constexpr uint32_t kReaddirBytes = 65536;  // maxcount of one READDIR reply (libnfs takes ≤ 1 MiB)
constexpr size_t kNone = static_cast<size_t>(-1);

// What READDIR and GETATTR ask for: no file handles (a subdirectory or symlink is reached by
// LOOKUP in the COMPOUND that lists or reads it, so regular files cost no handle on the wire).
constexpr uint32_t kAttrs[2] = {(1u << FATTR4_TYPE) | (1u << FATTR4_SIZE), 1u << (FATTR4_MODE - 32)};

struct Attrs {
  uint32_t type = 0;
  uint64_t size = 0;
  uint32_t mode = 0;
};

// Decodes an fattr4 that holds at most type, size and mode (ascending attribute number, the
// order of the encoding).
bool parse_attrs(const fattr4& attrs, Attrs* out) {
  std::string_view data(attrs.attr_vals.attrlist4_val, attrs.attr_vals.attrlist4_len);
  auto u32 = [&data](uint32_t* v) {
    if (data.size() < 4) return false;
    uint32_t be;
    std::memcpy(&be, data.data(), 4);
    *v = ntohl(be);
    data.remove_prefix(4);
    return true;
  };
  for (u_int word = 0; word < attrs.attrmask.bitmap4_len; ++word) {
    for (uint32_t bit = 0; bit < 32; ++bit) {
      if (!(attrs.attrmask.bitmap4_val[word] & (1u << bit))) continue;
      uint32_t attr = word * 32 + bit;
      uint32_t hi = 0, lo = 0;
      switch (attr) {
        case FATTR4_TYPE:
          if (!u32(&out->type)) return false;
          break;
        case FATTR4_SIZE:
          if (!u32(&hi) || !u32(&lo)) return false;
          out->size = (uint64_t{hi} << 32) | lo;
          break;
        case FATTR4_MODE:
          if (!u32(&out->mode)) return false;
          break;
        default:
          return false;  // not asked for: its length is unknown here
      }
    }
  }
  return true;
}

std::optional<NodeType> node_type(uint32_t nfs_type) {
  switch (nfs_type) {
    case NF4REG: return NodeType::Regular;
    case NF4DIR: return NodeType::Directory;
    case NF4LNK: return NodeType::Symlink;
    default: return std::nullopt;
  }
}

class Walk {
 public:
  Walk(nfs_context* ctx, std::string root_path, const Nfs4Pump& pump)
      : rpc_(nfs_get_rpc_context(ctx)), root_path_(std::move(root_path)), pump_(pump) {}

  Result<Tree> run(const std::vector<std::string>& export_path, const std::string& name);

 private:
  struct Entry {
    std::string name;
    NodeType type = NodeType::Regular;
    uint64_t size = 0;
    bool executable = false;
    std::string target;  // Symlink
    size_t dir = kNone;  // Directory: index into dirs_
  };
  struct Dir {
    std::string fh;    // empty until the first READDIR reply: LOOKUP name from the parent
    size_t parent = kNone;
    std::string name;
    std::string path;  // relative to the store path, for messages
    size_t depth = 0;
    uint64_t cookie = 0;
    char verifier[NFS4_VERIFIER_SIZE] = {};
    std::vector<Entry> entries;
  };
  enum class Kind { Resolve, Readdir, Readlink };
  struct Request {
    Walk* walk;
    Kind kind;
    size_t dir;
    size_t entry;
  };

  static void on_reply(rpc_context*, int status, void* data, void* private_data) noexcept;
  void handle(const Request& request, int status, void* data);
  void fail(int code, const std::string& message) {
    if (!error_) error_ = make_error(code, message);
  }
  std::string where(size_t dir, std::string_view name = {}) const {
    std::string path = root_path_ + (dir == kNone ? "" : dirs_[dir].path);
    if (!name.empty()) path += "/" + std::string(name);
    return path;
  }
  bool send(Kind kind, size_t dir, size_t entry, std::vector<nfs_argop4>& ops);
  // The pump gave up (what was in flight was cancelled): its reason, not the cancellations'.
  Error lost(int rc) const {
    return make_error(rc == -ETIMEDOUT ? ETIMEDOUT : EIO,
                      root_path_ + (rc == -ETIMEDOUT ? ": no answer within the deadline (upstream-timeout)"
                                                     : ": connection lost"));
  }
  void issue();
  int drain();
  void on_readdir(size_t dir, const READDIR4resok& ok);
  Status build(Tree& tree, uint32_t node, size_t dir);

  rpc_context* rpc_;
  std::string root_path_;  // "/<name>" for messages
  const Nfs4Pump& pump_;
  std::deque<Dir> dirs_;          // stable addresses: replies refer to them by index
  std::deque<Request> requests_;  // one per COMPOUND sent, alive until the walk ends
  std::deque<size_t> to_list_;    // dirs with a READDIR to send
  // Symlinks with a READLINK to send: (dir, entry), or (kNone, 0) for the root.
  std::deque<std::pair<size_t, size_t>> to_readlink_;
  size_t in_flight_ = 0;
  size_t replies_ = 0;
  size_t entries_ = 0;
  std::optional<Error> error_;
  // The resolved root.
  Attrs root_;
  std::string root_fh_;
  std::string root_target_;
};

void Walk::on_reply(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto* request = static_cast<Request*>(private_data);
  Walk& walk = *request->walk;
  walk.in_flight_--;
  walk.replies_++;
  try {
    walk.handle(*request, status, data);
  } catch (...) {
    walk.fail(ENOMEM, "out of memory while listing " + walk.root_path_);
  }
}

void Walk::handle(const Request& request, int status, void* data) {
  if (status != RPC_STATUS_SUCCESS) {
    std::string why = status == RPC_STATUS_ERROR && data ? static_cast<const char*>(data) : "cancelled";
    fail(EIO, where(request.kind == Kind::Resolve ? kNone : request.dir) + ": " + why);
    return;
  }
  const auto& res = *static_cast<const COMPOUND4res*>(data);
  if (res.status != NFS4_OK) {
    nfsstat4 failed = nfs4_failed_status(res);
    std::string what = request.kind == Kind::Readdir ? "listing " : request.kind == Kind::Readlink ? "readlink " : "";
    std::string path = request.kind == Kind::Resolve ? root_path_
                       : request.kind == Kind::Readlink && request.dir != kNone
                           ? where(request.dir, dirs_[request.dir].entries[request.entry].name)
                           : where(request.dir);
    fail(nfs4_errno(failed), what + path + ": " + nfsstat4_to_str(failed));
    return;
  }
  if (request.kind == Kind::Resolve) {
    auto getattr = nfs4_result(res, OP_GETATTR);
    auto getfh = nfs4_result(res, OP_GETFH);
    if (!getattr || !getfh ||
        !parse_attrs(getattr->nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes, &root_)) {
      fail(EIO, root_path_ + ": malformed GETATTR reply");
      return;
    }
    const nfs_fh4& fh = getfh->nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object;
    root_fh_.assign(fh.nfs_fh4_val, fh.nfs_fh4_len);
  } else if (request.kind == Kind::Readdir) {
    auto readdir = nfs4_result(res, OP_READDIR);
    if (!readdir) return fail(EIO, "listing " + where(request.dir) + ": no READDIR result");
    if (auto getfh = nfs4_result(res, OP_GETFH)) {
      const nfs_fh4& fh = getfh->nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object;
      dirs_[request.dir].fh.assign(fh.nfs_fh4_val, fh.nfs_fh4_len);
    }
    if (dirs_[request.dir].fh.empty()) return fail(EIO, "listing " + where(request.dir) + ": no file handle");
    on_readdir(request.dir, readdir->nfs_resop4_u.opreaddir.READDIR4res_u.resok4);
  } else {
    auto readlink = nfs4_result(res, OP_READLINK);
    if (!readlink) return fail(EIO, "readlink under " + where(request.dir) + ": no READLINK result");
    const linktext4& link = readlink->nfs_resop4_u.opreadlink.READLINK4res_u.resok4.link;
    std::string target(link.utf8string_val, link.utf8string_len);
    if (request.dir == kNone) {
      root_target_ = std::move(target);
    } else {
      dirs_[request.dir].entries[request.entry].target = std::move(target);
    }
  }
}

void Walk::on_readdir(size_t dir_index, const READDIR4resok& ok) {
  // Entries are copied out: libnfs' decoder aligns them to 4 bytes, their cookie needs 8.
  entry4 e;
  for (const entry4* next = ok.reply.entries; next; next = e.nextentry) {
    std::memcpy(&e, next, sizeof e);
    Dir& dir = dirs_[dir_index];
    dir.cookie = e.cookie;
    std::string name(e.name.utf8string_val, e.name.utf8string_len);
    if (name == "." || name == "..") continue;
    Attrs attrs;
    if (!parse_attrs(e.attrs, &attrs)) return fail(EIO, where(dir_index, name) + ": malformed attributes");
    auto type = node_type(attrs.type);
    if (!type) return fail(EIO, where(dir_index, name) + ": not a file, directory or symlink");
    if (++entries_ > Tree::kMaxNodes) return fail(EIO, root_path_ + ": too many entries");
    Entry entry{name, *type, attrs.size, (attrs.mode & S_IXUSR) != 0, {}, kNone};
    if (*type == NodeType::Directory) {
      if (dir.depth + 1 > Tree::kMaxDepth) return fail(ELOOP, where(dir_index, name) + ": directory tree too deep");
      entry.dir = dirs_.size();
      Dir child;
      child.parent = dir_index;
      child.name = name;
      child.path = dir.path + "/" + name;
      child.depth = dir.depth + 1;
      dirs_.push_back(std::move(child));
      to_list_.push_back(entry.dir);
    } else if (*type == NodeType::Symlink) {
      to_readlink_.push_back({dir_index, dirs_[dir_index].entries.size()});
    }
    dirs_[dir_index].entries.push_back(std::move(entry));
  }
  if (!ok.reply.eof) {
    if (!ok.reply.entries) return fail(EIO, "listing " + where(dir_index) + ": the server sent no entry and no end");
    std::memcpy(dirs_[dir_index].verifier, ok.cookieverf, NFS4_VERIFIER_SIZE);
    to_list_.push_front(dir_index);  // the rest of a listing first: it is the oldest work
  }
}

bool Walk::send(Kind kind, size_t dir, size_t entry, std::vector<nfs_argop4>& ops) {
  COMPOUND4args args{};
  args.argarray.argarray_len = static_cast<u_int>(ops.size());
  args.argarray.argarray_val = ops.data();
  requests_.push_back(Request{this, kind, dir, entry});
  // libnfs encodes the arguments before it returns: they may live on this stack.
  if (rpc_nfs4_compound_async(rpc_, &Walk::on_reply, &args, &requests_.back()) != 0) {
    requests_.pop_back();
    fail(EIO, root_path_ + ": cannot queue an NFS request: " + rpc_get_error(rpc_));
    return false;
  }
  in_flight_++;
  return true;
}

void Walk::issue() {
  std::vector<nfs_argop4> ops;
  while (!error_ && in_flight_ < kMaxInFlight && (!to_list_.empty() || !to_readlink_.empty())) {
    ops.clear();
    if (!to_readlink_.empty()) {  // readlinks are one small round trip each: keep them flowing
      auto [dir_index, entry] = to_readlink_.front();
      to_readlink_.pop_front();
      if (dir_index == kNone) {
        ops.push_back(nfs4_putfh(root_fh_));
      } else {
        ops.push_back(nfs4_putfh(dirs_[dir_index].fh));
        ops.push_back(nfs4_lookup(dirs_[dir_index].entries[entry].name));
      }
      ops.push_back(nfs4_op(OP_READLINK));
      if (!send(Kind::Readlink, dir_index, entry, ops)) return;
      continue;
    }
    size_t dir_index = to_list_.front();
    to_list_.pop_front();
    Dir& dir = dirs_[dir_index];
    if (dir.fh.empty()) {  // first page: PUTFH parent, LOOKUP name, GETFH, READDIR
      ops.push_back(nfs4_putfh(dirs_[dir.parent].fh));
      ops.push_back(nfs4_lookup(dir.name));
      ops.push_back(nfs4_op(OP_GETFH));
    } else {
      ops.push_back(nfs4_putfh(dir.fh));
    }
    ops.push_back(nfs4_op(OP_READDIR));
    READDIR4args& readdir = ops.back().nfs_argop4_u.opreaddir;
    readdir.cookie = dir.cookie;
    std::memcpy(readdir.cookieverf, dir.verifier, NFS4_VERIFIER_SIZE);
    readdir.dircount = kReaddirBytes;
    readdir.maxcount = kReaddirBytes;
    readdir.attr_request = {2, const_cast<uint32_t*>(kAttrs)};
    if (!send(Kind::Readdir, dir_index, 0, ops)) return;
  }
}

// Sends and services until nothing is left in flight; 0 or the pump's negative errno.
int Walk::drain() {
  for (;;) {
    issue();
    if (in_flight_ == 0) return 0;
    int rc = pump_(
        [this] {
          return in_flight_ == 0 || (!error_ && in_flight_ < kMaxInFlight && (!to_list_.empty() || !to_readlink_.empty()));
        },
        replies_);
    if (rc < 0) return rc;
  }
}

Status Walk::build(Tree& tree, uint32_t node, size_t dir_index) {
  Dir& dir = dirs_[dir_index];
  std::sort(dir.entries.begin(), dir.entries.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  for (Entry& e : dir.entries) {
    auto child = tree.add_child(node, e.name, e.type);
    if (!child) return make_error(EIO, where(dir_index, e.name) + ": " + child.error().message);
    TreeNode& n = tree.nodes[*child];
    if (e.type == NodeType::Regular) {
      n.size = e.size;
      n.executable = e.executable;
    } else if (e.type == NodeType::Symlink) {
      if (e.target.empty() || e.target.size() > Tree::kMaxTargetLength || e.target.size() != e.size) {
        return make_error(EIO, where(dir_index, e.name) +
                                   ": symlink target empty, too long or not as long as its attributes say");
      }
      n.size = e.target.size();
      n.target = std::move(e.target);
    } else if (auto built = build(tree, *child, e.dir); !built) {
      return built;
    }
  }
  return {};
}

Result<Tree> Walk::run(const std::vector<std::string>& export_path, const std::string& name) {
  // PUTROOTFH, LOOKUP every component of the export and the name, GETFH, GETATTR.
  std::vector<std::string> components = export_path;
  components.push_back(name);
  std::vector<nfs_argop4> ops{nfs4_op(OP_PUTROOTFH)};
  for (std::string& component : components) ops.push_back(nfs4_lookup(component));
  ops.push_back(nfs4_op(OP_GETFH));
  ops.push_back(nfs4_op(OP_GETATTR));
  ops.back().nfs_argop4_u.opgetattr.attr_request = {2, const_cast<uint32_t*>(kAttrs)};
  if (!send(Kind::Resolve, 0, 0, ops)) return *error_;
  if (int rc = drain(); rc < 0) return lost(rc);
  if (error_) return *error_;

  auto type = node_type(root_.type);
  if (!type) return make_error(EIO, root_path_ + ": not a file, directory or symlink");
  Tree tree = Tree::with_root(*type);
  if (*type == NodeType::Regular) {
    tree.nodes[0].size = root_.size;
    tree.nodes[0].executable = (root_.mode & S_IXUSR) != 0;
    return tree;
  }
  if (*type == NodeType::Symlink) {
    to_readlink_.push_back({kNone, 0});
  } else {
    dirs_.push_back(Dir{root_fh_, kNone, "", "", 0, 0, {}, {}});
    to_list_.push_back(0);
  }
  if (int rc = drain(); rc < 0) return lost(rc);
  if (error_) return *error_;
  if (*type == NodeType::Symlink) {
    if (root_target_.empty() || root_target_.size() > Tree::kMaxTargetLength || root_target_.size() != root_.size) {
      return make_error(EIO, root_path_ + ": symlink target empty, too long or not as long as its attributes say");
    }
    tree.nodes[0].size = root_target_.size();
    tree.nodes[0].target = std::move(root_target_);
    return tree;
  }
  if (auto built = build(tree, Tree::kRoot, 0); !built) return built.error();
  return tree;
}

}  // namespace

Result<Tree> nfs4_walk_tree(nfs_context* ctx, const std::vector<std::string>& export_path,
                            const std::string& name, const Nfs4Pump& pump) {
  Walk walk(ctx, "/" + name, pump);
  return walk.run(export_path, name);
}

}  // namespace lazystore
