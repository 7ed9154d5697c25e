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
// `lazystore-ctl … --json` prints and what `user.lazystore.stats` holds. A plain type declares
// its members once, in a JsonTable; the pair comes from the table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "result.h"
#include "stats.h"

namespace lazystore {

// Objects keep their keys in the order written: the table's order, not the alphabet's.
using Json = nlohmann::ordered_json;

inline constexpr int kControlProtocol = 1;
inline constexpr size_t kMaxRequestBytes = 4 << 20;   // the daemon refuses longer lines
inline constexpr size_t kMaxResponseBytes = 4 << 20;  // lazystore-ctl refuses longer lines
inline constexpr size_t kMaxJsonDepth = 16;

enum class Command { Stats, Status, Prefetch, Evict, Verify, CacheUsage, Reads };
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

// ---- plain types as tables of members ----

// A member of T and its JSON key.
template <class T, class M>
struct JsonField {
  const char* key;
  M T::*member;
};

// Specialized for a plain type: `fields`, a tuple of JsonField in the order the JSON has them.
template <class T>
struct JsonTable {};

template <class T>
concept HasJsonTable = requires {
  JsonTable<T>::fields;
};

// An unsigned JSON number; std::invalid_argument for anything else (nlohmann would turn -1 into
// 2^64-1).
uint64_t json_u64(const Json& j);

template <HasJsonTable T>
void to_json(Json& j, const T& v) {
  j = Json::object();
  std::apply([&](const auto&... field) { ((j[field.key] = v.*field.member), ...); }, JsonTable<T>::fields);
}

template <HasJsonTable T>
void from_json(const Json& j, T& v) {
  auto read = [&](const auto& field) {
    auto& out = v.*field.member;
    if constexpr (std::is_same_v<std::remove_reference_t<decltype(out)>, uint64_t>)
      out = json_u64(j.at(field.key));
    else
      j.at(field.key).get_to(out);
  };
  std::apply([&](const auto&... field) { (read(field), ...); }, JsonTable<T>::fields);
}

template <>
struct JsonTable<MountIdentity> {
  static constexpr std::tuple fields{
      JsonField{"source", &MountIdentity::source}, JsonField{"mountpoint", &MountIdentity::mountpoint},
      JsonField{"control_socket", &MountIdentity::control_socket}, JsonField{"version", &MountIdentity::version}};
};

template <>
struct JsonTable<LastErrorSnapshot> {
  static constexpr std::tuple fields{JsonField{"time", &LastErrorSnapshot::time},
                                     JsonField{"level", &LastErrorSnapshot::level},
                                     JsonField{"message", &LastErrorSnapshot::message}};
};

// ---- the results, one per command ----

struct CacheUsage {
  uint64_t cache_bytes = 0;
  uint64_t cache_limit = 0;
  bool operator==(const CacheUsage&) const = default;
};
template <>
struct JsonTable<CacheUsage> {
  static constexpr std::tuple fields{JsonField{"cache_bytes", &CacheUsage::cache_bytes},
                                     JsonField{"cache_limit", &CacheUsage::cache_limit}};
};

struct EvictResult {
  uint64_t files = 0;
  uint64_t bytes = 0;         // disk bytes freed
  uint64_t pinned_files = 0;  // kept because they are open
  bool operator==(const EvictResult&) const = default;
};
template <>
struct JsonTable<EvictResult> {
  static constexpr std::tuple fields{JsonField{"files", &EvictResult::files}, JsonField{"bytes", &EvictResult::bytes},
                                     JsonField{"pinned_files", &EvictResult::pinned_files}};
};

struct VerifyResult {
  uint64_t files = 0;
  uint64_t blocks = 0;  // 4 KiB blocks checked
  uint64_t bytes = 0;
  uint64_t bad_blocks = 0;
  uint64_t dropped_files = 0;
  double seconds = 0;
  bool operator==(const VerifyResult&) const = default;
};
template <>
struct JsonTable<VerifyResult> {
  static constexpr std::tuple fields{JsonField{"files", &VerifyResult::files},
                                     JsonField{"blocks", &VerifyResult::blocks},
                                     JsonField{"bytes", &VerifyResult::bytes},
                                     JsonField{"bad_blocks", &VerifyResult::bad_blocks},
                                     JsonField{"dropped_files", &VerifyResult::dropped_files},
                                     JsonField{"seconds", &VerifyResult::seconds}};
};

struct ReadList {                  // reads: the files read, first read first (fuse/read_log.h)
  std::vector<std::string> paths;  // /nix/store/HASH-NAME/…
  uint64_t dropped = 0;            // reads of files not listed: the list was full
  bool operator==(const ReadList&) const = default;
};
template <>
struct JsonTable<ReadList> {
  static constexpr std::tuple fields{JsonField{"paths", &ReadList::paths}, JsonField{"dropped", &ReadList::dropped}};
};

struct PrefetchQueued {  // prefetch without wait
  uint64_t queued_files = 0;
  uint64_t queued_bytes = 0;
  bool operator==(const PrefetchQueued&) const = default;
};
template <>
struct JsonTable<PrefetchQueued> {
  static constexpr std::tuple fields{JsonField{"queued_files", &PrefetchQueued::queued_files},
                                     JsonField{"queued_bytes", &PrefetchQueued::queued_bytes}};
};

struct PrefetchProgress {
  uint64_t files = 0;  // done so far
  uint64_t bytes = 0;
  uint64_t failed = 0;
  uint64_t total_files = 0;
  uint64_t total_bytes = 0;
  bool operator==(const PrefetchProgress&) const = default;
};
template <>
struct JsonTable<PrefetchProgress> {
  static constexpr std::tuple fields{
      JsonField{"files", &PrefetchProgress::files}, JsonField{"bytes", &PrefetchProgress::bytes},
      JsonField{"failed", &PrefetchProgress::failed}, JsonField{"total_files", &PrefetchProgress::total_files},
      JsonField{"total_bytes", &PrefetchProgress::total_bytes}};
};

struct PrefetchResult {  // prefetch with wait
  uint64_t files = 0;
  uint64_t bytes = 0;
  uint64_t failed = 0;
  double seconds = 0;
  bool operator==(const PrefetchResult&) const = default;
};
template <>
struct JsonTable<PrefetchResult> {
  static constexpr std::tuple fields{
      JsonField{"files", &PrefetchResult::files}, JsonField{"bytes", &PrefetchResult::bytes},
      JsonField{"failed", &PrefetchResult::failed}, JsonField{"seconds", &PrefetchResult::seconds}};
};

struct ServerInfo {
  int64_t pid = 0;
  uint64_t generation = 1;  // 1 for the first server of the mount, +1 per restart
  int64_t started = 0;      // unix seconds
  bool operator==(const ServerInfo&) const = default;
};
template <>
struct JsonTable<ServerInfo> {
  static constexpr std::tuple fields{JsonField{"pid", &ServerInfo::pid},
                                     JsonField{"generation", &ServerInfo::generation},
                                     JsonField{"started", &ServerInfo::started}};
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

void to_json(Json& j, const HistogramSnapshot& v);
void from_json(const Json& j, HistogramSnapshot& v);
// Flat, as before: every counter, the gauges, the histograms ({count, sum_seconds, p50, p90,
// p99, buckets}), then "mount".
void to_json(Json& j, const StatsSnapshot& v);
void from_json(const Json& j, StatsSnapshot& v);
std::string_view upstream_state_name(UpstreamState state);
void to_json(Json& j, const UpstreamHealthSnapshot& v);
void from_json(const Json& j, UpstreamHealthSnapshot& v);
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
