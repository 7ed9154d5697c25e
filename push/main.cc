// lazystore-push: the command line over push.h. Parses options, runs, prints, exits.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "log.h"
#include "outcome_json.h"
#include "persistent_connection.h"
#include "push.h"
#include "root_commands.h"

namespace {

using lazystore::ExitCode;

// How long connections stay open after the last push when --persist does not say.
constexpr const char* kDefaultPersist = "5m";

constexpr const char* kExitCodes = R"(Exit codes:
  0  success (also: nothing to copy, dry run)
  2  usage error, or an argument is not a store path
  3  the local store could not be read
  4  cannot connect: unknown alias/host, unreachable, unreadable ssh config
  5  host key unknown (see --accept-new-host-key) or changed
  6  authentication failed
  7  the remote command failed or speaks neither Nix protocol
  8  transfer broke off; the server is consistent, rerun to send the rest
  9  GC roots could not be set, listed or deleted
)";

int report_push(const lazystore::PushOutcome& outcome, bool json) {
  const auto& s = outcome.summary;
  if (json) std::printf("%s\n", nlohmann::json(outcome).dump(2).c_str());
  if (outcome.code != ExitCode::Ok) {
    LOG_ERROR("%s", outcome.message.c_str());
    return static_cast<int>(outcome.code);
  }
  if (json) return 0;
  if (s.dry_run) {
    for (const auto& path : s.missing) std::printf("%s\n", path.c_str());
    std::fprintf(stderr, "would copy %zu of %llu paths (%s) to %s\n", s.missing.size(),
                 static_cast<unsigned long long>(s.closure_paths), lazystore::format_bytes(s.missing_bytes).c_str(),
                 s.destination.c_str());
  } else if (s.missing.empty()) {
    std::fprintf(stderr, "all %llu paths already on %s, nothing to copy%s\n",
                 static_cast<unsigned long long>(s.closure_paths), s.destination.c_str(),
                 s.root ? (" (root '" + *s.root + "' set)").c_str() : "");
  } else {
    double rate = s.seconds > 0 ? static_cast<double>(s.bytes_sent) / s.seconds : 0;
    std::fprintf(stderr, "copied %llu of %llu paths (%s) to %s in %.1f s (%s/s)%s\n",
                 static_cast<unsigned long long>(s.copied_paths), static_cast<unsigned long long>(s.closure_paths),
                 lazystore::format_bytes(s.bytes_sent).c_str(), s.destination.c_str(), s.seconds,
                 lazystore::format_bytes(static_cast<uint64_t>(rate)).c_str(),
                 s.root ? (", root '" + *s.root + "' set").c_str() : "");
  }
  return 0;
}

