// lazystore-ctl [--socket PATH | --cache DIR | -m MOUNTPOINT] [--json | --prometheus] COMMAND …:
// one request to a running mount's control socket, its answer rendered on stdout.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>

#include "control_protocol.h"
#include "ctl_client.h"
#include "ctl_mounts.h"
#include "ctl_render.h"
#include "fd.h"
#include "io.h"
#include "lazystore_version.h"

namespace {

using namespace lazystore;

constexpr const char* kDefaultCache = "/var/cache/lazystore";
constexpr double kDefaultTimeout = 60;
constexpr double kMountTimeout = 10;  // -m: the mount must name its socket within this

enum Exit { kDone = 0, kFailed = 1, kUsage = 2, kUnreachable = 3 };

constexpr const char* kFooter =
    "The mount is chosen by --socket, -m, --cache, in that order; without any, the socket of\n"
    "the default cache if it exists, else the only lazystore mount there is.\n"
    "\n"
    "exit status: 0 done, 1 the command failed (the daemon's error, an unknown command, a\n"
    "prefetch with failed files), 2 usage, 3 no daemon reachable";

int die(int status, const std::string& message) {
  std::fprintf(stderr, "lazystore-ctl: %s\n", message.c_str());
  return status;
}

void print(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

// The paths of a profile file (`-`: standard input), as `reads` prints them; bounded by what one
// request may carry.
Result<std::vector<std::string>> read_profile(const std::string& name) {
  bool from_stdin = name == "-";
  Fd owned(from_stdin ? -1 : ::open(name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!from_stdin && !owned) return errno_error("--from " + name);
  int fd = from_stdin ? STDIN_FILENO : owned.get();
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("--from " + name);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxRequestBytes) {
      return make_error(EFBIG, "--from " + name + ": longer than a request may be (" +
                                   std::to_string(kMaxRequestBytes) + " bytes); split it");
    }
  }
  return parse_profile(text);
}

struct Selection {
  std::string socket;
  std::string cache;
  std::string mountpoint;
  double timeout = -1;
};

// The control socket to talk to, or an exit status with its message printed.
std::variant<std::string, int> choose_socket(const Selection& s) {
  if (!s.socket.empty()) return s.socket;
  auto through_mount = [&](const std::string& mountpoint) -> std::variant<std::string, int> {
    double seconds = s.timeout > 0 ? std::min(s.timeout, kMountTimeout) : kMountTimeout;
    auto socket = control_socket_of(mountpoint, std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
    if (!socket) return die(kUnreachable, socket.error().message);
    return *socket;
  };
  if (!s.mountpoint.empty()) {
    auto path = mountpoint_path(s.mountpoint);
    if (!path) return die(kUsage, "-m " + s.mountpoint + ": " + path.error().message);
    auto mounts = read_mountinfo();
    if (!mounts) return die(kUnreachable, mounts.error().message);
    auto mount = find_lazystore_mount(*mounts, *path);
    if (!mount) return die(kUnreachable, mount.error().message);
    return through_mount(mount->mountpoint);
  }
  if (!s.cache.empty()) return s.cache + "/control.sock";
  std::string fallback = std::string(kDefaultCache) + "/control.sock";
  struct stat st {};
  if (::lstat(fallback.c_str(), &st) == 0) return fallback;
  if (auto mounts = read_mountinfo()) {
    auto ours = lazystore_mounts(*mounts);
    if (ours.size() == 1) return through_mount(ours[0].mountpoint);
    if (ours.size() > 1) {
      std::string list;
      for (const auto& m : ours) list += (list.empty() ? "" : ", ") + m.mountpoint;
      return die(kUsage, "several lazystore mounts (" + list + "): choose one with -m MOUNTPOINT");
    }
  }
  return fallback;  // connecting says that no daemon runs
}

int connect_failure(const std::string& socket, const Error& error) {
  switch (error.code) {
    case ENOENT:
      return die(kUnreachable, "no control socket at " + socket +
                                   ": is lazystore running? (choose its mount with -m MOUNTPOINT, its cache "
                                   "with --cache DIR or its -o control=PATH with --socket PATH)");
    case ECONNREFUSED:
      return die(kUnreachable, "nothing listens on " + socket + ": the lazystore daemon is not running");
    case EACCES: return die(kUnreachable, "permission denied on " + socket + ": lazystore-ctl must run as root");
    case ENAMETOOLONG:
    case EINVAL: return die(kUsage, error.message);
    default: return die(kUnreachable, "cannot connect to " + socket + ": " + error.message);
  }
}

// Renders the result of `command` (or prints it as JSON); the exit status.
template <class T>
int show(const Json& body, bool json, std::string (*render)(const T&)) {
  auto value = result_as<T>(body);
  if (!value) return die(kUnreachable, value.error().message);
  print(json ? dump_json(body) + "\n" : render(*value));
  return kDone;
}

int run(const std::string& socket, const Request& request, bool json, bool prometheus, double timeout) {
  auto client = ControlClient::connect(socket);
  if (!client) return connect_failure(socket, client.error());
  if (auto sent = client->send(request); !sent) {
    if (sent.error().code == EILSEQ) return die(kUsage, sent.error().message);
    return die(kUnreachable, "sending the request: " + sent.error().message);
  }
  ControlClient::Deadline deadline;
  if (timeout > 0) {
    deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000));
  }
  bool progress_shown = false;
  for (;;) {
    auto answer = client->next(deadline);
    if (!answer) {
      if (progress_shown) std::fputs("\r\033[K", stderr);
      if (answer.error().code == ETIMEDOUT) {
        return die(kUnreachable, "no answer from the daemon within " + std::to_string(timeout) + " s");
      }
      return die(kUnreachable, answer.error().message);
    }
    if (answer->kind == Answer::Kind::Progress) {
      if (auto p = result_as<PrefetchProgress>(answer->body)) {
        std::fprintf(stderr, "\r%s\033[K", render_progress(*p).c_str());
        std::fflush(stderr);
        progress_shown = true;
      }
      continue;
    }
    if (progress_shown) std::fputs("\r\033[K", stderr);
    if (answer->kind == Answer::Kind::Error) return die(kFailed, answer->error);
    const Json& body = answer->body;
    switch (request.command) {
      case Command::Stats: {
        auto stats = result_as<StatsSnapshot>(body);
        if (!stats) return die(kUnreachable, stats.error().message);
        print(prometheus ? render_prometheus(*stats) : json ? dump_json(body) + "\n" : render_stats_text(*stats));
        return kDone;
      }
      case Command::Status: return show<StatusReport>(body, json, render_status_text);
      case Command::CacheUsage: return show<CacheUsage>(body, json, render_cache_usage);
      case Command::Evict: return show<EvictResult>(body, json, render_evict);
      case Command::Verify: return show<VerifyResult>(body, json, render_verify);
      case Command::Reads: return show<ReadList>(body, json, render_reads);
      case Command::Prefetch: {
        if (!request.wait) return show<PrefetchQueued>(body, json, render_prefetch_queued);
        auto result = result_as<PrefetchResult>(body);
        if (!result) return die(kUnreachable, result.error().message);
        if (json) print(dump_json(body) + "\n");
        if (result->failed) return die(kFailed, render_prefetch_result(*result));
        if (!json) print(render_prefetch_result(*result) + "\n");
        return kDone;
      }
    }
    return die(kUnreachable, "an answer to an unknown command");
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a daemon that went away is an error value, not a signal

  CLI::App app{"lazystore-ctl: talk to a running lazystore mount over its control socket (root only).",
               "lazystore-ctl"};
  app.set_version_flag("--version", std::string("lazystore-ctl ") + kLazystoreVersion);
  app.footer(kFooter);
  app.allow_extras();  // an unknown command is reported as such below
  app.require_subcommand(0, 1);

  Selection selection;
  bool json = false, prometheus = false;
  auto* socket = app.add_option("--socket", selection.socket, "the daemon's -o control=PATH");
  auto* mount = app.add_option("-m,--mount", selection.mountpoint,
                               "the mount point of the mount (found in /proc/self/mountinfo; it names its socket)");
  auto* cache = app.add_option(
      "--cache", selection.cache,
      std::string("the daemon's -o cache=DIR: the socket DIR/control.sock (default ") + kDefaultCache + ")");
  socket->excludes(mount)->excludes(cache);
  mount->excludes(cache);
  auto* json_flag = app.add_flag("--json", json, "the daemon's answer as one JSON object");
  auto* prometheus_flag = app.add_flag("--prometheus", prometheus, "stats in the Prometheus text exposition format");
  json_flag->excludes(prometheus_flag);
  app.add_option("--timeout", selection.timeout,
                 "give up waiting for the answer after SEC (default 60; 0: no limit, the default of "
                 "prefetch --wait)")
      ->check(CLI::NonNegativeNumber)
      ->option_text("SEC");

  auto* status =
      app.add_subcommand("status", "the mount at a glance: source, uptime, upstream, cache, hit ratio, last error");
  auto* stats = app.add_subcommand("stats", "every counter, cache usage, latency percentiles (--json, --prometheus)");
  auto* prefetch =
      app.add_subcommand("prefetch", "fetch the whole tree of store paths (or of paths inside them) into the cache");
  bool wait = false;
  std::vector<std::string> paths;
  std::string profile;
  prefetch->add_flag("--wait", wait, "return when done (with progress on a terminal)");
  prefetch->add_option("PATH", paths, "/nix/store/HASH-NAME[/…], a path under the mount point, or HASH-NAME[/…]");
  prefetch
      ->add_option("--from", profile, "the paths of FILE too, one per line ('-': standard input), as `reads` prints")
      ->option_text("FILE");
  auto* reads = app.add_subcommand(
      "reads", "the files this mount has read, first read first: a profile for prefetch --from on another executor");
  auto* evict = app.add_subcommand("evict", "drop every cached file that is not open");
  auto* verify = app.add_subcommand("verify", "recheck every cached chunk's xxh3, drop bad ones");
  auto* cache_usage = app.add_subcommand("cache-usage", "bytes cached and the bound");
  auto* counters = app.add_subcommand("counters", "the table of counters, gauges and histograms (no daemon needed)");
  bool markdown = false;
  counters->add_flag("--markdown", markdown, "as a markdown table");
  for (auto* sub : {status, stats, prefetch, evict, verify, cache_usage, reads, counters}) sub->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kDone : kUsage;
  }
  if (auto extras = app.remaining(); !extras.empty()) {
    const std::string first = extras.front();
    if (app.get_subcommands().empty() && !first.starts_with("-")) {
      return die(kFailed, "unknown command '" + first +
                              "' (status, stats, prefetch, evict, verify, cache-usage, reads, counters)");
    }
    return die(kUsage, "unexpected argument " + first + " (see --help)");
  }
  if (app.get_subcommands().empty()) {
    std::fputs(app.help().c_str(), stderr);
    return kUsage;
  }
  if (prometheus && !*stats) return die(kUsage, "--prometheus applies to stats only");

