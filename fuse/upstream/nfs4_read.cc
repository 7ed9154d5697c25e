#include "nfs4_read.h"

#include <algorithm>
#include <cstring>

namespace lazystore {
namespace {

struct ReadCall {
  std::span<std::byte> buf;
  std::string* fh;
  std::string* error;
  int result = 0;
  bool done = false;
  size_t progress = 0;
};

bool refuses_anonymous(nfsstat4 status) {
  return status == NFS4ERR_BAD_STATEID || status == NFS4ERR_OPENMODE || status == NFS4ERR_LOCKED ||
         status == NFS4ERR_SHARE_DENIED || status == NFS4ERR_GRACE || status == NFS4ERR_EXPIRED ||
         status == NFS4ERR_NOTSUPP || status == NFS4ERR_ACCESS;
}

void on_reply(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto& call = *static_cast<ReadCall*>(private_data);
  call.done = true;
  call.progress++;
  try {
    if (status != RPC_STATUS_SUCCESS) {
      *call.error = status == RPC_STATUS_ERROR && data ? static_cast<const char*>(data) : "cancelled";
      call.result = -EIO;
      return;
    }
    const auto& res = *static_cast<const COMPOUND4res*>(data);
    if (res.status != NFS4_OK) {
      nfsstat4 failed = nfs4_failed_status(res);
      auto read = nfs4_result(res, OP_READ);
      if (read && read->nfs_resop4_u.opread.status != NFS4_OK && refuses_anonymous(failed)) {
        call.result = kNfs4AnonymousReadRefused;
        return;
      }
      *call.error = nfsstat4_to_str(failed);
      call.result = -nfs4_errno(failed);
      return;
    }
    if (auto getfh = nfs4_result(res, OP_GETFH)) {
      const nfs_fh4& fh = getfh->nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object;
      call.fh->assign(fh.nfs_fh4_val, fh.nfs_fh4_len);
    }
    auto read = nfs4_result(res, OP_READ);
    if (!read) {
      *call.error = "no READ result";
      call.result = -EIO;
      return;
    }
    const READ4resok& ok = read->nfs_resop4_u.opread.READ4res_u.resok4;
    size_t n = std::min<size_t>(ok.data.data_len, call.buf.size());
    std::memcpy(call.buf.data(), ok.data.data_val, n);
    call.result = static_cast<int>(n);
  } catch (...) {
    *call.error = "out of memory";
    call.result = -ENOMEM;
  }
}

}  // namespace

int nfs4_read(nfs_context* ctx, std::vector<std::string> components, std::string* fh, uint64_t offset,
              std::span<std::byte> buf, std::string* error, const Nfs4Pump& pump) {
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
  read.offset = offset;
  read.count = static_cast<count4>(buf.size());
  // The READ-bypass stateid (all bits one, RFC 7530 9.1.4.3), not the anonymous one (all zeros):
  // the Linux server refuses an anonymous READ with NFS4ERR_GRACE for its whole grace period
  // after a restart (90 s by default), a bypass READ it serves at once.
  read.stateid.seqid = 0xffffffff;
  std::memset(read.stateid.other, 0xff, sizeof read.stateid.other);
  COMPOUND4args args{};
  args.argarray.argarray_len = static_cast<u_int>(ops.size());
  args.argarray.argarray_val = ops.data();
  ReadCall call{buf, fh, error};
  rpc_context* rpc = nfs_get_rpc_context(ctx);
  if (rpc_nfs4_compound_async(rpc, &on_reply, &args, &call) != 0) {
    *error = std::string("cannot queue an NFS request: ") + rpc_get_error(rpc);
    return -EIO;
  }
  if (int rc = pump([&call] { return call.done; }, call.progress); rc < 0) return rc;
  return call.result;
}

}  // namespace lazystore
