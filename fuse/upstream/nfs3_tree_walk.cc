#include "nfs3_tree_walk.h"

#include <nfsc/libnfs-raw-nfs.h>
#include <sys/stat.h>

#include <cstring>
#include <memory>

namespace lazystore {

int nfs3_errno(int status) {
  switch (status) {
    case NFS3ERR_NOENT: return ENOENT;
    case NFS3ERR_NOTDIR: return ENOTDIR;
    case NFS3ERR_ISDIR: return EISDIR;
    case NFS3ERR_ACCES: return EACCES;
    case NFS3ERR_PERM: return EPERM;
    case NFS3ERR_NAMETOOLONG: return ENAMETOOLONG;
    case NFS3ERR_STALE: return ESTALE;
    default: return EIO;
  }
}

namespace {

// Replies of a READDIRPLUS page: dircount bounds the names and cookies, maxcount the whole reply
// (as NFSv4's READDIR: a wanted directory's answer is not queued behind much larger ones).
constexpr uint32_t kReaddirDirBytes = 32768;
constexpr uint32_t kReaddirMaxBytes = 65536;

std::optional<NodeType> node_type(ftype3 type) {
  switch (type) {
    case NF3REG: return NodeType::Regular;
    case NF3DIR: return NodeType::Directory;
    case NF3LNK: return NodeType::Symlink;
    default: return std::nullopt;
  }
}

nfs_fh3 fh3(std::string& bytes) { return nfs_fh3{{static_cast<u_int>(bytes.size()), bytes.data()}}; }

std::string bytes_of(const nfs_fh3& fh) { return std::string(fh.data.data_val, fh.data.data_len); }

// libnfs' XDR decoder aligns what it decodes to 4 bytes only, and these hold 64-bit fields:
// every reply structure is copied out before it is read.
template <class T>
T copy_of(const void* data) {
  T out;
  std::memcpy(&out, data, sizeof out);
  return out;
}

class Nfs3Walk final : public NfsTreeWalk {
 public:
  Nfs3Walk(nfs_context* ctx, const std::string& root_fh, const std::string& name, TreeBuilder& builder,
           const NfsPump& pump, NfsHandleSink handles)
      : NfsTreeWalk(nfs_get_rpc_context(ctx), name, builder, pump, std::move(handles)),
        export_fh_(root_fh),
        name_(name) {}

 private:
  enum class Kind { Resolve, Readdir, Readlink, Lookup };
  using Request = WalkRequest<Nfs3Walk, Kind>;
  friend class NfsTreeWalk;  // on_reply calls handle

  Request* request(Kind kind, size_t dir, size_t entry) { return new Request{this, kind, dir, entry}; }
  // Takes the result of an rpc_nfs3_*_async call.
  bool queued(int rc, Request* req) {
    if (rc != 0) {
      delete req;
      fail(EIO, where(kNone) + ": cannot queue an NFS request: " + rpc_get_error(rpc_));
      return false;
    }
    sent();
    return true;
  }
  void failed_status(int status, const std::string& what) {
    fail(nfs3_errno(status), what + ": " + nfsstat3_to_str(status));
  }
  void handle(const Request& request, void* data);
  void on_readdir(size_t dir, const READDIRPLUS3resok& ok);

  bool send_resolve() override {
    LOOKUP3args args{};
    args.what.dir = fh3(export_fh_);
    args.what.name = name_.data();
    Request* req = request(Kind::Resolve, kNone, 0);
    return queued(rpc_nfs3_lookup_async(rpc_, &on_reply<Nfs3Walk, Kind>, &args, req), req);
  }
  bool send_readdir(size_t dir_index) override {
    Dir& dir = dirs_[dir_index];
    READDIRPLUS3args args{};
    args.dir = fh3(dir.fh);
    args.cookie = dir.cookie;
    std::memcpy(args.cookieverf, dir.verifier.data(), NFS3_COOKIEVERFSIZE);
    args.dircount = kReaddirDirBytes;
    args.maxcount = kReaddirMaxBytes;
    Request* req = request(Kind::Readdir, dir_index, 0);
    return queued(rpc_nfs3_readdirplus_async(rpc_, &on_reply<Nfs3Walk, Kind>, &args, req), req);
  }
  bool send_readlink(size_t dir_index, size_t entry) override {
    READLINK3args args{};
    args.symlink = dir_index == kNone ? fh3(root_fh_) : fh3(dirs_[dir_index].entries[entry].fh);
    Request* req = request(Kind::Readlink, dir_index, entry);
    return queued(rpc_nfs3_readlink_async(rpc_, &on_reply<Nfs3Walk, Kind>, &args, req), req);
  }
  bool send_lookup(size_t dir_index, size_t entry) override {
    LOOKUP3args args{};
    args.what.dir = fh3(dirs_[dir_index].fh);
    args.what.name = dirs_[dir_index].entries[entry].entry.name.data();
    Request* req = request(Kind::Lookup, dir_index, entry);
    return queued(rpc_nfs3_lookup_async(rpc_, &on_reply<Nfs3Walk, Kind>, &args, req), req);
  }

