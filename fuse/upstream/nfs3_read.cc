#include "nfs3_read.h"

#include <nfsc/libnfs-raw-nfs.h>

#include <algorithm>
#include <cstring>

#include "nfs3_tree_walk.h"
#include "nfs_read_window.h"

namespace lazystore {
namespace {

nfs_fh3 fh3(const std::string& bytes) {
  return nfs_fh3{{static_cast<u_int>(bytes.size()), const_cast<char*>(bytes.data())}};
}

// libnfs' XDR decoder aligns to 4 bytes only; these replies hold 64-bit fields: copied out.
template <class T>
T copy_of(const void* data) {
  T out;
  std::memcpy(&out, data, sizeof out);
  return out;
}

void on_read(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto* piece = static_cast<NfsReadWindow::Piece*>(private_data);
  try {
    if (status != RPC_STATUS_SUCCESS) return NfsReadWindow::answered(piece, -EIO, false, rpc_failure(status, data));
    auto res = copy_of<READ3res>(data);
    if (res.status != NFS3_OK) {
      return NfsReadWindow::answered(piece, -nfs3_errno(res.status), false, nfsstat3_to_str(res.status));
    }
    const READ3resok& ok = res.READ3res_u.resok;
    size_t n = std::min<size_t>({ok.data.data_len, ok.count, piece->buf.size()});
    std::memcpy(piece->buf.data(), ok.data.data_val, n);
    NfsReadWindow::answered(piece, static_cast<int64_t>(n), ok.eof != 0);
  } catch (...) {
    NfsReadWindow::answered(piece, -ENOMEM, false, "out of memory");
  }
}

void parse_lookup(Nfs3Lookup& answer, void* data) {
  auto res = copy_of<LOOKUP3res>(data);
  if (res.status != NFS3_OK) {
    answer.error = nfsstat3_to_str(res.status);
    answer.rc = -nfs3_errno(res.status);
    return;
  }
  const LOOKUP3resok& ok = res.LOOKUP3res_u.resok;
  answer.fh.assign(ok.object.data.data_val, ok.object.data.data_len);
  if (ok.obj_attributes.attributes_follow) {
    const fattr3& a = ok.obj_attributes.post_op_attr_u.attributes;
    answer.type = a.type;
    answer.mode = a.mode;
    answer.size = a.size;
  }
}

}  // namespace

int64_t nfs3_read(nfs_context* ctx, const std::string& fh, uint64_t offset, std::span<std::byte> buf, size_t piece,
                  size_t window, std::string* error, const NfsPump& pump) {
  rpc_context* rpc = nfs_get_rpc_context(ctx);
  NfsReadWindow reads(offset, buf, piece, window);
  auto send = [&](NfsReadWindow::Piece* p) {
    READ3args args{};
    args.file = fh3(fh);
    args.offset = p->offset;
    args.count = static_cast<count3>(p->buf.size());
    if (rpc_nfs3_read_async(rpc, &on_read, &args, p) != 0) {
      *error = std::string("cannot queue an NFS request: ") + rpc_get_error(rpc);
      return false;
    }
    return true;
  };
  return reads.run(send, pump, error);
}

int nfs3_lookup_all(nfs_context* ctx, const std::string& dir, const std::vector<std::string>& names,
                    std::vector<Nfs3Lookup>* answers, const NfsPump& pump) {
  rpc_context* rpc = nfs_get_rpc_context(ctx);
  answers->assign(names.size(), Nfs3Lookup{});
  std::vector<std::string> owned = names;  // libnfs takes char*
  return nfs_fan_out(rpc, *answers, pump, [&](size_t i, NfsFanOutCall<Nfs3Lookup>* call) {
    LOOKUP3args args{};
    args.what.dir = fh3(dir);
    args.what.name = owned[i].data();
    return rpc_nfs3_lookup_async(rpc, &nfs_fan_out_reply<Nfs3Lookup, parse_lookup>, &args, call);
  });
}

}  // namespace lazystore
