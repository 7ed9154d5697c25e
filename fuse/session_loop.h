// A server's request loop. A server that took over after a crash first answers what its
// predecessor had read and not answered (replayed from the request journal, each in a thread of
// its own so that one waiting for the upstream does not hold up the others or new requests),
// then serves until the mount ends.
#pragma once

#include "options.h"

#include "session_takeover.h"
#include "stats.h"

namespace lazystore {

// Returns libfuse's loop status (0 when the mount ended normally). `takeover` is null for an
// unsupervised mount.
int run_session_loop(fuse_session* session, const MountOptions& options, const Takeover* takeover, Stats& stats);

}  // namespace lazystore
