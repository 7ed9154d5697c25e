// What lazystore's raw NFS requests (nfs3_*, nfs4_*: libnfs' RPC layer on a mounted context)
// share: the libnfs headers, the pump that services a context, the export's root handle and the
// bound on the sizes a server may report.
#pragma once

// libnfs 4.0 needs <sys/time.h> before its header.
#include <sys/time.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "nar_listing.h"

namespace lazystore {

// Services the context until done() holds. The deadline restarts whenever `progress` changes.
// Returns 0, or a negative errno after the context was destroyed (no answer in time, transport
// error); destroying it cancels what is in flight, while the caller's state is still alive.
using NfsPump = std::function<int(const std::function<bool()>& done, const size_t& progress)>;

// The largest file an NFS server may describe: kMaxFileSize (nar_listing.h, 1 TiB), the bound
// every upstream applies where sizes enter; a bigger size refuses its directory (EIO).
constexpr uint64_t kNfsLargestFileSize = kMaxFileSize;

// The root file handle of the export a context mounted over NFSv3 (from the MOUNT reply).
std::string nfs3_root_handle(nfs_context* ctx);

}  // namespace lazystore
