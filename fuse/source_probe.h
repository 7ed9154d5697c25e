// Before mounting: does SOURCE answer? A missing directory, an NFS server that refuses or a host
// name that does not resolve, a binary cache that does not answer used to give a mount whose
// every lookup failed with EIO; like the kernel NFS client and sshfs, the mount now fails at
// once, with the cause. With store paths in the cache it starts anyway, offline.
#pragma once

#include "options.h"
#include "result.h"

namespace lazystore {

enum class SourceState { Answers, Offline };

// Asks SOURCE one question (is a store path there?) through the upstream's own code and
// deadline (upstream-timeout). Answers: SOURCE answered. Offline: it did not, but the cache
// holds trees (CACHE/v1/meta), so the mount serves them (logged as a warning). An Error: it did
// not and nothing is cached, or SOURCE or the options are invalid; its message is the cause.
// Every thread the probe starts (the HTTP upstream's worker) has ended when it returns, so the
// process may fork afterwards.
Result<SourceState> probe_source(const MountOptions& options);

}  // namespace lazystore
