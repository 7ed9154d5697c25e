// One libcurl multi handle driven by one worker thread: every HTTP transfer of the daemon runs
// here, so connections are kept alive and reused, and many transfers run in parallel, while the
// calling threads (FUSE workers) just wait for their own transfer with a deadline.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "result.h"

namespace lazystore {

struct HttpRequest {
  std::string url;
  // Inclusive byte range [first, last]; the answer must then be 206 Partial Content.
  std::optional<std::pair<uint64_t, uint64_t>> range;
  double timeout_seconds = 10;  // the whole transfer (> 0: every transfer has a deadline)
  double stall_seconds = 0;     // also abort when no byte arrives for this long; 0 = off
  // Receives the body of a 2xx answer piece by piece, on the worker thread; false aborts.
  // Without it the body is collected (up to max_body bytes).
  std::function<bool(std::span<const char>)> on_data;
  size_t max_body = 64u << 20;
};

struct HttpResponse {
  long status = 0;  // HTTP status; 0 when no answer came (transport error, timeout)
  bool timed_out = false;
  bool refused = false;  // the body was refused (too large, or on_data said no)
  std::string body;      // without on_data, for a 2xx answer
  std::string error;     // transport error text, or why the body was refused
  uint64_t bytes = 0;    // body bytes received
};

class CurlWorker {
 public:
  // max_connections: per host and in total; transfers beyond it wait in libcurl's queue. No
  // thread runs until start() (the daemon forks after making its upstream; a fork keeps only
  // the calling thread).
  static Result<std::unique_ptr<CurlWorker>> create(unsigned max_connections);
  void start();
  ~CurlWorker();
  CurlWorker(const CurlWorker&) = delete;
  CurlWorker& operator=(const CurlWorker&) = delete;

  // Runs one transfer and waits for it. Never throws; a transfer past its deadline is cancelled
  // and answered as timed out, and on_data is not called after perform() returned. Redirects
  // are followed (at most 5) but never from https to http.
  HttpResponse perform(HttpRequest request);

  struct Transfer;

 private:
  CurlWorker() = default;
  void run();

  struct Multi;
  std::unique_ptr<Multi> multi_;
  std::mutex mutex_;
  std::deque<std::shared_ptr<Transfer>> incoming_;
  bool stopping_ = false;
  std::string ca_file_;  // CURLOPT_CAINFO when set ($NIX_SSL_CERT_FILE, $SSL_CERT_FILE)
  std::thread thread_;
};

}  // namespace lazystore
