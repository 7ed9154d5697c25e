#include "curl_worker.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <vector>

#include "log.h"

namespace lazystore {
namespace {

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;

// curl_global_init is not thread-safe; run it once before any handle exists.
bool global_init() {
  static const bool ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  return ok;
}

}  // namespace

struct CurlWorker::Multi {
  MultiPtr handle;
};

struct CurlWorker::Transfer {
  HttpRequest request;
  HttpResponse response;
  EasyPtr easy;
  std::string range_text;
  char error_buffer[CURL_ERROR_SIZE] = {};
  std::atomic<bool> cancelled{false};
  // Held while on_data runs; the caller takes it to cancel, so that once it gives up, the
  // callback (which may point into the caller's stack) never runs again.
  std::mutex consumer;
  bool abandoned = false;  // guarded by consumer
  bool refused = false;    // the write callback refused the body (see response.error)
  std::promise<void> done;

  static size_t on_write(char* data, size_t size, size_t count, void* self) {
    auto* t = static_cast<Transfer*>(self);
    size_t n = size * count;
    if (t->cancelled.load(std::memory_order_relaxed)) return 0;
    std::lock_guard lock(t->consumer);
    if (t->abandoned) return 0;
    long status = 0;
    curl_easy_getinfo(t->easy.get(), CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) return n;  // an error page: read and dropped
    if (t->request.range && status != 206) {
      t->refused = true;
      t->response.error = "the server ignored the Range header (status " + std::to_string(status) + ")";
      return 0;
    }
    t->response.bytes += n;
    if (t->request.on_data) {
      if (!t->request.on_data(std::span<const char>(data, n))) {
        t->refused = true;
        if (t->response.error.empty()) t->response.error = "transfer aborted by its consumer";
        return 0;
      }
      return n;
    }
    if (t->response.body.size() + n > t->request.max_body) {
      t->refused = true;
      t->response.error = "answer larger than " + std::to_string(t->request.max_body) + " bytes";
      return 0;
    }
    t->response.body.append(data, n);
    return n;
  }
};

Result<std::unique_ptr<CurlWorker>> CurlWorker::create(unsigned max_connections) {
  if (!global_init()) return make_error(EIO, "libcurl initialisation failed");
  std::unique_ptr<CurlWorker> worker(new CurlWorker());
  worker->multi_ = std::make_unique<Multi>();
  worker->multi_->handle.reset(curl_multi_init());
  if (!worker->multi_->handle) return make_error(ENOMEM, "cannot create a libcurl multi handle");
  CURLM* multi = worker->multi_->handle.get();
  long connections = static_cast<long>(max_connections ? max_connections : 8);
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, connections);
  curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, connections * 2);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, connections * 2);
  // Where Nix looks for a CA bundle other than the system's (e.g. a private CA).
  for (const char* name : {"NIX_SSL_CERT_FILE", "SSL_CERT_FILE"}) {
    if (const char* value = std::getenv(name); value && *value) {
      worker->ca_file_ = value;
      break;
    }
  }
  return worker;
}

void CurlWorker::start() {
  std::lock_guard lock(mutex_);
  if (!thread_.joinable() && !stopping_) thread_ = std::thread([this] { run(); });
}

CurlWorker::~CurlWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  if (multi_ && multi_->handle) curl_multi_wakeup(multi_->handle.get());
  if (thread_.joinable()) thread_.join();
}

HttpResponse CurlWorker::perform(HttpRequest request) {
  auto transfer = std::make_shared<Transfer>();
  if (!(request.timeout_seconds > 0)) request.timeout_seconds = 10;  // never without a deadline
  transfer->request = std::move(request);
  std::future<void> done = transfer->done.get_future();
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || !thread_.joinable()) {
      HttpResponse response;
      response.error = stopping_ ? "the HTTP worker is stopping" : "the HTTP worker was not started";
      return response;
    }
    incoming_.push_back(transfer);
  }
  curl_multi_wakeup(multi_->handle.get());
  // libcurl enforces the timeout itself; this bound only catches a stuck worker. Past it the
  // transfer is cancelled, and given a moment to end; if the worker still does not answer, the
  // transfer is abandoned (its callback can no longer run) and answered as timed out.
  const auto bound = std::chrono::duration<double>(transfer->request.timeout_seconds + 5);
  if (done.wait_for(bound) != std::future_status::ready) {
    transfer->cancelled = true;
    curl_multi_wakeup(multi_->handle.get());
    if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
      std::lock_guard lock(transfer->consumer);
      transfer->abandoned = true;
      LOG_ERROR("HTTP worker: %s did not end 10 s past its deadline: abandoned", transfer->request.url.c_str());
      HttpResponse response;
      response.timed_out = true;
      response.error = "abandoned after the deadline";
      return response;
    }
  }
  if (transfer->cancelled && transfer->response.status == 0) transfer->response.timed_out = true;
  return std::move(transfer->response);
}

