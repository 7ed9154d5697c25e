// The control protocol: golden JSON lines both ways, round trips of every type, and hostile or
// oversized requests (each refused with a message that says why).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "control_protocol.h"

namespace lazystore {
namespace {

Request prefetch(std::vector<std::string> paths, bool wait = false, bool progress = false) {
  Request r;
  r.command = Command::Prefetch;
  r.paths = std::move(paths);
  r.wait = wait;
  r.progress = progress;
  return r;
}

TEST(ControlRequest, GoldenLines) {
  Request stats;
  EXPECT_EQ(*encode_request(stats), "{\"protocol\":1,\"command\":\"stats\"}\n");
  Request status;
  status.command = Command::Status;
  EXPECT_EQ(*encode_request(status), "{\"protocol\":1,\"command\":\"status\"}\n");
  Request usage;
  usage.command = Command::CacheUsage;
  EXPECT_EQ(*encode_request(usage), "{\"protocol\":1,\"command\":\"cache-usage\"}\n");
  EXPECT_EQ(
      *encode_request(prefetch({"/nix/store/x-a"}, true, true)),
      "{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[\"/nix/store/x-a\"],\"wait\":true,\"progress\":true}\n");
  EXPECT_EQ(*encode_request(prefetch({"a\tb", "c\nd", "e\\f", "g\"h"})),
            "{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[\"a\\tb\",\"c\\nd\",\"e\\\\f\",\"g\\\"h\"],"
            "\"wait\":false}\n");
  // The daemon reads what lazystore-ctl writes, in any key order.
  auto decoded = decode_request("{\"wait\":true,\"paths\":[\"p\"],\"command\":\"prefetch\",\"protocol\":1}");
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, prefetch({"p"}, true));
  auto verify = decode_request("{\"protocol\":1,\"command\":\"verify\"}\n");
  ASSERT_TRUE(verify);
  EXPECT_EQ(verify->command, Command::Verify);
  Request reads;
  reads.command = Command::Reads;
  EXPECT_EQ(*encode_request(reads), "{\"protocol\":1,\"command\":\"reads\"}\n");
  EXPECT_EQ(decode_request("{\"protocol\":1,\"command\":\"reads\"}")->command, Command::Reads);
}

TEST(ControlRequest, RoundTripsSeparatorsEscapesAndUnicode) {
  Request r =
      prefetch({"/nix/store/x-a/with\ttab", "new\nline", "back\\slash", "quote\"", "π ünïcode", "\x01"}, true, false);
  auto line = encode_request(r);
  ASSERT_TRUE(line);
  EXPECT_EQ(line->find('\n'), line->size() - 1);  // one line, whatever the paths hold
  auto decoded = decode_request(*line);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, r);
  for (Command c : {Command::Stats, Command::Status, Command::Evict, Command::Verify, Command::CacheUsage}) {
    Request plain;
    plain.command = c;
    auto again = decode_request(*encode_request(plain));
    ASSERT_TRUE(again);
    EXPECT_EQ(again->command, c);
  }
}

TEST(ControlRequest, APathThatIsNotUtf8CannotBeSent) {
  auto line = encode_request(prefetch({"/nix/store/x-a/bad\xff"}));
  ASSERT_FALSE(line);
  EXPECT_EQ(line.error().code, EILSEQ);
}

