// The control protocol between lazystore-ctl and a mount's control socket: JSON lines both ways
// (nlohmann-json), one request per connection.
//
//   request   {"protocol":1,"command":"stats"}
//             {"protocol":1,"command":"prefetch","paths":["/nix/store/…"],"wait":true,"progress":true}
//   answer    zero or more {"progress":{…}} lines (prefetch with "progress"), then one of
//             {"ok":true,"result":{…}}   the command's data (below)
//             {"ok":false,"error":"why"}
//
// The daemon answers data; lazystore-ctl renders it (text, JSON, Prometheus). Every type below
// has one to_json/from_json pair (nlohmann's ADL serializers), which is also what
// `lazystore-ctl … --json` prints and what `user.lazystore.stats` holds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "result.h"
#include "stats.h"

namespace lazystore {

// Objects keep their keys in the order written: the table's order, not the alphabet's.
using Json = nlohmann::ordered_json;

inline constexpr int kControlProtocol = 1;
inline constexpr size_t kMaxRequestBytes = 1 << 20;   // the daemon refuses longer lines
inline constexpr size_t kMaxResponseBytes = 4 << 20;  // lazystore-ctl refuses longer lines
inline constexpr size_t kMaxJsonDepth = 16;

enum class Command { Stats, Status, Prefetch, Evict, Verify, CacheUsage };
std::string_view command_name(Command command);
std::optional<Command> parse_command(std::string_view name);

struct Request {
  Command command = Command::Stats;
  std::vector<std::string> paths;  // prefetch
  bool wait = false;               // prefetch: answer when done
  bool progress = false;           // prefetch with wait: progress lines while it runs
  bool operator==(const Request&) const = default;
};

// One line, LF-terminated. Paths must be valid UTF-8 (JSON strings): EILSEQ otherwise.
Result<std::string> encode_request(const Request& request);
// A line without or with its LF; any violation is an EINVAL (or EPROTO) with a message that
// says what is wrong, for the daemon to send back.
Result<Request> decode_request(std::string_view line);

// ---- the results, one per command ----

struct CacheUsage {
  uint64_t cache_bytes = 0;
  uint64_t cache_limit = 0;
  bool operator==(const CacheUsage&) const = default;
};

struct EvictResult {
  uint64_t files = 0;
  uint64_t bytes = 0;         // disk bytes freed
  uint64_t pinned_files = 0;  // kept because they are open
  bool operator==(const EvictResult&) const = default;
};

struct VerifyResult {
  uint64_t files = 0;
  uint64_t chunks = 0;
  uint64_t bytes = 0;
  uint64_t bad_chunks = 0;
  uint64_t dropped_files = 0;
  double seconds = 0;
  bool operator==(const VerifyResult&) const = default;
};

struct PrefetchQueued {  // prefetch without wait
  uint64_t queued_files = 0;
  uint64_t queued_bytes = 0;
  bool operator==(const PrefetchQueued&) const = default;
};

struct PrefetchProgress {
  uint64_t files = 0;  // done so far
  uint64_t bytes = 0;
  uint64_t failed = 0;
  uint64_t total_files = 0;
  uint64_t total_bytes = 0;
  bool operator==(const PrefetchProgress&) const = default;
};

struct PrefetchResult {  // prefetch with wait
  uint64_t files = 0;
  uint64_t bytes = 0;
  uint64_t failed = 0;
  double seconds = 0;
  bool operator==(const PrefetchResult&) const = default;
};

struct ServerInfo {
  int64_t pid = 0;
  uint64_t generation = 1;  // 1 for the first server of the mount, +1 per restart
  int64_t started = 0;      // unix seconds
  bool operator==(const ServerInfo&) const = default;
};

struct StatusReport {
  MountIdentity mount;
  std::string cache_dir;
  int64_t now = 0;      // the daemon's clock, unix seconds: ages are computed against it
  int64_t started = 0;  // the mount's start
  ServerInfo server;
  UpstreamHealthSnapshot upstream;
  std::optional<LastErrorSnapshot> last_error;
  StatsSnapshot stats;
  bool operator==(const StatusReport&) const = default;
};

void to_json(Json& j, const MountIdentity& v);
void from_json(const Json& j, MountIdentity& v);
void to_json(Json& j, const HistogramSnapshot& v);
void from_json(const Json& j, HistogramSnapshot& v);
// Flat, as before: every counter, the gauges, the histograms ({count, sum_seconds, p50, p90,
// p99, buckets}), then "mount".
void to_json(Json& j, const StatsSnapshot& v);
void from_json(const Json& j, StatsSnapshot& v);
std::string_view upstream_state_name(UpstreamState state);
void to_json(Json& j, const UpstreamHealthSnapshot& v);
void from_json(const Json& j, UpstreamHealthSnapshot& v);
void to_json(Json& j, const LastErrorSnapshot& v);
void from_json(const Json& j, LastErrorSnapshot& v);
void to_json(Json& j, const CacheUsage& v);
void from_json(const Json& j, CacheUsage& v);
void to_json(Json& j, const EvictResult& v);
void from_json(const Json& j, EvictResult& v);
void to_json(Json& j, const VerifyResult& v);
void from_json(const Json& j, VerifyResult& v);
void to_json(Json& j, const PrefetchQueued& v);
void from_json(const Json& j, PrefetchQueued& v);
void to_json(Json& j, const PrefetchProgress& v);
void from_json(const Json& j, PrefetchProgress& v);
void to_json(Json& j, const PrefetchResult& v);
void from_json(const Json& j, PrefetchResult& v);
void to_json(Json& j, const ServerInfo& v);
void from_json(const Json& j, ServerInfo& v);
void to_json(Json& j, const StatusReport& v);
void from_json(const Json& j, StatusReport& v);

// JSON text of a value on one line; bytes that are not UTF-8 (a file name in an error message)
// become U+FFFD instead of failing.
std::string dump_json(const Json& value);

// The value of the mount root's `user.lazystore.stats` xattr: the same JSON as `stats` answers.
std::string stats_json(const Stats& stats, uint64_t cache_bytes, uint64_t cache_limit, MountIdentity mount);

// ---- answer lines ----

std::string ok_line(const Json& result);           // with LF
std::string error_line(std::string_view message);  // with LF
std::string progress_line(const PrefetchProgress& progress);

struct Answer {
  enum class Kind { Progress, Ok, Error } kind = Kind::Error;
  Json body;          // Ok: the result; Progress: the progress object
  std::string error;  // Error
};
Result<Answer> decode_answer(std::string_view line);

// The result of an Ok answer as T; EPROTO naming what did not fit.
template <class T>
Result<T> result_as(const Json& body) {
  try {
    return body.get<T>();
  } catch (const std::exception& e) {
    return make_error(EPROTO, std::string("unexpected answer from the daemon: ") + e.what());
  }
}

// A line parsed with the protocol's limits: depth at most kMaxJsonDepth, no key twice.
Result<Json> parse_json_line(std::string_view line);

}  // namespace lazystore
