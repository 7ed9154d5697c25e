#include "control.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "format.h"
#include "io.h"
#include "log.h"
#include "unix_socket.h"

namespace lazystore {

// ---------------------------------------------------------------------------------------------
// The wire format
// ---------------------------------------------------------------------------------------------

std::string encode_request(const std::vector<std::string>& words) {
  std::string line;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) line += '\t';
    for (char c : words[i]) {
      if (c == '\\') line += "\\\\";
      else if (c == '\t') line += "\\t";
      else if (c == '\n') line += "\\n";
      else line += c;
    }
  }
  line += '\n';
  return line;
}

Result<std::vector<std::string>> decode_request(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  std::vector<std::string> words(1);
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == '\t') {
      words.emplace_back();
    } else if (c == '\\') {
      if (++i == line.size()) return make_error(EINVAL, "request ends in a lone backslash");
      char e = line[i];
      if (e == '\\') words.back() += '\\';
      else if (e == 't') words.back() += '\t';
      else if (e == 'n') words.back() += '\n';
      else return make_error(EINVAL, std::string("unknown escape \\") + e + " in request");
    } else if (c == '\n' || c == '\0') {
      return make_error(EINVAL, "control character in request");
    } else {
      words.back() += c;
    }
  }
  if (words.size() == 1 && words[0].empty()) return make_error(EINVAL, "empty request");
  return words;
}

std::string json_escape(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string ok_response(std::string_view output) { return "{\"ok\":true,\"output\":" + json_escape(output) + "}"; }
std::string error_response(std::string_view message) {
  return "{\"ok\":false,\"error\":" + json_escape(message) + "}";
}

namespace {

// Parses the JSON string starting at text[pos] (a quote); pos ends after the closing quote.
Result<std::string> parse_json_string(std::string_view text, size_t& pos) {
  if (pos >= text.size() || text[pos] != '"') return make_error(EPROTO, "expected a JSON string");
  std::string out;
  for (++pos; pos < text.size(); ++pos) {
    char c = text[pos];
    if (c == '"') {
      ++pos;
      return out;
    }
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++pos >= text.size()) break;
    switch (text[pos]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'u': {
        if (pos + 4 >= text.size()) return make_error(EPROTO, "truncated \\u escape");
        unsigned value = 0;
        for (int i = 1; i <= 4; ++i) {
          char h = text[pos + static_cast<size_t>(i)];
          value <<= 4;
          if (h >= '0' && h <= '9') value |= static_cast<unsigned>(h - '0');
          else if (h >= 'a' && h <= 'f') value |= static_cast<unsigned>(h - 'a' + 10);
          else if (h >= 'A' && h <= 'F') value |= static_cast<unsigned>(h - 'A' + 10);
          else return make_error(EPROTO, "bad \\u escape");
        }
        if (value >= 0x80) return make_error(EPROTO, "non-ASCII \\u escape");  // we never send one
        out += static_cast<char>(value);
        pos += 4;
        break;
      }
      default: return make_error(EPROTO, "bad escape in a JSON string");
    }
  }
  return make_error(EPROTO, "unterminated JSON string");
}

std::string seconds_text(double seconds) {
  char buf[32];
  if (seconds < 1e-3) std::snprintf(buf, sizeof buf, "%.0f µs", seconds * 1e6);
  else if (seconds < 1) std::snprintf(buf, sizeof buf, "%.1f ms", seconds * 1e3);
  else std::snprintf(buf, sizeof buf, "%.2f s", seconds);
  return buf;
}

std::string number(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", value);
  return buf;
}

}  // namespace

Result<ControlResponse> parse_response(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  ControlResponse response;
  if (line.starts_with("{\"ok\":true,\"output\":")) {
    response.ok = true;
    size_t pos = std::strlen("{\"ok\":true,\"output\":");
    auto text = parse_json_string(line, pos);
    if (!text) return text.error();
    response.text = std::move(*text);
  } else if (line.starts_with("{\"ok\":false,\"error\":")) {
    size_t pos = std::strlen("{\"ok\":false,\"error\":");
    auto text = parse_json_string(line, pos);
    if (!text) return text.error();
    response.text = std::move(*text);
  } else {
    return make_error(EPROTO, "unexpected answer from the daemon: " + std::string(line.substr(0, 200)));
  }
  if (line.substr(std::min(line.size(), line.find_last_of('"') + 1)) != "}") {
    return make_error(EPROTO, "malformed answer from the daemon");
  }
  return response;
}

