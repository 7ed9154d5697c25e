#include "control_protocol.h"

#include <cerrno>
#include <set>

namespace lazystore {
namespace {

constexpr std::pair<Command, std::string_view> kCommands[] = {
    {Command::Stats, "stats"}, {Command::Status, "status"}, {Command::Prefetch, "prefetch"},
    {Command::Evict, "evict"}, {Command::Verify, "verify"}, {Command::CacheUsage, "cache-usage"},
    {Command::Reads, "reads"},
};

constexpr double kQuantiles[] = {0.5, 0.9, 0.99};
constexpr const char* kQuantileKeys[] = {"p50", "p90", "p99"};

Error invalid(const std::string& what) { return make_error(EINVAL, "invalid request: " + what); }

// An unsigned member of an object; 0 when absent (a daemon older than the counter).
uint64_t optional_u64(const Json& j, const std::string& key) {
  auto it = j.find(key);
  return it == j.end() ? 0 : json_u64(*it);
}

}  // namespace

uint64_t json_u64(const Json& j) {
  if (!j.is_number_unsigned()) throw std::invalid_argument("expected a count, got " + j.dump());
  return j.get<uint64_t>();
}

std::string_view command_name(Command command) {
  for (const auto& [c, name] : kCommands) {
    if (c == command) return name;
  }
  return "?";
}

std::optional<Command> parse_command(std::string_view name) {
  for (const auto& [c, n] : kCommands) {
    if (n == name) return c;
  }
  return std::nullopt;
}

std::string dump_json(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string stats_json(const Stats& stats, uint64_t cache_bytes, uint64_t cache_limit, MountIdentity mount) {
  StatsSnapshot snapshot = stats.snapshot(cache_bytes, cache_limit);
  snapshot.mount = std::move(mount);
  return dump_json(snapshot);
}

Result<Json> parse_json_line(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  // Objects still open, with the keys seen in each: a key given twice is an error (which of
  // the two would count?), and so is nesting deeper than any message of ours.
  std::vector<std::set<std::string>> open;
  std::string problem;
  auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (static_cast<size_t>(depth) > kMaxJsonDepth) {
      problem = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      throw std::runtime_error(problem);
    }
    if (event == Json::parse_event_t::object_start) {
      open.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (event == Json::parse_event_t::key && !open.empty()) {
      if (!open.back().insert(parsed.get<std::string>()).second) {
        problem = "the key \"" + parsed.get<std::string>() + "\" appears twice";
        throw std::runtime_error(problem);
      }
    }
    return true;
  };
  try {
    return Json::parse(line.begin(), line.end(), check);
  } catch (const std::exception& e) {
    return make_error(EPROTO, problem.empty() ? std::string(e.what()) : problem);
  }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

Result<std::string> encode_request(const Request& request) {
  Json j;
  j["protocol"] = kControlProtocol;
  j["command"] = command_name(request.command);
  if (request.command == Command::Prefetch) {
    j["paths"] = request.paths;
    j["wait"] = request.wait;
    if (request.progress) j["progress"] = true;
  }
  try {
    return j.dump() + "\n";  // strict: a path that is not UTF-8 cannot be named in JSON
  } catch (const Json::type_error&) {
    return make_error(EILSEQ, "a path is not valid UTF-8 (prefetch the directory that holds it)");
  }
}

Result<Request> decode_request(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (line.empty()) return invalid("empty line");
  if (line.size() > kMaxRequestBytes) return invalid("longer than " + std::to_string(kMaxRequestBytes) + " bytes");
  if (line.find('\n') != std::string_view::npos) return invalid("more than one line");
  auto parsed = parse_json_line(line);
  if (!parsed) {
    return invalid("not JSON (" + parsed.error().message + "); is lazystore-ctl of the same version as the daemon?");
  }
  const Json& j = *parsed;
  if (!j.is_object()) return invalid("not a JSON object");
  auto protocol = j.find("protocol");
  if (protocol == j.end() || !protocol->is_number_integer()) return invalid("no \"protocol\" number");
  if (*protocol != kControlProtocol) {
    return invalid("protocol " + protocol->dump() + ", this daemon speaks " + std::to_string(kControlProtocol) +
                   " (lazystore-ctl and the daemon differ in version)");
  }
  auto command_field = j.find("command");
  if (command_field == j.end() || !command_field->is_string()) return invalid("no \"command\" string");
  auto command = parse_command(command_field->get<std::string>());
  if (!command) {
    return invalid("unknown command '" + command_field->get<std::string>() +
                   "' (stats, status, prefetch, evict, verify, cache-usage)");
  }
  Request request;
  request.command = *command;
  for (const auto& [key, value] : j.items()) {
    if (key == "protocol" || key == "command") continue;
    if (request.command != Command::Prefetch)
      return invalid(command_field->get<std::string>() + " takes no \"" + key + "\"");
    if (key == "paths") {
      if (!value.is_array()) return invalid("\"paths\" is not an array");
      for (const auto& path : value) {
        if (!path.is_string()) return invalid("a path is not a string");
        request.paths.push_back(path.get<std::string>());
        if (request.paths.back().empty()) return invalid("an empty path");
        if (request.paths.back().find('\0') != std::string::npos) return invalid("a path holds a NUL byte");
      }
    } else if (key == "wait" || key == "progress") {
      if (!value.is_boolean()) return invalid("\"" + key + "\" is not true or false");
      (key == "wait" ? request.wait : request.progress) = value.get<bool>();
    } else {
      return invalid("unknown field \"" + key + "\"");
    }
  }
  if (request.command == Command::Prefetch && request.paths.empty()) return invalid("prefetch needs at least one PATH");
  return request;
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

std::string ok_line(const Json& result) {
  Json j;
  j["ok"] = true;
  j["result"] = result;
  return dump_json(j) + "\n";
}

std::string error_line(std::string_view message) {
  Json j;
  j["ok"] = false;
  j["error"] = message;
  return dump_json(j) + "\n";
}

std::string progress_line(const PrefetchProgress& progress) {
  Json j;
  j["progress"] = progress;
  return dump_json(j) + "\n";
}

Result<Answer> decode_answer(std::string_view line) {
  auto parsed = parse_json_line(line);
  auto unexpected = [&](const std::string& why) {
    return make_error(EPROTO, "unexpected answer from the daemon (" + why + "): " + std::string(line.substr(0, 200)));
  };
  if (!parsed) return unexpected(parsed.error().message);
  if (!parsed->is_object()) return unexpected("not an object");
  Answer answer;
  if (auto progress = parsed->find("progress"); progress != parsed->end()) {
    answer.kind = Answer::Kind::Progress;
    answer.body = *progress;
    return answer;
  }
  auto ok = parsed->find("ok");
  if (ok == parsed->end() || !ok->is_boolean()) return unexpected("no \"ok\"");
  if (ok->get<bool>()) {
    auto result = parsed->find("result");
    if (result == parsed->end()) return unexpected("no \"result\"");
    answer.kind = Answer::Kind::Ok;
    answer.body = *result;
    return answer;
  }
  auto error = parsed->find("error");
  if (error == parsed->end() || !error->is_string()) return unexpected("no \"error\" string");
  answer.kind = Answer::Kind::Error;
  answer.error = error->get<std::string>();
  return answer;
}

// ---------------------------------------------------------------------------------------------
// The types
// ---------------------------------------------------------------------------------------------

void to_json(Json& j, const HistogramSnapshot& v) {
  j = Json::object();
  j["count"] = v.count;
  j["sum_seconds"] = v.sum_seconds;
  for (size_t i = 0; i < std::size(kQuantiles); ++i) j[kQuantileKeys[i]] = v.percentile(kQuantiles[i]);
  j["buckets"] = v.buckets;
}
void from_json(const Json& j, HistogramSnapshot& v) {
  v.count = json_u64(j.at("count"));
  v.sum_seconds = j.at("sum_seconds").get<double>();
  const Json& buckets = j.at("buckets");
  if (!buckets.is_array() || buckets.size() != HistogramSnapshot::kBuckets) {
    throw std::invalid_argument("a histogram needs " + std::to_string(HistogramSnapshot::kBuckets) + " buckets");
  }
  for (size_t i = 0; i < HistogramSnapshot::kBuckets; ++i) v.buckets[i] = json_u64(buckets[i]);
}

void to_json(Json& j, const StatsSnapshot& v) {
  j = Json::object();
  size_t i = 0;
  for (const MetricInfo& m : metric_table()) {
    std::string name(m.name);
    if (m.kind == MetricKind::Counter) {
      j[name] = v.counters[i];
    } else if (m.kind == MetricKind::Gauge) {
      j[name] = v.gauges[i - kCounterCount];
    } else {
      j[name] = v.histograms[i - kCounterCount - kGaugeCount];
    }
    ++i;
  }
  j["mount"] = v.mount;
}
void from_json(const Json& j, StatsSnapshot& v) {
  if (!j.is_object()) throw std::invalid_argument("stats are not an object");
  size_t i = 0;
  for (const MetricInfo& m : metric_table()) {
    std::string name(m.name);
    if (m.kind == MetricKind::Counter) {
      v.counters[i] = optional_u64(j, name);
    } else if (m.kind == MetricKind::Gauge) {
      v.gauges[i - kCounterCount] = optional_u64(j, name);
    } else if (auto it = j.find(name); it != j.end()) {
      v.histograms[i - kCounterCount - kGaugeCount] = it->get<HistogramSnapshot>();
    }
    ++i;
  }
  if (auto it = j.find("mount"); it != j.end()) v.mount = it->get<MountIdentity>();
}

std::string_view upstream_state_name(UpstreamState state) {
  switch (state) {
    case UpstreamState::Reachable: return "reachable";
    case UpstreamState::Unreachable: return "unreachable";
    case UpstreamState::Unknown: break;
  }
  return "unknown";
}

void to_json(Json& j, const UpstreamHealthSnapshot& v) {
  j = Json{{"state", upstream_state_name(v.state)},
           {"since", v.since},
           {"last_success", v.last_success},
           {"last_failure", v.last_failure}};
}
void from_json(const Json& j, UpstreamHealthSnapshot& v) {
  auto state = j.at("state").get<std::string>();
  v.state = state == "reachable"     ? UpstreamState::Reachable
            : state == "unreachable" ? UpstreamState::Unreachable
                                     : UpstreamState::Unknown;
  v.since = j.at("since").get<int64_t>();
  v.last_success = j.at("last_success").get<int64_t>();
  v.last_failure = j.at("last_failure").get<int64_t>();
}

void to_json(Json& j, const StatusReport& v) {
  j = Json::object();
  j["mount"] = v.mount;
  j["cache_dir"] = v.cache_dir;
  j["now"] = v.now;
  j["started"] = v.started;
  j["server"] = v.server;
  j["upstream"] = v.upstream;
  j["last_error"] = v.last_error ? Json(*v.last_error) : Json(nullptr);
  Json stats = v.stats;
  stats.erase("mount");  // said once, above
  j["stats"] = std::move(stats);
}
void from_json(const Json& j, StatusReport& v) {
  v.mount = j.at("mount").get<MountIdentity>();
  v.cache_dir = j.at("cache_dir").get<std::string>();
  v.now = j.at("now").get<int64_t>();
  v.started = j.at("started").get<int64_t>();
  v.server = j.at("server").get<ServerInfo>();
  v.upstream = j.at("upstream").get<UpstreamHealthSnapshot>();
  const Json& last = j.at("last_error");
  v.last_error = last.is_null() ? std::nullopt : std::optional(last.get<LastErrorSnapshot>());
  v.stats = j.at("stats").get<StatsSnapshot>();
  v.stats.mount = v.mount;
}

}  // namespace lazystore
