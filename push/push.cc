#include "push.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <set>

#include "child_process.h"
#include "closure.h"
#include "log.h"
#include "root_commands.h"
#include "serve_connection.h"

namespace lazystore {

namespace {

// How many AddToStoreNar answers may be outstanding: enough to keep the link busy, few enough
// that the server's 8-byte answers never fill a channel window while we are writing.
constexpr size_t kMaxOutstanding = 64;

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

// Sends `missing` with one AddToStoreNar per path, pipelined; NARs stream from the local store.
Status send_add_to_store_nar(ServeConnection& local, ServeConnection& remote,
                             const std::vector<serve::PathInfo>& missing, Progress& progress,
                             PushSummary& summary) {
  if (missing.empty()) return {};
  if (auto s = local.write(serve::encode_dump_store_path(missing[0].path)); !s) return s;
  size_t outstanding = 0;
  for (size_t i = 0; i < missing.size(); ++i) {
    const auto& info = missing[i];
    progress.path_started(info.path, info.nar_size);
    if (auto s = remote.write(serve::encode_add_to_store_nar(info)); !s) return s;
    // The next dump is queued before this one is read, so the local side never idles.
    if (i + 1 < missing.size()) {
      if (auto s = local.write(serve::encode_dump_store_path(missing[i + 1].path)); !s) return s;
    }
    auto status = local.read_raw(info.nar_size, [&](std::span<const std::byte> data) -> Status {
      if (auto s = remote.write(data); !s) return s;
      summary.bytes_sent += data.size();
      progress.transferred(data.size());
      return {};
    });
    if (!status) return status;
    if (++outstanding > kMaxOutstanding) {
      if (auto s = remote.read_success(); !s) return s;
      --outstanding;
      ++summary.copied_paths;
      progress.path_done();
    }
  }
  while (outstanding > 0) {
    if (auto s = remote.read_success(); !s) return s;
    --outstanding;
    ++summary.copied_paths;
    progress.path_done();
  }
  return {};
}

// The same with one ImportPaths for all (servers older than serve protocol 2.5).
Status send_import_paths(ServeConnection& local, ServeConnection& remote,
                         const std::vector<serve::PathInfo>& missing, Progress& progress,
                         PushSummary& summary) {
  if (missing.empty()) return {};
  if (auto s = remote.write(serve::encode_import_paths_begin()); !s) return s;
  for (const auto& info : missing) {
    progress.path_started(info.path, info.nar_size);
    if (auto s = local.write(serve::encode_dump_store_path(info.path)); !s) return s;
    if (auto s = remote.write(serve::encode_import_path_begin()); !s) return s;
    auto status = local.read_raw(info.nar_size, [&](std::span<const std::byte> data) -> Status {
      if (auto s = remote.write(data); !s) return s;
      summary.bytes_sent += data.size();
      progress.transferred(data.size());
      return {};
    });
    if (!status) return status;
    if (auto s = remote.write(serve::encode_import_path_trailer(info)); !s) return s;
  }
  if (auto s = remote.write(serve::encode_import_paths_end()); !s) return s;
  if (auto s = remote.read_success(); !s) return s;
  summary.copied_paths = missing.size();
  for (size_t i = 0; i < missing.size(); ++i) progress.path_done();
  return {};
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
  request.import_paths = options.import_paths;
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
  std::unique_ptr<SshChannel> channel;
  std::unique_ptr<ServeConnection> connection;
  bool hello_pending = true;
  bool reused = false;
  explicit Remote(SshSession s) : session(std::move(s)) {}
};

Pusher::Pusher(PushOptions options) : options_(std::move(options)) {}

Pusher::~Pusher() {
  // Orderly shutdown: both serve processes exit on EOF.
  if (remote_) (void)remote_->channel->close_write();
  if (local_) (void)local_->process.close_write();
}

void Pusher::drop_local() { local_.reset(); }

void Pusher::drop_remote() {
  if (remote_) (void)remote_->channel->close_write();
  remote_.reset();
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

  if (!remote_) {
    auto session = SshSession::connect(options_.ssh);
    if (!session) return fail(std::move(outcome), ssh_exit_code(session.error()), session.error().message);
    LOG_INFO("%.3f s: connected to %s", elapsed(), session->description().c_str());
    auto remote = std::make_unique<Remote>(std::move(*session));
    auto channel = remote->session.exec(options_.remote_command);
    if (!channel) return fail(std::move(outcome), ExitCode::Remote, channel.error().message);
    remote->channel = std::make_unique<SshChannel>(std::move(*channel));
    remote->connection = std::make_unique<ServeConnection>(*remote->channel, "server");
    remote_ = std::move(remote);
    if (auto s = remote_->connection->send_hello(); !s) return remote_failed(ExitCode::Remote, s.error());
    LOG_INFO("%.3f s: started '%s' on the server", elapsed(), options_.remote_command.c_str());
  }
  ServeConnection& remote = *remote_->connection;

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
  if (auto s = remote.write(serve::encode_query_valid_paths(lock, false, *closure)); !s) {
    return remote_failed(ExitCode::Remote, s.error());
  }
  if (remote_->hello_pending) {
    if (auto s = remote.read_hello(); !s) return remote_failed(ExitCode::Remote, s.error());
    remote_->hello_pending = false;
  }
  summary.protocol = "serve";
  summary.server_version = std::to_string(serve::version_major(remote.server_version())) + "." +
                           std::to_string(serve::version_minor(remote.server_version()));
  auto valid = remote.read_path_set();
  if (!valid) return remote_failed(ExitCode::Remote, valid.error());
  LOG_INFO("%.3f s: server (serve protocol %u.%u) has %zu of them", elapsed(),
           serve::version_major(remote.server_version()), serve::version_minor(remote.server_version()),
           valid->size());
  // From here on a failure is reported, never retried: paths may have been sent.
  local_->reused = true;
  remote_->reused = true;
  std::set<std::string> present(valid->begin(), valid->end());
  std::vector<serve::PathInfo> missing;
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

  bool use_import = request.import_paths || serve::version_minor(remote.version()) < 5;
  for (const auto& info : missing) {
    if (info.nar_hash.empty() && !use_import) use_import = true;  // an old local store gave no hash
  }
  if (!missing.empty()) {
    progress.begin(missing.size(), summary.missing_bytes);
    Status sent = use_import ? send_import_paths(local, remote, missing, progress, summary)
                             : send_add_to_store_nar(local, remote, missing, progress, summary);
    progress.finish();
    if (!sent) {
      finish_time();
      drop_remote();
      drop_local();
      return fail(std::move(outcome), ExitCode::Incomplete,
                  "push incomplete (" + std::to_string(summary.copied_paths) + " of " +
                      std::to_string(missing.size()) + " paths confirmed; rerun to send the rest): " +
                      sent.error().message);
    }
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