TEST(ControlRequest, HostileLinesAreRefusedWithAReason) {
  struct Case {
    std::string line;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"", "empty line"},
      {"\n", "empty line"},
      {"stats", "not JSON"},
      {"stats\tjson", "not JSON"},
      {"{\"protocol\":1,\"command\":\"stats\"", "not JSON"},
      {"{\"protocol\":1,\"command\":\"stats\"} {}", "not JSON"},
      {"[\"stats\"]", "not a JSON object"},
      {"\"stats\"", "not a JSON object"},
      {"{\"command\":\"stats\"}", "no \"protocol\""},
      {"{\"protocol\":\"1\",\"command\":\"stats\"}", "no \"protocol\""},
      {"{\"protocol\":2,\"command\":\"stats\"}", "differ in version"},
      {"{\"protocol\":1}", "no \"command\""},
      {"{\"protocol\":1,\"command\":7}", "no \"command\""},
      {"{\"protocol\":1,\"command\":\"frobnicate\"}", "unknown command 'frobnicate'"},
      {"{\"protocol\":1,\"command\":\"stats\",\"paths\":[]}", "stats takes no \"paths\""},
      {"{\"protocol\":1,\"command\":\"prefetch\"}", "at least one PATH"},
      {"{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[]}", "at least one PATH"},
      {"{\"protocol\":1,\"command\":\"prefetch\",\"paths\":\"/nix/store/x\"}", "not an array"},
      {"{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[1]}", "not a string"},
      {"{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[\"\"]}", "an empty path"},
      {"{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[\"a\\u0000b\"]}", "NUL"},
      {"{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[\"a\"],\"wait\":1}", "not true or false"},
      {"{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[\"a\"],\"frob\":true}", "unknown field \"frob\""},
      {"{\"protocol\":1,\"command\":\"stats\",\"command\":\"evict\"}", "appears twice"},
      {"{\"protocol\":1,\"command\":\"stats\",\"x\":" + std::string(40, '[') + std::string(40, ']') + "}",
       "nested deeper"},
      {"{\"protocol\":1,\"command\":\"st\xff\xfe\"}", "not JSON"},  // not UTF-8
      {"{\"protocol\":1,\"command\":\"stats\"}\n{\"protocol\":1,\"command\":\"evict\"}", "more than one line"},
      {std::string("{\"protocol\":1,\"command\":\"st\0ats\"}", 34), "not JSON"},
      {"{\"protocol\":1e999,\"command\":\"stats\"}", "not JSON"},
  };
  for (const auto& c : cases) {
    auto decoded = decode_request(c.line);
    ASSERT_FALSE(decoded) << c.line;
    EXPECT_NE(decoded.error().message.find(c.reason), std::string::npos) << c.line << " → " << decoded.error().message;
    EXPECT_TRUE(decoded.error().message.starts_with("invalid request: ")) << decoded.error().message;
  }
}

TEST(ControlRequest, OversizedLinesAreRefusedBeforeParsing) {
  std::string path(kMaxRequestBytes, 'a');
  std::string line = "{\"protocol\":1,\"command\":\"prefetch\",\"paths\":[\"" + path + "\"]}";
  auto decoded = decode_request(line);
  ASSERT_FALSE(decoded);
  EXPECT_NE(decoded.error().message.find("longer than"), std::string::npos) << decoded.error().message;
  // Deep nesting within the size bound: refused by depth, no recursion blow-up.
  std::string deep =
      "{\"protocol\":1,\"command\":\"stats\",\"x\":" + std::string(500000, '[') + std::string(500000, ']') + "}";
  auto nested = decode_request(deep);
  ASSERT_FALSE(nested);
  EXPECT_NE(nested.error().message.find("nested deeper"), std::string::npos) << nested.error().message;
}

TEST(ControlAnswer, GoldenLines) {
  EXPECT_EQ(ok_line(EvictResult{2, 4096, 1}),
            "{\"ok\":true,\"result\":{\"files\":2,\"bytes\":4096,\"pinned_files\":1}}\n");
  EXPECT_EQ(error_line("no such path"), "{\"ok\":false,\"error\":\"no such path\"}\n");
  EXPECT_EQ(progress_line(PrefetchProgress{1, 10, 0, 3, 30}),
            "{\"progress\":{\"files\":1,\"bytes\":10,\"failed\":0,\"total_files\":3,\"total_bytes\":30}}\n");
  EXPECT_EQ(ok_line(CacheUsage{5, 6}), "{\"ok\":true,\"result\":{\"cache_bytes\":5,\"cache_limit\":6}}\n");
  EXPECT_EQ(ok_line(PrefetchQueued{1, 2}), "{\"ok\":true,\"result\":{\"queued_files\":1,\"queued_bytes\":2}}\n");
  EXPECT_EQ(ok_line(VerifyResult{1, 4, 200000, 1, 0, 0.5}),
            "{\"ok\":true,\"result\":{\"files\":1,\"blocks\":4,\"bytes\":200000,\"bad_blocks\":1,\"dropped_files\":0,"
            "\"seconds\":0.5}}\n");
  // An error message holding bytes that are not UTF-8 (a file name) is still one valid line.
  std::string line = error_line(
      "read a\xff"
      "b: EIO");
  auto answer = decode_answer(line);
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_EQ(answer->kind, Answer::Kind::Error);
  EXPECT_EQ(answer->error,
            "read a\xef\xbf\xbd"
            "b: EIO");
}

