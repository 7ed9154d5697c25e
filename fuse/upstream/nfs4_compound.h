// Shared pieces of the raw NFSv4 COMPOUNDs lazystore sends through libnfs' rpc layer
// (nfs4_tree_walk, nfs4_read): the pump that services a context, and reading a reply.
#pragma once

// libnfs 4.0 needs <sys/time.h> before its header.
#include <sys/time.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-nfs4.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

namespace lazystore {

// Services the context until done() holds. The deadline restarts whenever `progress` changes.
// Returns 0, or a negative errno after the context was destroyed (no answer in time, transport
// error); destroying it cancels what is in flight, while the caller's state is still alive.
using Nfs4Pump = std::function<int(const std::function<bool()>& done, const size_t& progress)>;

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
