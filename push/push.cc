#include "push.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "child_process.h"
#include "closure.h"
#include "daemon_destination.h"
#include "log.h"
#include "root_commands.h"
#include "serve_connection.h"
#include "serve_destination.h"

namespace lazystore {

namespace {

PushOutcome fail(PushOutcome outcome, ExitCode code, std::string message) {
  outcome.code = code;
  outcome.message = std::move(message);
  return outcome;
}

std::vector<std::string> local_store_command(const PushOptions& options) {
  std::vector<std::string> argv{options.nix_store};
  if (!options.from_store.empty()) {
    argv.push_back("--store");
    argv.push_back(options.from_store);
  }
  argv.push_back("--serve");
  return argv;
}

}  // namespace

Result<PushRequest> make_push_request(const PushOptions& options) {
  PushRequest request;
  if (options.root && !is_valid_root_name(*options.root)) {
    return make_error(EINVAL, "bad root name '" + *options.root + "' (use 1-100 of [A-Za-z0-9._+-])");
  }
  std::set<std::string> seen;
  for (const auto& argument : options.paths) {
    auto path = resolve_store_path(argument);
    if (!path) return path.error();
    if (seen.insert(*path).second) request.paths.push_back(*path);
  }
  request.root = options.root;
  request.dry_run = options.dry_run;
  return request;
}

struct Pusher::Local {
  ChildProcess process;
  ServeConnection connection;
  bool hello_pending = true;
  bool reused = false;
  explicit Local(ChildProcess p) : process(std::move(p)), connection(process, "local nix-store") {}
};

struct Pusher::Remote {
  SshSession session;
  std::unique_ptr<Destination> destination;
  bool reused = false;
  explicit Remote(SshSession s) : session(std::move(s)) {}
};

Pusher::Pusher(PushOptions options) : options_(std::move(options)) {
  if (options_.import_paths) options_.protocol = Protocol::Serve;  // ImportPaths is the serve protocol's
}

Pusher::~Pusher() {
  // Orderly shutdown: both store processes exit on EOF.
  if (remote_) remote_->destination->close();
  if (local_) (void)local_->process.close_write();
}

void Pusher::drop_local() { local_.reset(); }

void Pusher::drop_remote() {
  if (remote_) remote_->destination->close();
  remote_.reset();
}

Result<std::unique_ptr<Destination>> Pusher::open_destination(SshSession& session, Protocol protocol) {
  const std::string& command = protocol == Protocol::Serve ? options_.remote_command : options_.daemon_command;
  auto channel = session.exec(command);
  if (!channel) return channel.error();
  std::unique_ptr<Destination> destination;
  if (protocol == Protocol::Serve) {
    destination = std::make_unique<ServeDestination>(std::move(*channel), options_.import_paths);
  } else {
    destination = std::make_unique<DaemonDestination>(std::move(*channel));
  }
  if (auto s = destination->start(); !s) return s.error();
  return destination;
}

PushOutcome Pusher::push(const PushRequest& request, Progress& progress) {
  bool retry = false;
  PushOutcome outcome = attempt(request, progress, retry);
  // A kept connection may have gone stale (server restarted, idle timeout): open a fresh one
  // and try once more; nothing was sent yet when `retry` is set.
  if (retry) outcome = attempt(request, progress, retry);
  return outcome;
}

PushOutcome Pusher::attempt(const PushRequest& request, Progress& progress, bool& retry) {
  PushOutcome outcome;
  PushSummary& summary = outcome.summary;
  summary.destination = options_.ssh.destination;
  summary.root = request.root;
  summary.requested = request.paths;
  summary.dry_run = request.dry_run;
  auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto finish_time = [&] { summary.seconds = elapsed(); };
  bool may_retry = !retry;
  retry = false;
  auto local_failed = [&](const Error& error) {
    bool reused = local_ && local_->reused;
    drop_local();
    retry = may_retry && reused;
    return fail(std::move(outcome), ExitCode::LocalStore, error.message);
  };
  auto remote_failed = [&](ExitCode code, const Error& error) {
    bool reused = remote_ && remote_->reused;
    drop_remote();
    retry = may_retry && reused;
    return fail(std::move(outcome), code, error.message);
  };

  // Start the local store first: it answers while the SSH handshake runs.
  if (!local_) {
    auto process = ChildProcess::spawn(local_store_command(options_));
    if (!process) return fail(std::move(outcome), ExitCode::LocalStore, process.error().message);
    local_ = std::make_unique<Local>(std::move(*process));
    if (auto s = local_->connection.send_hello(); !s) return local_failed(s.error());
  }
  ServeConnection& local = local_->connection;
  if (auto s = local.write(serve::encode_query_closure(false, request.paths)); !s) return local_failed(s.error());

  Protocol first = options_.protocol == Protocol::Serve ? Protocol::Serve : Protocol::Daemon;
  summary.connection_reused = remote_ != nullptr;
  if (!remote_) {
    auto session = SshSession::connect(options_.ssh);
    if (!session) return fail(std::move(outcome), ssh_exit_code(session.error()), session.error().message);
    LOG_INFO("%.3f s: connected to %s", elapsed(), session->description().c_str());
    auto remote = std::make_unique<Remote>(std::move(*session));
    auto destination = open_destination(remote->session, first);
    if (!destination) return fail(std::move(outcome), ExitCode::Remote, destination.error().message);
    remote->destination = std::move(*destination);
    remote_ = std::move(remote);
  }

  // The closure and its path infos, from the local store.
  if (local_->hello_pending) {
    if (auto s = local.read_hello(); !s) return local_failed(s.error());
    local_->hello_pending = false;
  }
  auto closure = local.read_path_set();
  if (!closure) return local_failed(closure.error());
  if (auto s = local.write(serve::encode_query_path_infos(*closure)); !s) return local_failed(s.error());
  auto infos = local.read_path_infos();
  if (!infos) return local_failed(infos.error());
  if (infos->size() != closure->size()) {
    return local_failed(make_error(EPROTO, "local nix-store: some paths of the closure are not valid"));
  }
  auto ordered = order_by_references(std::move(*infos));
  if (!ordered) return fail(std::move(outcome), ExitCode::LocalStore, "local closure: " + ordered.error().message);
  summary.closure_paths = ordered->size();
  for (const auto& info : *ordered) summary.closure_bytes += info.nar_size;
  LOG_INFO("%.3f s: local closure of %zu paths", elapsed(), ordered->size());

  // One round trip: which of them does the server have? With a root to set, the server also
  // holds temporary roots on them until the root exists, so its GC cannot race us.
  bool lock = request.root.has_value() && !request.dry_run;
  if (auto s = remote_->destination->send_query(*closure, lock); !s) return remote_failed(ExitCode::Remote, s.error());
  auto valid = remote_->destination->read_valid();
  if (!valid && valid.error().code == kNoDaemon && options_.protocol == Protocol::Auto && !remote_->reused) {
    // No nix-daemon --stdio for us there (an older forced command, no daemon installed): the
    // serve protocol, on a new channel of the same session.
    LOG_INFO("%.3f s: %s; falling back to '%s'", elapsed(), valid.error().message.c_str(),
             options_.remote_command.c_str());
    remote_->destination->close();
    auto destination = open_destination(remote_->session, Protocol::Serve);
    if (!destination) return remote_failed(ExitCode::Remote, destination.error());
    remote_->destination = std::move(*destination);
    if (auto s = remote_->destination->send_query(*closure, lock); !s)
      return remote_failed(ExitCode::Remote, s.error());
    valid = remote_->destination->read_valid();
  }
  if (!valid) return remote_failed(ExitCode::Remote, valid.error());
  Destination& remote = *remote_->destination;
  summary.protocol = remote.protocol();
  summary.server_version = remote.version();
  summary.server_nix_version = remote.nix_version();
  LOG_INFO("%.3f s: server (%s protocol %s) has %zu of them", elapsed(), remote.protocol(),
           summary.server_version.c_str(), valid->size());
  // From here on a failure is reported, never retried: paths may have been sent.
  local_->reused = true;
  remote_->reused = true;
  std::set<std::string> present(valid->begin(), valid->end());
  std::vector<PathInfo> missing;
  for (auto& info : *ordered) {
    if (present.count(info.path) != 0) continue;
    summary.missing.push_back(info.path);
    summary.missing_bytes += info.nar_size;
    missing.push_back(std::move(info));
  }

  if (request.dry_run) {
    finish_time();
    return outcome;
  }

  if (!missing.empty()) {
    progress.begin(missing.size(), summary.missing_bytes);
    Status sent = remote.send(local, missing, progress, summary.copied_paths, summary.bytes_sent);
    progress.finish();
    if (!sent) {
      finish_time();
      drop_remote();
      drop_local();
      if (sent.error().code == kDaemonError) {
        // The daemon read everything and refused (an untrusted key's unsigned path, say): a
        // rerun would be refused again.
        return fail(std::move(outcome), ExitCode::Remote,
                    "the server refused the paths (" + std::to_string(summary.copied_paths) + " of " +
                        std::to_string(missing.size()) + " confirmed): " + sent.error().message);
      }
      return fail(std::move(outcome), ExitCode::Incomplete,
                  "push incomplete (" + std::to_string(summary.copied_paths) + " of " + std::to_string(missing.size()) +
                      " paths confirmed; rerun to send the rest): " + sent.error().message);
    }
    LOG_INFO("%.3f s: %zu paths sent", elapsed(), missing.size());
  }

  if (request.root) {
    if (auto s = set_root(remote_->session, options_.roots_command, *request.root, summary.requested); !s) {
      finish_time();
      return fail(std::move(outcome), ExitCode::Roots, s.error().message);
    }
  }
  finish_time();
  return outcome;
}

PushOutcome run_push(const PushOptions& options) {
  auto request = make_push_request(options);
  if (!request) {
    PushOutcome outcome;
    outcome.summary.destination = options.ssh.destination;
    return fail(std::move(outcome), ExitCode::Usage, request.error().message);
  }
  Progress progress(options.progress);
  Pusher pusher(options);
  return pusher.push(*request, progress);
}

}  // namespace lazystore
