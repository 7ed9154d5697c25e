#include "session_loop.h"

#include <memory>
#include <thread>
#include <vector>

#include "log.h"

namespace lazystore {
namespace {

struct LoopConfigDeleter {
  void operator()(fuse_loop_config* config) const { fuse_loop_cfg_destroy(config); }
};

// Whether to ask the kernel to resend as well: the journal holds every request that fits a
// slot, and answering them twice only costs work, so by default only for one that did not.
bool wants_resend(TakeoverMode mode, const std::vector<RequestJournal::Request>& pending) {
  if (mode == TakeoverMode::kBoth) return true;
  if (mode == TakeoverMode::kReplayOnly) return false;
  for (const auto& request : pending) {
    if (!request.fits()) return true;
  }
  return false;
}

}  // namespace

int run_session_loop(fuse_session* session, const MountOptions& options, const Takeover* takeover, Stats& stats) {
  TakeoverMode mode = takeover_mode();
  RequestJournal* requests = takeover && mode != TakeoverMode::kResend ? takeover->requests : nullptr;
  std::vector<RequestJournal::Request> pending;
  if (requests) {
    requests->set_stats(&stats);
    pending = requests->take_pending();
  }
  bool resent = requests && wants_resend(mode, pending) &&
                ask_kernel_to_resend(takeover->fuse_fd, "the requests the request journal could not hold");
  if (!pending.empty()) {
    LOG_INFO("answering %zu requests the server before had read and not answered%s", pending.size(),
             resent ? " (and the kernel resends them)" : "");
  }

  std::vector<std::jthread> replays;  // joined before the session is destroyed
  if (options.single_thread) {
    for (const auto& request : pending) requests->replay(session, request, resent);
    return fuse_session_loop(session);
  }
  replays.reserve(pending.size());
  for (auto& request : pending) {
    replays.emplace_back(
        [requests, session, request = std::move(request), resent] { requests->replay(session, request, resent); });
  }
  std::unique_ptr<fuse_loop_config, LoopConfigDeleter> config(fuse_loop_cfg_create());
  // Under a supervisor every thread reads the supervisor's descriptor: requests a dead server
  // had read stay on it (a clone would take them with it) and can be answered or resent.
  fuse_loop_cfg_set_clone_fd(config.get(), options.clone_fd && !takeover ? 1 : 0);
  fuse_loop_cfg_set_max_threads(config.get(), options.max_threads);
  fuse_loop_cfg_set_idle_threads(config.get(), 16);
  return fuse_session_loop_mt(session, config.get());
}

}  // namespace lazystore
