#include "nfs4_tree_walk.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

#include "nfs_tree_walk.h"

namespace lazystore {
namespace {

constexpr uint32_t kReaddirBytes = 65536;  // maxcount of one READDIR reply (libnfs takes ≤ 1 MiB)

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
        default: return false;  // not asked for: its length is unknown here
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

class Nfs4Walk final : public NfsTreeWalk {
 public:
  Nfs4Walk(nfs_context* ctx, const std::vector<std::string>& export_path, const std::string& name, TreeBuilder& builder,
           const NfsPump& pump)
      : NfsTreeWalk(nfs_get_rpc_context(ctx), name, builder, pump), components_(export_path) {
    components_.push_back(name);
  }

 private:
  enum class Kind { Resolve, Readdir, Readlink };
  using Request = WalkRequest<Nfs4Walk, Kind>;
  friend class NfsTreeWalk;  // on_reply calls handle

  void handle(const Request& request, void* data);
  bool send(Kind kind, size_t dir, size_t entry, std::vector<nfs_argop4>& ops);
  bool send_resolve() override;
  bool send_readdir(size_t dir) override;
  bool send_readlink(size_t dir, size_t entry) override;
  void on_readdir(size_t dir, const READDIR4resok& ok);

  std::vector<std::string> components_;  // from the server's root to the store path
};

void Nfs4Walk::handle(const Request& request, void* data) {
  const auto& res = *static_cast<const COMPOUND4res*>(data);
  if (res.status != NFS4_OK) {
    nfsstat4 failed_status = nfs4_failed_status(res);
    std::string what = request.kind == Kind::Readdir ? "listing " : request.kind == Kind::Readlink ? "readlink " : "";
    std::string path = request.kind == Kind::Resolve ? where(kNone)
                       : request.kind == Kind::Readlink && request.dir != kNone
                           ? where(request.dir, dirs_[request.dir].entries[request.entry].entry.name)
                           : where(request.dir);
    return fail(nfs4_errno(failed_status), what + path + ": " + nfsstat4_to_str(failed_status));
  }
  if (request.kind == Kind::Resolve) {
    auto getattr = nfs4_result(res, OP_GETATTR);
    auto getfh = nfs4_result(res, OP_GETFH);
    Attrs attrs;
    if (!getattr || !getfh ||
        !parse_attrs(getattr->nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes, &attrs)) {
      return fail(EIO, where(kNone) + ": malformed GETATTR reply");
    }
    const nfs_fh4& fh = getfh->nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object;
    resolved(node_type(attrs.type), attrs.size, (attrs.mode & S_IXUSR) != 0,
             std::string(fh.nfs_fh4_val, fh.nfs_fh4_len));
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
    target_read(request.dir, request.entry, std::string(link.utf8string_val, link.utf8string_len));
  }
}

void Nfs4Walk::on_readdir(size_t dir_index, const READDIR4resok& ok) {
  // Entries are copied out: libnfs' decoder aligns them to 4 bytes, their cookie needs 8.
  entry4 e;
  for (const entry4* next = ok.reply.entries; next && !failed(); next = e.nextentry) {
    std::memcpy(&e, next, sizeof e);
    dirs_[dir_index].cookie = e.cookie;
    std::string name(e.name.utf8string_val, e.name.utf8string_len);
    Attrs attrs;
    if (!parse_attrs(e.attrs, &attrs)) return fail(EIO, where(dir_index, name) + ": malformed attributes");
    add_entry(dir_index, std::move(name), node_type(attrs.type), attrs.size, (attrs.mode & S_IXUSR) != 0, {});
  }
  if (failed()) return;
  if (!ok.reply.eof) {
    if (!ok.reply.entries) return fail(EIO, "listing " + where(dir_index) + ": the server sent no entry and no end");
    std::memcpy(dirs_[dir_index].verifier.data(), ok.cookieverf, NFS4_VERIFIER_SIZE);
  }
  page_done(dir_index, ok.reply.eof);
}

bool Nfs4Walk::send(Kind kind, size_t dir, size_t entry, std::vector<nfs_argop4>& ops) {
  COMPOUND4args args{};
  args.argarray.argarray_len = static_cast<u_int>(ops.size());
  args.argarray.argarray_val = ops.data();
  auto request = std::make_unique<Request>(Request{this, kind, dir, entry});
  // libnfs encodes the arguments before it returns: they may live on this stack.
  if (rpc_nfs4_compound_async(rpc_, &on_reply<Nfs4Walk, Kind>, &args, request.get()) != 0) {
    fail(EIO, where(kNone) + ": cannot queue an NFS request: " + rpc_get_error(rpc_));
    return false;
  }
  request.release();  // the callback owns it now
  sent();
  return true;
}

bool Nfs4Walk::send_resolve() {
  // PUTROOTFH, LOOKUP every component of the export and the name, GETFH, GETATTR.
  std::vector<nfs_argop4> ops{nfs4_op(OP_PUTROOTFH)};
  for (std::string& component : components_) ops.push_back(nfs4_lookup(component));
  ops.push_back(nfs4_op(OP_GETFH));
  ops.push_back(nfs4_op(OP_GETATTR));
  ops.back().nfs_argop4_u.opgetattr.attr_request = {2, const_cast<uint32_t*>(kAttrs)};
  return send(Kind::Resolve, kNone, 0, ops);
}

bool Nfs4Walk::send_readdir(size_t dir_index) {
  std::vector<nfs_argop4> ops;
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
  std::memcpy(readdir.cookieverf, dir.verifier.data(), NFS4_VERIFIER_SIZE);
  readdir.dircount = kReaddirBytes;
  readdir.maxcount = kReaddirBytes;
  readdir.attr_request = {2, const_cast<uint32_t*>(kAttrs)};
  return send(Kind::Readdir, dir_index, 0, ops);
}

bool Nfs4Walk::send_readlink(size_t dir_index, size_t entry) {
  std::vector<nfs_argop4> ops;
  if (dir_index == kNone) {
    ops.push_back(nfs4_putfh(root_fh_));
  } else {
    ops.push_back(nfs4_putfh(dirs_[dir_index].fh));
    ops.push_back(nfs4_lookup(dirs_[dir_index].entries[entry].entry.name));
  }
  ops.push_back(nfs4_op(OP_READLINK));
  return send(Kind::Readlink, dir_index, entry, ops);
}

}  // namespace

Status nfs4_walk_tree(nfs_context* ctx, const std::vector<std::string>& export_path, const std::string& name,
                      TreeBuilder& builder, const NfsPump& pump) {
  Nfs4Walk walk(ctx, export_path, name, builder, pump);
  return walk.run();
}

}  // namespace lazystore