TEST(ControlAnswer, DecodesEachKindAndRefusesGarbage) {
  auto ok = decode_answer("{\"ok\":true,\"result\":{\"files\":2,\"bytes\":4096,\"pinned_files\":1}}\n");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->kind, Answer::Kind::Ok);
  auto evict = result_as<EvictResult>(ok->body);
  ASSERT_TRUE(evict);
  EXPECT_EQ(*evict, (EvictResult{2, 4096, 1}));
  auto wrong = result_as<VerifyResult>(ok->body);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, EPROTO);
  auto progress = decode_answer(progress_line(PrefetchProgress{1, 2, 3, 4, 5}));
  ASSERT_TRUE(progress);
  EXPECT_EQ(progress->kind, Answer::Kind::Progress);
  EXPECT_EQ(*result_as<PrefetchProgress>(progress->body), (PrefetchProgress{1, 2, 3, 4, 5}));
  for (std::string garbage :
       {"", "hello", "{\"ok\":true,\"output\":\"unterminated", "{\"ok\":true}", "{\"ok\":\"yes\",\"result\":{}}",
        "{\"ok\":false}", "{\"ok\":false,\"error\":3}", "[true]", "{\"ok\":true,\"result\":{}}garbage"}) {
    EXPECT_FALSE(decode_answer(garbage)) << garbage;
  }
}

StatsSnapshot sample_stats() {
  Stats stats;
  stats.chunk_hits = 7;
  stats.upstream_bytes = 4096;
  stats.server_restarts = 1;
  stats.upstream_latency.record(std::chrono::microseconds(100));
  StatsSnapshot snapshot = stats.snapshot(123, 456);
  snapshot.mount = {
      .source = "nfs://h/nix/store", .mountpoint = "/nix/store", .control_socket = "/var/cache/lazystore/control.sock"};
  return snapshot;
}

TEST(StatsJson, FlatInTableOrderWithHistogramsAndMount) {
  StatsSnapshot snapshot = sample_stats();
  std::string json = dump_json(snapshot);
  EXPECT_TRUE(json.starts_with("{\"lookups\":0,\"invalid_names\":0,\"upstream_requests\":0,\"upstream_bytes\":4096,"))
      << json;
  EXPECT_NE(json.find("\"chunk_hits\":7,"), std::string::npos);
  EXPECT_NE(json.find("\"signature_failures\":0,\"nar_downloads\":0,\"manifest_paths\":0,"
                      "\"manifest_failures\":0,\"block_hash_failures\":0,\"leaf_failures\":0,\"task_failures\":0,"
                      "\"cache_reopens\":0,"
                      "\"server_restarts\":1,\"replayed_requests\":0,\"refused_replies\":0,"
                      "\"forgotten_inodes\":0,\"metadata_partial_answers\":0,\"opendir_requests\":0,"
                      "\"readdir_requests\":0,\"open_requests\":0,\"ioctl_requests\":0,\"cache_bytes\":123,\"cache_limit\":456,"
                      "\"upstream_reachable\":1,\"upstream_latency\":{\"count\":1,\"sum_seconds\":0.0001,"
                      "\"p50\":0.000128,\"p90\":0.000128,\"p99\":0.000128,\"buckets\":[0,0,0,0,0,0,0,1,0,0"),
            std::string::npos)
      << json;
  EXPECT_TRUE(
      json.ends_with(",\"mount\":{\"source\":\"nfs://h/nix/store\",\"mountpoint\":\"/nix/store\","
                     "\"control_socket\":\"/var/cache/lazystore/control.sock\",\"version\":\"" +
                     std::string(kLazystoreVersion) + "\"}}"))
      << json;
  auto back = result_as<StatsSnapshot>(Json::parse(json));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, snapshot);
}

TEST(StatsJson, TheXattrHoldsWhatStatsAnswers) {
  Stats stats;
  stats.evictions = 4;
  MountIdentity mount{.source = "file:///srv", .mountpoint = "/mnt", .control_socket = "/s"};
  StatsSnapshot snapshot = stats.snapshot(1, 2);
  snapshot.mount = mount;
  EXPECT_EQ(stats_json(stats, 1, 2, mount), dump_json(snapshot));
  EXPECT_EQ(ok_line(snapshot), "{\"ok\":true,\"result\":" + stats_json(stats, 1, 2, mount) + "}\n");
}