  std::string export_fh_;
  std::string name_;
};

void Nfs3Walk::handle(const Request& request, void* data) {
  switch (request.kind) {
    case Kind::Resolve:
    case Kind::Lookup: {
      auto res = copy_of<LOOKUP3res>(data);
      std::string path = request.kind == Kind::Resolve
                             ? where(kNone)
                             : where(request.dir, dirs_[request.dir].entries[request.entry].entry.name);
      if (res.status != NFS3_OK) return failed_status(res.status, path);
      const LOOKUP3resok& ok = res.LOOKUP3res_u.resok;
      if (!ok.obj_attributes.attributes_follow) return fail(EIO, path + ": LOOKUP without attributes");
      const fattr3& a = ok.obj_attributes.post_op_attr_u.attributes;
      std::string fh = bytes_of(ok.object);
      if (request.kind == Kind::Resolve) {
        resolved(node_type(a.type), a.size, (a.mode & S_IXUSR) != 0, std::move(fh));
      } else {
        entry_known(request.dir, request.entry, node_type(a.type), a.size, (a.mode & S_IXUSR) != 0, std::move(fh));
      }
      return;
    }
    case Kind::Readdir: {
      auto res = copy_of<READDIRPLUS3res>(data);
      if (res.status != NFS3_OK) return failed_status(res.status, "listing " + where(request.dir));
      return on_readdir(request.dir, res.READDIRPLUS3res_u.resok);
    }
    case Kind::Readlink: {
      auto res = copy_of<READLINK3res>(data);
      std::string path = request.dir == kNone
                             ? where(kNone)
                             : where(request.dir, dirs_[request.dir].entries[request.entry].entry.name);
      if (res.status != NFS3_OK) return failed_status(res.status, "readlink " + path);
      const char* target = res.READLINK3res_u.resok.data;
      if (!target) return fail(EIO, "readlink " + path + ": no target");
      return target_read(request.dir, request.entry, std::string(target, strnlen(target, Tree::kMaxTargetLength + 1)));
    }
  }
}

void Nfs3Walk::on_readdir(size_t dir_index, const READDIRPLUS3resok& ok) {
  bool any = false;
  for (const entryplus3* next = ok.reply.entries; next && !failed();) {
    auto e = copy_of<entryplus3>(next);
    next = e.nextentry;
    any = true;
    dirs_[dir_index].cookie = e.cookie;
    std::string name = e.name ? std::string(e.name, strnlen(e.name, Tree::kMaxNameLength + 1)) : std::string();
    std::string fh = e.name_handle.handle_follows ? bytes_of(e.name_handle.post_op_fh3_u.handle) : std::string();
    if (!e.name_attributes.attributes_follow || fh.empty()) {
      // Without attributes or handle (a server may leave them out): a LOOKUP gives both.
      add_entry(dir_index, std::move(name), std::nullopt, 0, false, std::move(fh), false);
      continue;
    }
    const fattr3& a = e.name_attributes.post_op_attr_u.attributes;
    add_entry(dir_index, std::move(name), node_type(a.type), a.size, (a.mode & S_IXUSR) != 0, std::move(fh));
  }
  if (failed()) return;
  if (!ok.reply.eof) {
    if (!any) return fail(EIO, "listing " + where(dir_index) + ": the server sent no entry and no end");
    std::memcpy(dirs_[dir_index].verifier.data(), ok.cookieverf, NFS3_COOKIEVERFSIZE);
  }
  page_done(dir_index, ok.reply.eof);
}

}  // namespace

Status nfs3_walk_tree(nfs_context* ctx, const std::string& root_fh, const std::string& name, TreeBuilder& builder,
                      const NfsPump& pump, NfsHandleSink handles) {
  if (root_fh.empty()) return make_error(EIO, "/" + name + ": the export's root handle is unknown");
  Nfs3Walk walk(ctx, root_fh, name, builder, pump, std::move(handles));
  return walk.run();
}

}  // namespace lazystore