std::string format_stats(const Stats& stats, uint64_t cache_bytes, uint64_t cache_limit,
                         OutputFormat format) {
  auto counters = stats.counters();
  struct Latency {
    const char* name;
    const char* help;
    const LatencyHistogram& histogram;
  };
  const Latency latencies[] = {
      {"upstream_latency", "duration of upstream calls", stats.upstream_latency},
      {"read_latency", "duration of FUSE reads, cached or not", stats.read_latency},
  };
  const double quantiles[] = {0.5, 0.9, 0.99};
  std::string out;

  if (format == OutputFormat::Json) {
    out = "{";
    for (const auto& c : counters) out += "\"" + std::string(c.name) + "\":" + std::to_string(c.value) + ",";
    out += "\"cache_bytes\":" + std::to_string(cache_bytes) + ",\"cache_limit\":" + std::to_string(cache_limit);
    for (const auto& l : latencies) {
      out += ",\"" + std::string(l.name) + "\":{\"count\":" + std::to_string(l.histogram.count()) +
             ",\"sum_seconds\":" + number(l.histogram.sum_seconds());
      for (double q : quantiles) {
        out += ",\"p" + std::to_string(static_cast<int>(q * 100)) + "\":" + number(l.histogram.percentile(q));
      }
      out += "}";
    }
    out += "}\n";
    return out;
  }

  if (format == OutputFormat::Prometheus) {
    for (const auto& c : counters) {
      std::string name = "lazystore_" + std::string(c.name) + "_total";
      out += "# HELP " + name + " " + c.help + "\n# TYPE " + name + " counter\n";
      out += name + " " + std::to_string(c.value) + "\n";
    }
    out += "# HELP lazystore_cache_bytes disk bytes of the content cache\n"
           "# TYPE lazystore_cache_bytes gauge\nlazystore_cache_bytes " + std::to_string(cache_bytes) + "\n";
    out += "# HELP lazystore_cache_limit_bytes bound of the content cache\n"
           "# TYPE lazystore_cache_limit_bytes gauge\nlazystore_cache_limit_bytes " +
           std::to_string(cache_limit) + "\n";
    for (const auto& l : latencies) {
      std::string name = "lazystore_" + std::string(l.name) + "_seconds";
      out += "# HELP " + name + " " + l.help + "\n# TYPE " + name + " summary\n";
      for (double q : quantiles) {
        out += name + "{quantile=\"" + number(q) + "\"} " + number(l.histogram.percentile(q)) + "\n";
      }
      out += name + "_sum " + number(l.histogram.sum_seconds()) + "\n";
      out += name + "_count " + std::to_string(l.histogram.count()) + "\n";
    }
    return out;
  }

  uint64_t hits = stats.chunk_hits, misses = stats.chunk_misses;
  char line[256];
  std::snprintf(line, sizeof line, "%-22s %" PRIu64 " hits, %" PRIu64 " misses (%.1f %% hits)\n", "chunks",
                hits, misses, hits + misses ? 100.0 * static_cast<double>(hits) / static_cast<double>(hits + misses) : 0.0);
  out += line;
  std::snprintf(line, sizeof line, "%-22s %s\n", "bytes fetched", format_bytes(stats.upstream_bytes).c_str());
  out += line;
  std::snprintf(line, sizeof line, "%-22s %s\n", "bytes served", format_bytes(stats.served_bytes).c_str());
  out += line;
  std::snprintf(line, sizeof line, "%-22s %s of %s\n", "cache", format_bytes(cache_bytes).c_str(),
                format_bytes(cache_limit).c_str());
  out += line;
  for (const auto& l : latencies) {
    std::string label = std::string(l.name == std::string_view("upstream_latency") ? "upstream" : "read") + " latency";
    std::snprintf(line, sizeof line, "%-22s p50 %s, p90 %s, p99 %s (%" PRIu64 " calls)\n", label.c_str(),
                  seconds_text(l.histogram.percentile(0.5)).c_str(),
                  seconds_text(l.histogram.percentile(0.9)).c_str(),
                  seconds_text(l.histogram.percentile(0.99)).c_str(), l.histogram.count());
    out += line;
  }
  out += "counters:\n";
  for (const auto& c : counters) {
    std::snprintf(line, sizeof line, "  %-26s %" PRIu64 "\n", c.name, c.value);
    out += line;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

namespace {

constexpr size_t kMaxRequest = 1 << 20;
constexpr size_t kMaxConnections = 32;
constexpr unsigned kPrefetchThreads = 4;   // per prefetch request
constexpr size_t kMaxPrefetchJobs = 8;      // prefetch requests running at once

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::open(const std::string& path, ControlContext context) {
  if (auto address = unix_socket_address(path); !address) {
    return make_error(address.error().code, "control socket: " + address.error().message);
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(EEXIST, "control socket " + path + " exists and is not a socket");
    if (connect_unix_socket(path)) {
      return make_error(EADDRINUSE, "control socket " + path + " is in use by a running lazystore");
    }
    ::unlink(path.c_str());  // left by a daemon that is gone
  }
  // Created 0600 from the start: no window in which another user could connect.
  mode_t old_mask = ::umask(0177);
  auto listening = listen_unix_socket(path, 16, SOCK_NONBLOCK);
  ::umask(old_mask);
  if (!listening) {
    if (listening.error().code != EADDRINUSE) ::unlink(path.c_str());
    return make_error(listening.error().code, "control socket " + path + ": " + listening.error().message);
  }
  Fd listener = std::move(*listening);
  std::unique_ptr<ControlServer> server(new ControlServer(path, std::move(listener), std::move(context)));
  server->wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!server->wake_) {
    ::unlink(path.c_str());
    return make_error(errno, std::string("eventfd: ") + std::strerror(errno));
  }
  return server;
}

ControlServer::~ControlServer() { stop(); }

void ControlServer::start() { acceptor_ = std::thread([this] { accept_loop(); }); }

void ControlServer::stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  if (wake_) (void)!::write(wake_.get(), &one, sizeof one);
  if (acceptor_.joinable()) acceptor_.join();
  std::list<Connection> connections;
  std::list<std::shared_ptr<PrefetchJob>> jobs;
  {
    std::lock_guard lock(mutex_);
    connections.swap(connections_);
    jobs.swap(jobs_);
  }
  for (auto& job : jobs) {
    std::lock_guard lock(job->mutex);
    job->finished.notify_all();
  }
  for (auto& c : connections) c.thread.join();
  for (auto& job : jobs) {
    for (auto& t : job->threads) t.join();
  }
  ::unlink(path_.c_str());
}

void ControlServer::accept_loop() {
  while (!stopping_) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("control socket: poll: %s", std::strerror(errno));
      return;
    }
    if (fds[1].revents || stopping_) return;
    Fd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection) continue;
    reap_finished_connections();
    reap_finished_jobs();
    std::lock_guard lock(mutex_);
    if (connections_.size() >= kMaxConnections) {
      (void)send_all(connection.get(), error_response("too many control connections") + "\n");
      continue;
    }
    try {
      auto done = std::make_shared<std::atomic<bool>>(false);
      connections_.emplace_back();  // nothing started yet if this throws
      connections_.back().done = done;
      try {
        int fd = connection.get();
        connections_.back().thread = std::thread([this, fd, done] {
          serve_connection(Fd(fd));
          *done = true;
        });
        (void)connection.release();  // the thread owns it now
      } catch (...) {
        connections_.pop_back();
        throw;
      }
    } catch (const std::exception& e) {
      LOG_WARNING("control socket: cannot serve a connection: %s", e.what());
    }
  }
}