  if (*counters) {
    print(json ? counters_json().dump(2) + "\n" : markdown ? render_counters_markdown() : render_counters_text());
    return kDone;
  }

  Request request;
  if (*status) request.command = Command::Status;
  if (*stats) request.command = Command::Stats;
  if (*evict) request.command = Command::Evict;
  if (*verify) request.command = Command::Verify;
  if (*cache_usage) request.command = Command::CacheUsage;
  if (*reads) request.command = Command::Reads;
  if (*prefetch) {
    request.command = Command::Prefetch;
    request.paths = paths;
    if (!profile.empty()) {
      auto listed = read_profile(profile);
      if (!listed) return die(kUsage, listed.error().message);
      request.paths.insert(request.paths.end(), listed->begin(), listed->end());
    }
    if (request.paths.empty()) {
      return die(kUsage, profile.empty() ? "prefetch needs a PATH or --from FILE (see --help)"
                                         : "prefetch: " + profile + " lists no path");
    }
    request.wait = wait;
    request.progress = wait && !json && ::isatty(STDERR_FILENO);
  }
  double timeout = selection.timeout >= 0 ? selection.timeout : request.wait ? 0 : kDefaultTimeout;
  selection.timeout = timeout;

  auto chosen = choose_socket(selection);
  if (auto* status_code = std::get_if<int>(&chosen)) return *status_code;
  return run(std::get<std::string>(chosen), request, json, prometheus, timeout);
}
