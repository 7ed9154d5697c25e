// Going to the background, and the rule that keeps it safe: a fork keeps only the calling
// thread, so nothing may run on another thread when the process forks. Threads start after the
// last fork (Upstream::start(), ChunkCache::start_workers(), ControlServer::start()).
#pragma once

#include "fd.h"
#include "result.h"

namespace lazystore {

// Aborts with a message naming `before` when the process runs more than one thread: a child
// forked now would lack them (an HTTP upstream without its curl worker hangs every request).
void require_single_thread(const char* before);

// Forks the process that goes on in the background (a new session, cwd "/") and returns there
// the write end of its report pipe. The calling process waits for that one byte and exits with
// it: 0 once the background process serves, its status when it failed first, 1 when it died
// without a word. It never returns.
Result<Fd> daemonize();

// Writes the byte the waiting process exits with, once (then closes `report`).
void report_status(Fd& report, int status);

}  // namespace lazystore
