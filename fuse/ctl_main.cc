// lazystore-ctl [--socket PATH | --cache DIR] [--json | --prometheus] COMMAND [ARGS]: one request
// to a running mount's control socket, its answer on stdout.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "control.h"
#include "fd.h"
#include "io.h"
#include "unix_socket.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: lazystore-ctl [--socket PATH | --cache DIR] [--json | --prometheus] [--timeout SEC]\n"
               "                     COMMAND [ARGS]\n"
               "\n"
               "Talks to a running lazystore mount over its control socket (root only).\n"
               "\n"
               "commands:\n"
               "    stats                  counters, bytes fetched/served, latency percentiles\n"
               "                           (--json, --prometheus for Prometheus text format)\n"
               "    prefetch [--wait] PATH...\n"
               "                           fetch the whole tree of store paths (or paths inside\n"
               "                           them) into the cache in the background; --wait: until done\n"
               "    evict                  drop every cached file that is not open\n"
               "    verify                 recheck every cached chunk's xxh3, drop bad ones\n"
               "    cache-usage            bytes cached and the bound\n"
               "\n"
               "options:\n"
               "    --socket PATH          the daemon's -o control=PATH\n"
               "    --cache DIR            the daemon's -o cache=DIR (socket DIR/control.sock;\n"
               "                           default /var/cache/lazystore)\n"
               "    --json                 machine-readable output\n"
               "    --prometheus           stats in Prometheus text exposition format\n"
               "    --timeout SEC          give up waiting for the answer (default 60; 0 with --wait:\n"
               "                           no limit)\n"
               "\n"
               "exit status: 0 done, 1 the daemon reported an error, 2 usage, 3 no daemon reachable\n");
}

int die(int status, const std::string& message) {
  std::fprintf(stderr, "lazystore-ctl: %s\n", message.c_str());
  return status;
}

}  // namespace

int main(int argc, char* argv[]) {
  using namespace lazystore;
  std::string socket_path;
  std::string cache_dir = "/var/cache/lazystore";
  double timeout = -1;
  std::vector<std::string> flags, words;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "lazystore-ctl: %s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    } else if (arg == "--socket") {
      socket_path = value("--socket");
    } else if (arg == "--cache") {
      cache_dir = value("--cache");
    } else if (arg == "--timeout") {
      char* end = nullptr;
      const char* text = value("--timeout");
      timeout = std::strtod(text, &end);
      if (end == text || *end != '\0' || timeout < 0) return die(2, std::string("invalid --timeout ") + text);
    } else if (arg == "--json" || arg == "--prometheus" || arg == "--wait") {
      flags.push_back(arg);
    } else if (arg.starts_with("-") && words.empty()) {
      usage(stderr);
      return die(2, "unknown option " + arg);
    } else {
      words.push_back(arg);
    }
  }
  if (words.empty()) {
    usage(stderr);
    return 2;
  }
  if (socket_path.empty()) socket_path = cache_dir + "/control.sock";
  bool wait = false;
  for (const auto& f : flags) wait = wait || f == "--wait";
  if (timeout < 0) timeout = wait ? 0 : 60;

  std::vector<std::string> request{words[0]};
  request.insert(request.end(), flags.begin(), flags.end());
  request.insert(request.end(), words.begin() + 1, words.end());

  if (auto address = unix_socket_address(socket_path); !address) return die(2, address.error().message);
  auto connected = connect_unix_socket(socket_path);
  if (!connected) {
    int e = connected.error().code;
    if (e == ENOENT) {
      return die(3, "no control socket at " + socket_path +
                        ": is lazystore running? (give its cache with --cache DIR or its -o control=PATH with --socket PATH)");
    }
    if (e == ECONNREFUSED) return die(3, "nothing listens on " + socket_path + ": the lazystore daemon is not running");
    if (e == EACCES) return die(3, "permission denied on " + socket_path + ": lazystore-ctl must run as root");
    return die(3, "cannot connect to " + socket_path + ": " + std::strerror(e));
  }
  Fd fd = std::move(*connected);
  if (auto sent = send_all(fd.get(), encode_request(request)); !sent) {
    return die(3, "sending the request: " + sent.error().message);
  }
  std::string answer;
  char buf[65536];
  int poll_ms = timeout > 0 ? static_cast<int>(timeout * 1000) : -1;
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    int ready = ::poll(&p, 1, poll_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) return die(3, "no answer from the daemon within " + std::to_string(timeout) + " s");
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return die(3, std::string("reading the answer: ") + std::strerror(errno));
    if (n == 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  if (answer.empty()) return die(3, "the daemon closed the connection without an answer");
  auto response = parse_response(answer);
  if (!response) return die(3, response.error().message);
  if (!response->ok) return die(1, response->text);
  std::fwrite(response->text.data(), 1, response->text.size(), stdout);
  return 0;
}
