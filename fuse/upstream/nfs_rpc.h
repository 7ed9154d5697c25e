// What lazystore's raw NFS requests (nfs3_*, nfs4_*: libnfs' RPC layer on a mounted context)
// share: the libnfs headers, the pump that services a context, the export's root handle and the
// bound on the sizes a server may report.
#pragma once

// libnfs 4.0 needs <sys/time.h> before its header.
#include <sys/time.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lazystore {

// Services the context until done() holds. The deadline restarts whenever `progress` changes.
// Returns 0, or a negative errno after the context was destroyed (no answer in time, transport
// error); destroying it cancels what is in flight, while the caller's state is still alive.
using NfsPump = std::function<int(const std::function<bool()>& done, const size_t& progress)>;

// Why an RPC got no reply: libnfs's message, or "cancelled" (the context went away).
inline std::string rpc_failure(int status, void* data) {
  return status == RPC_STATUS_ERROR && data ? static_cast<const char*>(data) : "cancelled";
}

// The private data of one request of a fan-out: its answer, and the count its reply raises.
template <class Answer>
struct NfsFanOutCall {
  Answer* answer;
  size_t* answered;
};

// Sends one request per answer at once, then pumps until every one is answered. `send(i, call)`
// queues request i with `call` as its private data and returns libnfs's result; a request that
// cannot be queued is answered at once (-EIO, libnfs's error). Returns the pump's result.
template <class Answer, class Send>
int nfs_fan_out(rpc_context* rpc, std::vector<Answer>& answers, const NfsPump& pump, Send send) {
  std::vector<NfsFanOutCall<Answer>> calls(answers.size());
  size_t answered = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    calls[i] = NfsFanOutCall<Answer>{&answers[i], &answered};
    if (send(i, &calls[i]) != 0) {
      answers[i].rc = -EIO;
      answers[i].error = std::string("cannot queue an NFS request: ") + rpc_get_error(rpc);
      answered++;
    }
  }
  return pump([&answered, &answers] { return answered == answers.size(); }, answered);
}

// libnfs's callback of a fan-out's request: counts the answer; an RPC without a reply is -EIO,
// else `parse(answer, data)` fills the answer in from the reply (out of memory: -ENOMEM).
template <class Answer, void (*parse)(Answer& answer, void* data)>
void nfs_fan_out_reply(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto& call = *static_cast<NfsFanOutCall<Answer>*>(private_data);
  Answer& answer = *call.answer;
  (*call.answered)++;
  try {
    if (status != RPC_STATUS_SUCCESS) {
      answer.error = rpc_failure(status, data);
      answer.rc = -EIO;
      return;
    }
    parse(answer, data);
  } catch (...) {
    answer.error = "out of memory";
    answer.rc = -ENOMEM;
  }
}

// The root file handle of the export a context mounted over NFSv3 (from the MOUNT reply).
std::string nfs3_root_handle(nfs_context* ctx);

}  // namespace lazystore