int report_roots(const lazystore::RootsOutcome& outcome, bool json, bool roots_delete) {
  if (json) std::printf("%s\n", nlohmann::json(outcome).dump(2).c_str());
  if (outcome.code != ExitCode::Ok) {
    LOG_ERROR("%s", outcome.message.c_str());
    return static_cast<int>(outcome.code);
  }
  if (json) return 0;
  int64_t now = static_cast<int64_t>(std::time(nullptr));
  for (const auto& root : outcome.roots) {
    std::printf("%s\t%s ago\t%s\n", root.name.c_str(),
                lazystore::format_duration(static_cast<double>(now - root.mtime)).c_str(),
                [&] {
                  std::string paths;
                  for (const auto& p : root.paths) paths += (paths.empty() ? "" : " ") + p;
                  return paths;
                }()
                    .c_str());
  }
  if (roots_delete) {
    for (const auto& name : outcome.deleted) std::fprintf(stderr, "deleted %s\n", name.c_str());
    std::fprintf(stderr, "deleted %zu of %zu roots listed%s\n", outcome.deleted.size(), outcome.roots.size(),
                 outcome.deleted.size() < outcome.roots.size() ? " (the others were renewed meanwhile)" : "");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a dead peer is an error value, not a signal
  lazystore::set_log_program("lazystore-push");

  CLI::App app{
      "lazystore-push: copy the closure of store PATHs to a Nix server over SSH (Nix's daemon "
      "protocol, as ssh-ng:// stores speak it, or its serve protocol), sending only what the server "
      "lacks, and keep GC roots for them there.",
      "lazystore-push"};
  app.footer(kExitCodes);
  app.set_version_flag("--version", std::string("lazystore-push ") + LAZYSTORE_VERSION);

  lazystore::PushOptions push;
  std::string destination;
  std::string config_file;
  std::vector<std::string> ssh_options;
  std::vector<std::string> identities;
  std::string root;
  bool json = false;
  bool verbose = false;
  std::string progress_mode = "auto";

  app.add_option("--to", destination, "ssh config Host alias (or [user@]host) of the server")
      ->envname("BAZEL_NIX_REMOTE");
  app.add_option("-F,--ssh-config", config_file, "ssh config file (default ~/.ssh/config and /etc/ssh/ssh_config)");
  app.add_option("-o", ssh_options,
                 "ssh option Key=Value: UserKnownHostsFile, IdentityFile, User, Port, "
                 "ConnectTimeout, StrictHostKeyChecking (yes|accept-new), Ciphers, BatchMode")
      ->allow_extra_args(false);
  app.add_option("-i,--identity", identities, "private key file, tried before the config's")->allow_extra_args(false);
  app.add_flag("--accept-new-host-key", push.ssh.accept_new_host_key,
               "trust and record the key of a host not yet in known_hosts (a changed key is always refused)");
  app.add_option("--io-timeout", push.ssh.io_timeout_seconds,
                 "fail when the server sends nothing for this many seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--json", json, "print a JSON summary on stdout instead of progress");
  app.add_flag("-v,--verbose", verbose, "more messages");

  auto* push_options = app.add_option_group("push");
  push_options->add_option("--root", root, "set the server GC root NAME to the given PATHs");
  push_options->add_flag("-n,--dry-run", push.dry_run, "only print the paths the server lacks");
  push_options->add_option("--from-store", push.from_store, "local store URI (default: Nix's default store)");
  push_options->add_option("--nix-store", push.nix_store, "local nix-store program")->capture_default_str();
  std::string protocol = "auto";
  push_options
      ->add_option("--protocol", protocol,
                   "auto: Nix's daemon protocol (ssh-ng, nix-daemon --stdio), the serve protocol "
                   "(ssh, nix-store --serve) where the server has no daemon for us; or only one")
      ->check(CLI::IsMember({"auto", "daemon", "serve"}))
      ->capture_default_str();
  push_options->add_option("--daemon-command", push.daemon_command, "command run on the server for the daemon protocol")
      ->capture_default_str();
  push_options->add_option("--remote-command", push.remote_command, "command run on the server for the serve protocol")
      ->capture_default_str();
  push_options->add_option("--progress", progress_mode, "auto|bar|lines|none")
      ->check(CLI::IsMember({"auto", "bar", "lines", "none"}))
      ->capture_default_str();
  push_options->add_flag("--import-paths", push.import_paths,
                         "send with ImportPaths (servers older than Nix 2.4; implies --protocol serve)");
  std::string persist;
  std::string control_dir = lazystore::default_control_dir();
  bool stop_persist = false;
  push_options
      ->add_option("--persist", persist,
                   "keep the connections open in the background for this long after the last push "
                   "(like OpenSSH's ControlPersist), for later pushes to reuse; 0 = off (default 5m)")
      ->envname("LAZYSTORE_PUSH_PERSIST");
  app.add_option("--control-dir", control_dir, "directory of the persistent connections' sockets")
      ->capture_default_str();
  app.add_flag("--stop-persist", stop_persist, "stop the persistent connection for this destination and exit");
  app.add_option("--roots-command", push.roots_command, "command run on the server for GC roots")
      ->capture_default_str();
  push_options->add_option("PATH", push.paths, "store paths or symlinks to them (such as result)");

  lazystore::RootsOptions roots;
  std::string older_than;
  auto* roots_command = app.add_subcommand("roots", "list the server's GC roots; with --delete, remove them");
  roots_command->fallthrough();
  roots_command->add_option("--older-than", older_than,
                            "only roots last set longer ago than AGE (90s, 15m, 12h, 30d, 2w)");
  roots_command->add_flag("--delete", roots.remove, "delete the roots listed (needs --older-than or NAMEs)");
  roots_command->add_option("NAME", roots.names, "only these roots");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : static_cast<int>(ExitCode::Usage);
  }
  if (verbose) lazystore::set_log_level(lazystore::LogLevel::Info);

  auto usage = [](const std::string& message) {
    LOG_ERROR("%s", message.c_str());
    return static_cast<int>(ExitCode::Usage);
  };
  if (destination.empty()) return usage("no server: give --to ALIAS or set BAZEL_NIX_REMOTE");
  lazystore::SshOptions ssh = push.ssh;
  ssh.destination = destination;
  if (!config_file.empty()) ssh.config_file = config_file;
  ssh.identity_files = identities;
  for (const auto& option : ssh_options) {
    if (auto s = lazystore::apply_ssh_option(ssh, option); !s) return usage(s.error().message);
  }

  if (*roots_command) {
    if (!push.paths.empty()) return usage("'roots' takes root NAMEs, not store paths");
    roots.ssh = ssh;
    roots.roots_command = push.roots_command;
    if (!older_than.empty()) {
      auto age = lazystore::parse_age(older_than);
      if (!age) return usage(age.error().message);
      roots.older_than_seconds = *age;
    }
    if (roots.remove && !roots.older_than_seconds && roots.names.empty()) {
      return usage("roots --delete needs --older-than AGE or root NAMEs");
    }
    return report_roots(lazystore::run_roots(roots), json, roots.remove);
  }

  push.ssh = ssh;
  push.protocol = protocol == "daemon"  ? lazystore::Protocol::Daemon
                  : protocol == "serve" ? lazystore::Protocol::Serve
                                        : lazystore::Protocol::Auto;
  if (push.import_paths) push.protocol = lazystore::Protocol::Serve;
  if (stop_persist) {
    auto socket = lazystore::control_socket_path(control_dir, push);
    bool stopped = socket && lazystore::stop_persistent_connection(*socket);
    std::fprintf(stderr, "%s\n", stopped ? "persistent connection stopped" : "no persistent connection running");
    return 0;
  }
  if (push.paths.empty()) return usage("no PATH given (see --help)");
  if (!root.empty()) push.root = root;
  if (json || progress_mode == "none") {
    push.progress = lazystore::Progress::Mode::Quiet;
  } else if (progress_mode == "bar" || (progress_mode == "auto" && isatty(STDERR_FILENO))) {
    push.progress = lazystore::Progress::Mode::Bar;
  } else {
    push.progress = lazystore::Progress::Mode::Lines;
  }
  // Connections are shared across invocations unless --persist 0: the first push leaves them
  // open in the background, later ones reuse them.
  bool persist_asked = !persist.empty();
  auto age = lazystore::parse_age(persist_asked ? persist : kDefaultPersist);
  if (!age) return usage("--persist: " + age.error().message);
  if (*age > 0) {
    auto request = lazystore::make_push_request(push);
    if (!request) return usage(request.error().message);
    auto socket = lazystore::control_socket_path(control_dir, push);
    auto outcome = socket ? lazystore::push_over_persistent_connection(*socket, push, *request, *age)
                          : lazystore::Result<lazystore::PushOutcome>(socket.error());
    if (outcome) return report_push(*outcome, json);
    if (persist_asked) {
      LOG_WARNING("no persistent connection (%s); pushing directly", outcome.error().message.c_str());
    } else {
      LOG_INFO("no persistent connection (%s); pushing directly", outcome.error().message.c_str());
    }
  }
  return report_push(lazystore::run_push(push), json);
}
