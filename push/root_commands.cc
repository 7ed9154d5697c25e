#include "root_commands.h"

#include <algorithm>

namespace lazystore {

namespace {

// Runs `command` on a new channel with `input` on its stdin; its stdout into `output`.
Status run_remote(SshSession& session, const std::string& command, const std::string& input, std::string* output) {
  auto channel = session.exec(command);
  if (!channel) return channel.error();
  if (!input.empty()) {
    if (auto s = channel->write_all(input); !s) return s;
  }
  if (auto s = channel->close_write(); !s) return s;
  auto status = channel->finish(output);
  if (!status) return status.error();
  if (*status != 0) {
    std::string tail = channel->stderr_tail();
    return make_error(EPROTO, "'" + command + "' failed on the server" +
                                  (tail.empty() ? " (exit status " + std::to_string(*status) + ")" : ": " + tail));
  }
  return {};
}

RootsOutcome fail(RootsOutcome outcome, ExitCode code, std::string message) {
  outcome.code = code;
  outcome.message = std::move(message);
  return outcome;
}

}  // namespace

Status set_root(SshSession& session, const std::string& roots_command, const std::string& root,
                const std::vector<std::string>& paths) {
  auto status = run_remote(session, roots_add_command(roots_command, root), roots_add_input(paths), nullptr);
  if (!status) return make_error(status.error().code, "setting GC root '" + root + "': " + status.error().message);
  return {};
}

RootsOutcome run_roots(const RootsOptions& options) {
  RootsOutcome outcome;
  for (const auto& name : options.names) {
    if (!is_valid_listed_root_name(name))
      return fail(std::move(outcome), ExitCode::Usage, "bad root name '" + name + "'");
  }
  auto session = SshSession::connect(options.ssh);
  if (!session) return fail(std::move(outcome), ssh_exit_code(session.error()), session.error().message);
  // The server judges ages by its own clock, when listing and again when deleting.
  std::string listing;
  if (auto s =
          run_remote(*session, roots_list_command(options.roots_command, options.older_than_seconds), "", &listing);
      !s) {
    return fail(std::move(outcome), ExitCode::Roots, s.error().message);
  }
  auto roots = parse_root_listing(listing);
  if (!roots) return fail(std::move(outcome), ExitCode::Roots, roots.error().message);
  for (auto& root : *roots) {
    if (!options.names.empty() &&
        std::find(options.names.begin(), options.names.end(), root.name) == options.names.end()) {
      continue;
    }
    outcome.roots.push_back(std::move(root));
  }
  if (options.remove && !outcome.roots.empty()) {
    std::vector<std::string> names;
    for (const auto& root : outcome.roots) names.push_back(root.name);
    std::string printed;
    if (auto s = run_remote(*session, roots_delete_command(options.roots_command, names, options.older_than_seconds),
                            "", &printed);
        !s) {
      return fail(std::move(outcome), ExitCode::Roots, s.error().message);
    }
    auto deleted = parse_deleted_names(printed);
    if (!deleted) return fail(std::move(outcome), ExitCode::Roots, deleted.error().message);
    outcome.deleted = std::move(*deleted);
  }
  return outcome;
}

}  // namespace lazystore
