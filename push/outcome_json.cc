#include "outcome_json.h"

namespace lazystore {

namespace {

nlohmann::json optional_string(const std::optional<std::string>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::optional<std::string> get_optional_string(const nlohmann::json& j, const char* key) {
  const auto& value = j.at(key);
  if (value.is_null()) return std::nullopt;
  return value.get<std::string>();
}

template <class T>
Result<T> parse(std::string_view text, const char* what) {
  try {
    return nlohmann::json::parse(text).get<T>();
  } catch (const nlohmann::json::exception& e) {
    return make_error(EPROTO, std::string("bad ") + what + ": " + e.what());
  }
}

}  // namespace

void to_json(nlohmann::json& j, const PushSummary& s) {
  j = {
      {"destination", s.destination},
      {"requested", s.requested},
      {"closure_paths", s.closure_paths},
      {"closure_bytes", s.closure_bytes},
      {"missing", s.missing},
      {"missing_bytes", s.missing_bytes},
      {"copied_paths", s.copied_paths},
      {"bytes_sent", s.bytes_sent},
      {"seconds", s.seconds},
      {"protocol", s.protocol},
      {"server_version", s.server_version},
      {"server_nix_version", s.server_nix_version},
      {"root", optional_string(s.root)},
      {"dry_run", s.dry_run},
      {"persistent", s.persistent},
      {"connection_reused", s.connection_reused},
  };
}

void from_json(const nlohmann::json& j, PushSummary& s) {
  j.at("destination").get_to(s.destination);
  j.at("requested").get_to(s.requested);
  j.at("closure_paths").get_to(s.closure_paths);
  j.at("closure_bytes").get_to(s.closure_bytes);
  j.at("missing").get_to(s.missing);
  j.at("missing_bytes").get_to(s.missing_bytes);
  j.at("copied_paths").get_to(s.copied_paths);
  j.at("bytes_sent").get_to(s.bytes_sent);
  j.at("seconds").get_to(s.seconds);
  j.at("protocol").get_to(s.protocol);
  j.at("server_version").get_to(s.server_version);
  j.at("server_nix_version").get_to(s.server_nix_version);
  s.root = get_optional_string(j, "root");
  j.at("dry_run").get_to(s.dry_run);
  j.at("persistent").get_to(s.persistent);
  j.at("connection_reused").get_to(s.connection_reused);
}

void to_json(nlohmann::json& j, const PushOutcome& outcome) {
  to_json(j, outcome.summary);
  j["exit_code"] = static_cast<int>(outcome.code);
  j["error"] = outcome.code == ExitCode::Ok ? nlohmann::json(nullptr) : nlohmann::json(outcome.message);
}

void from_json(const nlohmann::json& j, PushOutcome& outcome) {
  from_json(j, outcome.summary);
  outcome.code = static_cast<ExitCode>(j.at("exit_code").get<int>());
  outcome.message = get_optional_string(j, "error").value_or("");
}

void to_json(nlohmann::json& j, const PushRequest& request) {
  j = {{"paths", request.paths}, {"root", optional_string(request.root)}, {"dry_run", request.dry_run}};
}

void from_json(const nlohmann::json& j, PushRequest& request) {
  j.at("paths").get_to(request.paths);
  request.root = get_optional_string(j, "root");
  j.at("dry_run").get_to(request.dry_run);
}

void to_json(nlohmann::json& j, const RootEntry& root) {
  j = {{"name", root.name}, {"mtime", root.mtime}, {"paths", root.paths}};
}

void to_json(nlohmann::json& j, const RootsOutcome& outcome) {
  j = {{"roots", outcome.roots},
       {"deleted", outcome.deleted},
       {"exit_code", static_cast<int>(outcome.code)},
       {"error", outcome.code == ExitCode::Ok ? nlohmann::json(nullptr) : nlohmann::json(outcome.message)}};
}

Result<PushOutcome> push_outcome_from_json(std::string_view text) { return parse<PushOutcome>(text, "push outcome"); }

Result<PushRequest> push_request_from_json(std::string_view text) { return parse<PushRequest>(text, "push request"); }

}  // namespace lazystore