void CurlWorker::run() {
  CURLM* multi = multi_->handle.get();
  std::map<CURL*, std::shared_ptr<Transfer>> running;
  auto finish = [&](const std::shared_ptr<Transfer>& t) {
    curl_multi_remove_handle(multi, t->easy.get());
    t->easy.reset();
    t->done.set_value();
  };
  for (;;) {
    std::deque<std::shared_ptr<Transfer>> added;
    bool stopping;
    {
      std::lock_guard lock(mutex_);
      added.swap(incoming_);
      stopping = stopping_;
    }
    if (stopping) {
      for (auto& t : added) {
        t->response.error = "the HTTP worker is stopping";
        t->done.set_value();
      }
      for (auto& [easy, t] : running) {
        t->response.error = "the HTTP worker is stopping";
        finish(t);
      }
      return;
    }
    for (auto& t : added) {
      t->easy.reset(curl_easy_init());
      CURL* easy = t->easy.get();
      if (!easy) {
        t->response.error = "cannot create a libcurl handle";
        t->done.set_value();
        continue;
      }
      const HttpRequest& r = t->request;
      curl_easy_setopt(easy, CURLOPT_URL, r.url.c_str());
      curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
      // An https SOURCE stays https: a redirect to http would hand the transfer to anyone on the path.
      curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, r.url.starts_with("https://") ? "https" : "http,https");
      if (!ca_file_.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, ca_file_.c_str());
      curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
      curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 5L);
      curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(easy, CURLOPT_USERAGENT, "lazystore");
      curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error_buffer);
      curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Transfer::on_write);
      curl_easy_setopt(easy, CURLOPT_WRITEDATA, t.get());
      curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
      double connect = r.stall_seconds > 0 ? std::min(r.stall_seconds, r.timeout_seconds) : r.timeout_seconds;
      curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect * 1000));
      curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(r.timeout_seconds * 1000));
      if (r.stall_seconds > 0) {
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, static_cast<long>(r.stall_seconds + 0.999));
      }
      if (r.range) {
        t->range_text = std::to_string(r.range->first) + "-" + std::to_string(r.range->second);
        curl_easy_setopt(easy, CURLOPT_RANGE, t->range_text.c_str());
      }
      if (curl_multi_add_handle(multi, easy) != CURLM_OK) {
        t->response.error = "cannot start the transfer";
        t->easy.reset();
        t->done.set_value();
        continue;
      }
      running.emplace(easy, t);
    }
    // Cancelled transfers (their caller gave up) end now.
    for (auto it = running.begin(); it != running.end();) {
      if (it->second->cancelled) {
        it->second->response.error = "cancelled after the deadline";
        it->second->response.timed_out = true;
        finish(it->second);
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    int still_running = 0;
    curl_multi_perform(multi, &still_running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(multi, &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      auto it = running.find(message->easy_handle);
      if (it == running.end()) continue;
      Transfer& t = *it->second;
      CURLcode code = message->data.result;
      curl_easy_getinfo(message->easy_handle, CURLINFO_RESPONSE_CODE, &t.response.status);
      if (code == CURLE_UNSUPPORTED_PROTOCOL && t.request.url.starts_with("https://")) {
        t.refused = true;  // not worth a retry: the server will redirect the same way
        t.response.error = "refused a redirect from https to another scheme";
      }
      t.response.refused = t.refused;
      if (code != CURLE_OK) {
        if (!t.refused) {
          t.response.error = t.error_buffer[0] ? t.error_buffer : curl_easy_strerror(code);
        }
        t.response.timed_out = code == CURLE_OPERATION_TIMEDOUT;
        // An incomplete body is no answer, whatever the status line said.
        t.response.status = 0;
      }
      finish(it->second);
      running.erase(it);
    }
    curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
}

}  // namespace lazystore
