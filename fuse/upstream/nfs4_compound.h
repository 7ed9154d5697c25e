// Shared pieces of the raw NFSv4 COMPOUNDs lazystore sends through libnfs' rpc layer
// (nfs4_tree_walk, nfs4_read): the pump that services a context, and reading a reply.
#pragma once

#include "nfs_rpc.h"

#include <nfsc/libnfs-raw-nfs4.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

namespace lazystore {

using Nfs4Pump = NfsPump;

// The errno of an NFSv4 status (EIO for what has no closer meaning).
int nfs4_errno(nfsstat4 status);
// The status of the operation that failed in a COMPOUND reply (its last result).
nfsstat4 nfs4_failed_status(const COMPOUND4res& res);
// A copy of the result of operation `op` in a reply (its pointers lead into the reply).
std::optional<nfs_resop4> nfs4_result(const COMPOUND4res& res, nfs_opnum4 op);
// A PUTFH / LOOKUP argument that points into `bytes` (encoded before the send returns).
nfs_argop4 nfs4_putfh(std::string& bytes);
nfs_argop4 nfs4_lookup(std::string& name);
nfs_argop4 nfs4_op(nfs_opnum4 op);

}  // namespace lazystore