void ControlServer::reap_finished_connections() {
  std::list<Connection> finished;
  {
    std::lock_guard lock(mutex_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (*it->done) finished.splice(finished.end(), connections_, it++);
      else ++it;
    }
  }
  for (auto& c : finished) c.thread.join();
}

void ControlServer::serve_connection(Fd connection) {
  try {
    serve_request(connection.get());
  } catch (const std::exception& e) {
    LOG_WARNING("control socket: %s", e.what());
  }
}

void ControlServer::serve_request(int connection_fd) {
  // A stuck client must not hold the thread forever.
  timeval timeout{10, 0};
  ::setsockopt(connection_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string line;
  char buf[4096];
  while (line.find('\n') == std::string::npos && line.size() < kMaxRequest) {
    ssize_t n = ::recv(connection_fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  std::string answer;
  size_t end = line.find('\n');
  if (end == std::string::npos) {
    answer = error_response("incomplete request (one line ending in LF expected)");
  } else {
    auto words = decode_request(std::string_view(line).substr(0, end));
    answer = words ? handle(*words) : error_response(words.error().message);
  }
  (void)send_all(connection_fd, answer + "\n");
}

std::string ControlServer::handle(const std::vector<std::string>& words) {
  // The guard every request passes: nothing may throw out of the control thread.
  try {
    OutputFormat format = OutputFormat::Text;
    bool wait = false;
    std::vector<std::string> args;
    for (size_t i = 1; i < words.size(); ++i) {
      if (words[i] == "--json") format = OutputFormat::Json;
      else if (words[i] == "--prometheus") format = OutputFormat::Prometheus;
      else if (words[i] == "--wait") wait = true;
      else if (words[i].starts_with("--")) return error_response("unknown flag " + words[i]);
      else args.push_back(words[i]);
    }
    const std::string& command = words[0];
    if (format == OutputFormat::Prometheus && command != "stats") {
      return error_response("--prometheus applies to stats only");
    }
    if (command == "stats" || command == "cache-usage") {
      if (!args.empty()) return error_response(command + " takes no arguments");
      uint64_t used = context_.cache.used_bytes(), limit = context_.cache.limit();
      if (command == "stats") return ok_response(format_stats(context_.stats, used, limit, format));
      if (format == OutputFormat::Json) {
        return ok_response("{\"cache_bytes\":" + std::to_string(used) + ",\"cache_limit\":" + std::to_string(limit) + "}\n");
      }
      return ok_response(format_bytes(used) + " of " + format_bytes(limit) + " used\n");
    }
    if (command == "evict") {
      if (!args.empty()) return error_response("evict takes no arguments");
      auto report = context_.cache.evict_all();
      LOG_INFO("control: evicted %" PRIu64 " files, %" PRIu64 " bytes", report.files, report.bytes);
      if (format == OutputFormat::Json) {
        return ok_response("{\"files\":" + std::to_string(report.files) + ",\"bytes\":" + std::to_string(report.bytes) +
                           ",\"pinned_files\":" + std::to_string(report.pinned_files) + "}\n");
      }
      return ok_response("evicted " + std::to_string(report.files) + " files, freed " + format_bytes(report.bytes) +
                         "; " + std::to_string(report.pinned_files) + " open files kept\n");
    }
    if (command == "verify") {
      if (!args.empty()) return error_response("verify takes no arguments");
      auto started = std::chrono::steady_clock::now();
      auto report = context_.cache.verify_all();
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      LOG_INFO("control: verified %" PRIu64 " chunks, %" PRIu64 " bad", report.chunks, report.bad_chunks);
      if (format == OutputFormat::Json) {
        return ok_response("{\"files\":" + std::to_string(report.files) + ",\"chunks\":" + std::to_string(report.chunks) +
                           ",\"bytes\":" + std::to_string(report.bytes) + ",\"bad_chunks\":" +
                           std::to_string(report.bad_chunks) + ",\"dropped_files\":" +
                           std::to_string(report.dropped_files) + ",\"seconds\":" + number(seconds) + "}\n");
      }
      return ok_response("verified " + std::to_string(report.chunks) + " chunks (" + format_bytes(report.bytes) +
                         ") in " + std::to_string(report.files) + " files in " + seconds_text(seconds) + ": " +
                         std::to_string(report.bad_chunks) + " bad chunks dropped, " +
                         std::to_string(report.dropped_files) + " unusable files removed\n");
    }
    if (command == "prefetch") {
      if (args.empty()) return error_response("prefetch needs at least one PATH");
      return prefetch(args, wait, format);
    }
    return error_response("unknown command '" + command + "' (stats, prefetch, evict, verify, cache-usage)");
  } catch (const std::exception& e) {
    return error_response(std::string("internal error: ") + e.what());
  }
}

Status ControlServer::collect(std::string_view path, std::vector<PrefetchItem>& items) {
  std::string_view rest = path;
  std::string mount_prefix = context_.mountpoint + "/";
  if (!context_.mountpoint.empty() && rest.starts_with(mount_prefix)) {
    rest.remove_prefix(mount_prefix.size());
  } else if (rest.starts_with("/nix/store/")) {
    rest.remove_prefix(std::strlen("/nix/store/"));
  } else if (rest.starts_with("/")) {
    return make_error(EINVAL, std::string(path) + " is not under /nix/store or the mount point");
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  size_t slash = rest.find('/');
  auto store_path = StorePath::parse(rest.substr(0, slash));
  if (!store_path) return make_error(EINVAL, std::string(path) + ": " + store_path.error().message);
  auto tree = context_.metadata.get(*store_path);
  if (!tree) return make_error(tree.error().code, std::string(path) + ": " + tree.error().message);
  uint32_t top = Tree::kRoot;
  if (slash != std::string_view::npos) {
    auto node = (*tree)->tree.resolve(rest.substr(slash + 1));
    if (!node) return make_error(ENOENT, std::string(path) + ": no such file or directory");
    top = *node;
  }
  std::vector<uint32_t> stack{top};
  const auto& nodes = (*tree)->tree.nodes;
  while (!stack.empty()) {
    uint32_t n = stack.back();
    stack.pop_back();
    if (nodes[n].type == NodeType::Directory) {
      stack.insert(stack.end(), nodes[n].children.begin(), nodes[n].children.end());
    } else if (nodes[n].type == NodeType::Regular && nodes[n].size > 0) {
      items.push_back({*tree, n, nodes[n].size});
    }
  }
  return {};
}

void ControlServer::prefetch_worker(PrefetchJob& job) {
  for (;;) {
    size_t i = job.next.fetch_add(1);
    if (i >= job.items.size() || stopping_) break;
    const PrefetchItem& item = job.items[i];
    auto pinned = context_.cache.pin(item.tree->key_of(item.node), item.size);
    Status filled = pinned ? Status() : Status(pinned.error());
    if (pinned) {
      StoreTreePtr tree = item.tree;
      uint32_t node = item.node;
      FetchFn fetch = [this, tree, node](uint64_t offset, std::span<std::byte> buf) {
        return context_.upstream.read(tree->path, tree->tree, node, offset, buf);
      };
      filled = context_.cache.fill(**pinned, fetch);
      context_.cache.release(*pinned);
    }
    if (filled) {
      job.files_done++;
      job.bytes_done += item.size;
    } else {
      job.failed++;
      LOG_WARNING("prefetch %s: %s", item.tree->key_of(item.node).c_str(),
                  filled.error().message.c_str());
    }
  }
  std::lock_guard lock(job.mutex);
  if (--job.running == 0) job.finished.notify_all();
}

void ControlServer::reap_finished_jobs() {
  std::list<std::shared_ptr<PrefetchJob>> done;
  {
    std::lock_guard lock(mutex_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      bool finished;
      {
        std::lock_guard job_lock((*it)->mutex);
        finished = (*it)->running == 0;
      }
      if (finished) done.splice(done.end(), jobs_, it++);
      else ++it;
    }
  }
  for (auto& job : done) {
    for (auto& t : job->threads) t.join();
  }
}

std::string ControlServer::prefetch(const std::vector<std::string>& paths, bool wait, OutputFormat format) {
  auto job = std::make_shared<PrefetchJob>();
  for (const auto& path : paths) {
    if (auto collected = collect(path, job->items); !collected) return error_response(collected.error().message);
  }
  uint64_t total = 0;
  for (const auto& item : job->items) total += item.size;
  size_t files = job->items.size();
  auto started = std::chrono::steady_clock::now();
  // The connection keeps the job alive: the acceptor may reap it as soon as it finishes.
  std::shared_ptr<PrefetchJob> keep = job;
  PrefetchJob* raw = job.get();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return error_response("the daemon is stopping");
    if (jobs_.size() >= kMaxPrefetchJobs) {
      return error_response("too many prefetches running (" + std::to_string(jobs_.size()) + "); try again later");
    }
    unsigned threads = static_cast<unsigned>(std::min<size_t>(kPrefetchThreads, files));
    std::lock_guard job_lock(raw->mutex);
    raw->running = threads;
    for (unsigned i = 0; i < threads; ++i) raw->threads.emplace_back([this, raw] { prefetch_worker(*raw); });
    jobs_.push_back(std::move(job));
  }
  if (!wait) {
    if (format == OutputFormat::Json) {
      return ok_response("{\"queued_files\":" + std::to_string(files) + ",\"queued_bytes\":" + std::to_string(total) + "}\n");
    }
    return ok_response("queued " + std::to_string(files) + " files (" + format_bytes(total) + ") for prefetching\n");
  }
  {
    std::unique_lock lock(raw->mutex);
    raw->finished.wait(lock, [&] { return raw->running == 0 || stopping_; });
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  uint64_t done_files = raw->files_done, done_bytes = raw->bytes_done, failed = raw->failed;
  if (format == OutputFormat::Json) {
    return ok_response("{\"files\":" + std::to_string(done_files) + ",\"bytes\":" + std::to_string(done_bytes) +
                       ",\"failed\":" + std::to_string(failed) + ",\"seconds\":" + number(seconds) + "}\n");
  }
  std::string text = "prefetched " + std::to_string(done_files) + " files (" + format_bytes(done_bytes) + ") in " +
                     seconds_text(seconds);
  if (failed) text += "; " + std::to_string(failed) + " files failed (see the daemon's log)";
  if (failed) return error_response(text);
  return ok_response(text + "\n");
}

}  // namespace lazystore
