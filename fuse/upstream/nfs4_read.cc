#include "nfs4_read.h"

#include <algorithm>
#include <cstring>

#include "nfs_read_window.h"

namespace lazystore {
namespace {

struct ReadCall {
  std::string* fh;
};

bool refuses_anonymous(nfsstat4 status) {
  return status == NFS4ERR_BAD_STATEID || status == NFS4ERR_OPENMODE || status == NFS4ERR_LOCKED ||
         status == NFS4ERR_SHARE_DENIED || status == NFS4ERR_GRACE || status == NFS4ERR_EXPIRED ||
         status == NFS4ERR_NOTSUPP || status == NFS4ERR_ACCESS;
}

void on_reply(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto* piece = static_cast<NfsReadWindow::Piece*>(private_data);
  auto& call = *static_cast<ReadCall*>(piece->window->context());
  try {
    if (status != RPC_STATUS_SUCCESS) {
      return NfsReadWindow::answered(piece, -EIO, false, rpc_failure(status, data));
    }
    const auto& res = *static_cast<const COMPOUND4res*>(data);
    if (res.status != NFS4_OK) {
      nfsstat4 failed = nfs4_failed_status(res);
      auto read = nfs4_result(res, OP_READ);
      if (read && read->nfs_resop4_u.opread.status != NFS4_OK && refuses_anonymous(failed)) {
        return NfsReadWindow::answered(piece, kNfs4AnonymousReadRefused, false, nfsstat4_to_str(failed));
      }
      return NfsReadWindow::answered(piece, -nfs4_errno(failed), false, nfsstat4_to_str(failed));
    }
    if (auto getfh = nfs4_result(res, OP_GETFH)) {
      const nfs_fh4& fh = getfh->nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object;
      call.fh->assign(fh.nfs_fh4_val, fh.nfs_fh4_len);
    }
    auto read = nfs4_result(res, OP_READ);
    if (!read) return NfsReadWindow::answered(piece, -EIO, false, "no READ result");
    const READ4resok& ok = read->nfs_resop4_u.opread.READ4res_u.resok4;
    size_t n = std::min<size_t>(ok.data.data_len, piece->buf.size());
    std::memcpy(piece->buf.data(), ok.data.data_val, n);
    NfsReadWindow::answered(piece, static_cast<int64_t>(n), ok.eof != 0);
  } catch (...) {
    NfsReadWindow::answered(piece, -ENOMEM, false, "out of memory");
  }
}

// One window of READs; the first piece's COMPOUND resolves the path when the handle is unknown.
int64_t read_window(rpc_context* rpc, std::vector<std::string>& components, std::string* fh, uint64_t offset,
                    std::span<std::byte> buf, size_t piece, size_t window, std::string* error, const NfsPump& pump) {
  ReadCall call{fh};
  NfsReadWindow reads(offset, buf, piece, window, &call);
  auto send = [&](NfsReadWindow::Piece* p) {
    std::vector<nfs_argop4> ops;
    if (!fh->empty()) {
      ops.push_back(nfs4_putfh(*fh));
    } else {
      ops.push_back(nfs4_op(OP_PUTROOTFH));
      for (std::string& component : components) ops.push_back(nfs4_lookup(component));
      ops.push_back(nfs4_op(OP_GETFH));
    }
    ops.push_back(nfs4_op(OP_READ));
    READ4args& read = ops.back().nfs_argop4_u.opread;
    read.offset = p->offset;
    read.count = static_cast<count4>(p->buf.size());
    // The READ-bypass stateid (all bits one, RFC 7530 9.1.4.3), not the anonymous one (all zeros):
    // the Linux server refuses an anonymous READ with NFS4ERR_GRACE for its whole grace period
    // after a restart (90 s by default), a bypass READ it serves at once.
    read.stateid.seqid = 0xffffffff;
    std::memset(read.stateid.other, 0xff, sizeof read.stateid.other);
    COMPOUND4args args{};
    args.argarray.argarray_len = static_cast<u_int>(ops.size());
    args.argarray.argarray_val = ops.data();
    // libnfs encodes the arguments before it returns: they may live on this stack.
    if (rpc_nfs4_compound_async(rpc, &on_reply, &args, p) != 0) {
      *error = std::string("cannot queue an NFS request: ") + rpc_get_error(rpc);
      return false;
    }
    return true;
  };
  return reads.run(send, pump, error);
}

}  // namespace

int64_t nfs4_read(nfs_context* ctx, std::vector<std::string> components, std::string* fh, uint64_t offset,
                  std::span<std::byte> buf, size_t piece, size_t window, std::string* error, const NfsPump& pump) {
  rpc_context* rpc = nfs_get_rpc_context(ctx);
  if (buf.empty()) return 0;
  size_t first = 0;
  if (fh->empty()) {  // the first piece alone: it learns the handle the others use
    size_t n = std::min(buf.size(), piece ? piece : buf.size());
    int64_t got = read_window(rpc, components, fh, offset, buf.first(n), n, 1, error, pump);
    if (got < 0 || static_cast<size_t>(got) < n || n == buf.size()) return got;
    if (fh->empty()) {
      *error = "no file handle in the READ reply";
      return -EIO;
    }
    first = n;
  }
  int64_t rest = read_window(rpc, components, fh, offset + first, buf.subspan(first), piece, window, error, pump);
  return rest < 0 ? rest : static_cast<int64_t>(first) + rest;
}

}  // namespace lazystore