TEST(StatsJson, AnOlderDaemonsMissingCountersReadAsZero) {
  auto back = result_as<StatsSnapshot>(Json::parse("{\"chunk_hits\":3,\"unknown_new_counter\":9}"));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ((*back)[Counter::chunk_hits], 3u);
  EXPECT_EQ((*back)[Counter::server_restarts], 0u);
  EXPECT_FALSE(result_as<StatsSnapshot>(Json::parse("{\"chunk_hits\":-1}")));
  EXPECT_FALSE(
      result_as<StatsSnapshot>(Json::parse("{\"read_latency\":{\"count\":1,\"sum_seconds\":0,\"buckets\":[1]}}")));
  EXPECT_FALSE(result_as<StatsSnapshot>(Json::parse("[1,2]")));
}

TEST(TableJson, KeysInTheTablesOrderCountsUnsigned) {
  EXPECT_EQ(dump_json(Json(EvictResult{.files = 3, .bytes = 4096, .pinned_files = 1})),
            "{\"files\":3,\"bytes\":4096,\"pinned_files\":1}");
  EXPECT_EQ(dump_json(Json(ServerInfo{.pid = 7, .generation = 2, .started = -1})),
            "{\"pid\":7,\"generation\":2,\"started\":-1}");
  EXPECT_EQ(dump_json(Json(MountIdentity{.source = "s", .mountpoint = "m", .control_socket = "c", .version = "v"})),
            "{\"source\":\"s\",\"mountpoint\":\"m\",\"control_socket\":\"c\",\"version\":\"v\"}");
  ReadList reads{.paths = {"/nix/store/a-x/f"}, .dropped = 2};
  EXPECT_EQ(dump_json(Json(reads)), "{\"paths\":[\"/nix/store/a-x/f\"],\"dropped\":2}");
  EXPECT_EQ(*result_as<ReadList>(Json(reads)), reads);
  VerifyResult verify{.files = 1, .blocks = 2, .bytes = 3, .bad_blocks = 4, .dropped_files = 5, .seconds = 0.5};
  auto back = result_as<VerifyResult>(Json(verify));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, verify);
  EXPECT_FALSE(result_as<EvictResult>(Json::parse("{\"files\":-1,\"bytes\":0,\"pinned_files\":0}")));
  EXPECT_FALSE(result_as<EvictResult>(Json::parse("{\"files\":1.5,\"bytes\":0,\"pinned_files\":0}")));
  EXPECT_FALSE(result_as<EvictResult>(Json::parse("{\"files\":1,\"bytes\":0}")));
  EXPECT_FALSE(result_as<LastErrorSnapshot>(Json::parse("{\"time\":\"x\",\"level\":\"error\",\"message\":\"m\"}")));
}

TEST(StatusJson, RoundTripsAndSaysTheMountOnce) {
  StatusReport status;
  status.stats = sample_stats();
  status.mount = status.stats.mount;
  status.cache_dir = "/var/cache/lazystore";
  status.now = 1764072000;
  status.started = 1764070000;
  status.server = {4242, 2, 1764071000};
  status.upstream = {UpstreamState::Unreachable, 1764071500, 1764071400, 1764071990};
  status.last_error = LastErrorSnapshot{1764071990, "warning", "read x: connection refused"};
  Json j = status;
  EXPECT_EQ(j.at("upstream").dump(),
            "{\"state\":\"unreachable\",\"since\":1764071500,\"last_success\":1764071400,\"last_failure\":1764071990}");
  EXPECT_EQ(j.at("server").dump(), "{\"pid\":4242,\"generation\":2,\"started\":1764071000}");
  EXPECT_FALSE(j.at("stats").contains("mount"));
  EXPECT_EQ(j.at("mount").at("mountpoint"), "/nix/store");
  auto back = result_as<StatusReport>(j);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, status);
  status.last_error.reset();
  j = status;
  EXPECT_TRUE(j.at("last_error").is_null());
  EXPECT_EQ(*result_as<StatusReport>(j), status);
}

}  // namespace
}  // namespace lazystore
