#include "nfs4_compound.h"

#include <cerrno>
#include <cstring>

namespace lazystore {

int nfs4_errno(nfsstat4 status) {
  switch (status) {
    case NFS4ERR_NOENT: return ENOENT;
    case NFS4ERR_NOTDIR: return ENOTDIR;
    case NFS4ERR_ISDIR: return EISDIR;
    case NFS4ERR_ACCESS: return EACCES;
    case NFS4ERR_PERM: return EPERM;
    case NFS4ERR_NAMETOOLONG: return ENAMETOOLONG;
    case NFS4ERR_SYMLINK: return ELOOP;
    default: return EIO;
  }
}

namespace {

// libnfs' XDR decoder aligns the result array to 4 bytes only (UBSan: misaligned nfs_resop4):
// results are copied out, never read in place. Their pointers lead into the reply, still valid.
nfs_resop4 result_at(const COMPOUND4res& res, u_int i) {
  nfs_resop4 result;
  std::memcpy(&result, reinterpret_cast<const unsigned char*>(res.resarray.resarray_val) + i * sizeof result,
              sizeof result);
  return result;
}

}  // namespace

nfsstat4 nfs4_failed_status(const COMPOUND4res& res) {
  if (res.resarray.resarray_len == 0) return res.status;
  // Every operation's result starts with its nfsstat4 (a common initial sequence of the union).
  nfs_resop4 last = result_at(res, res.resarray.resarray_len - 1);
  return last.nfs_resop4_u.opputfh.status != NFS4_OK ? last.nfs_resop4_u.opputfh.status : res.status;
}

std::optional<nfs_resop4> nfs4_result(const COMPOUND4res& res, nfs_opnum4 op) {
  for (u_int i = 0; i < res.resarray.resarray_len; ++i) {
    nfs_resop4 result = result_at(res, i);
    if (result.resop == op) return result;
  }
  return std::nullopt;
}

nfs_argop4 nfs4_putfh(std::string& bytes) {
  nfs_argop4 op = nfs4_op(OP_PUTFH);
  op.nfs_argop4_u.opputfh.object = {static_cast<u_int>(bytes.size()), bytes.data()};
  return op;
}

nfs_argop4 nfs4_lookup(std::string& name) {
  nfs_argop4 op = nfs4_op(OP_LOOKUP);
  op.nfs_argop4_u.oplookup.objname = {static_cast<u_int>(name.size()), name.data()};
  return op;
}

nfs_argop4 nfs4_op(nfs_opnum4 op) {
  nfs_argop4 arg{};
  arg.argop = op;
  return arg;
}

}  // namespace lazystore
