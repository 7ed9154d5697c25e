// Golden-byte tests of the worker-protocol wire code (common/worker_protocol.*) against what
// Debian's Nix 2.8 really sent and answered over ssh-ng, recorded by
// data/record_worker_protocol.sh: `nix copy --to ssh-ng://` of a 2-path closure (both
// directions), the daemon's side of a `nix-build --store ssh-ng://`, and an untrusted daemon
// refusing an unsigned path.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>

#include "little_endian.h"
#include "worker_protocol.h"
#include "test_support.h"

namespace lazystore::worker {
namespace {

WireReader reader_over(const std::string& bytes) {
  return WireReader(nar_source_from(std::as_bytes(std::span(bytes.data(), bytes.size()))), "daemon protocol");
}

const std::string kTree = "/nix/store/pjzqbfyaqbirin1f2hjl4zvnk9xmhmrl-tree";
const std::string kNode = "/nix/store/rdyzyar2l8z5nxgqx5n00kppyb7fqwcp-node";

// The two paths as the serve protocol's QueryPathInfos describes them (narHash in nix32), with
// the registration time nix copy sent.
PathInfo tree_info() {
  PathInfo info;
  info.path = kTree;
  info.nar_hash = "sha256:1p8gbk4rxzwvq4wbwdhk63vf49mcn5ajwik28gcfip7cis6cfz27";
  info.registration_time = 1796139563;
  info.nar_size = 888;
  info.ca = "fixed:r:sha256:1p8gbk4rxzwvq4wbwdhk63vf49mcn5ajwik28gcfip7cis6cfz27";
  return info;
}

PathInfo node_info() {
  PathInfo info;
  info.path = kNode;
  info.nar_hash = "sha256:1d9csx90xhhn60j8snfjh8gzcbby84ih06bpqpvzkfi3ikayfvgs";
  info.references = {kTree};
  info.registration_time = 1796139563;
  info.nar_size = 168;
  info.ca = "text:sha256:12vahiy6b2mmp1ix08sp41ir3csxb07jkqxfapbvfvfms13h83mr";
  return info;
}

// Reads frames (u64 length, bytes) from `bytes` at `pos` up to the empty one; their payload.
std::string deframe(const std::string& bytes, size_t& pos) {
  std::string payload;
  while (true) {
    uint64_t length = get_u64_le(bytes.data() + pos);
    pos += 8;
    if (length == 0) return payload;
    payload += bytes.substr(pos, length);
    pos += length;
  }
}

TEST(WorkerProtocol, ClientHelloIsWhatNixSends) {
  std::string client = test_data("worker_nix_copy_client.bin");
  ASSERT_GE(client.size(), 32u);
  EXPECT_EQ(encode_client_hello(), client.substr(0, 32));
}

TEST(WorkerProtocol, RequestsAreWhatNixSends) {
  std::string client = test_data("worker_nix_copy_client.bin");
  size_t pos = 32;
  std::vector<std::string> paths{kTree, kNode};
  std::string query = encode_query_valid_paths(paths, false);
  ASSERT_EQ(client.substr(pos, query.size()), query);
  pos += query.size();
  // nix copy checks signatures (dontCheckSigs 0); lazystore-push sends 1 and lets the daemon
  // decide (only a trusted client may skip the check).
  std::string add = encode_add_multiple_to_store(false, false);
  ASSERT_EQ(client.substr(pos, add.size()), add);
  pos += add.size();
  std::string payload = deframe(client, pos);
  EXPECT_EQ(pos, client.size());
  // The framed stream: the count, then each path's info and NAR.
  ASSERT_EQ(get_u64_le(payload.data()), 2u);
  size_t at = 8;
  for (const PathInfo& info : {tree_info(), node_info()}) {
    auto encoded = encode_path_info(info);
    ASSERT_TRUE(encoded.ok()) << encoded.error().message;
    ASSERT_EQ(payload.substr(at, encoded->size()), *encoded) << info.path;
    at += encoded->size();
    EXPECT_EQ(payload.substr(at + 8, 13), "nix-archive-1") << "a NAR follows the info of " << info.path;
    at += info.nar_size;
  }
  EXPECT_EQ(at, payload.size());
}

TEST(WorkerProtocol, FramesAreUnpadded) {
  EXPECT_EQ(encode_frame_header(3), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(encode_frames_end(), std::string(8, '\0'));
  EXPECT_EQ(encode_add_temp_root(kTree).substr(0, 8), std::string("\x0b\0\0\0\0\0\0\0", 8));
}

TEST(WorkerProtocol, AnswersOfNix28) {
  std::string server = test_data("worker_nix_copy_server.bin");
  auto reader = reader_over(server);
  ASSERT_TRUE(decode_server_magic(reader).ok());
  auto hello = decode_server_hello(reader);
  ASSERT_TRUE(hello.ok()) << hello.error().message;
  EXPECT_EQ(hello->version, 0x122u);
  EXPECT_EQ(hello->nix_version, "2.8.0");
  auto last = decode_log_message(reader, hello->version);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->kind, Stderr::Last);
  // QueryValidPaths: none of the two.
  auto before_answer = decode_log_message(reader, hello->version);
  ASSERT_TRUE(before_answer.ok());
  EXPECT_EQ(before_answer->kind, Stderr::Last);
  auto valid = decode_path_set(reader);
  ASSERT_TRUE(valid.ok());
  EXPECT_TRUE(valid->empty());
  // AddMultipleToStore: STDERR_LAST and nothing else.
  auto done = decode_log_message(reader, hello->version);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->kind, Stderr::Last);
  EXPECT_FALSE(reader.u64().ok()) << "nothing may follow";
}

TEST(WorkerProtocol, OlderDaemonsSendNoNixVersion) {
  std::string bytes = WireWriter().u64(0x120).take();
  auto reader = reader_over(bytes);
  auto hello = decode_server_hello(reader);
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->nix_version, "");
  std::string wrong = WireWriter().u64(0x207).take();  // a serve-protocol version
  auto reader2 = reader_over(wrong);
  EXPECT_FALSE(decode_server_hello(reader2).ok());
  std::string serve_magic = WireWriter().u64(0x5452eecb).take();
  auto reader3 = reader_over(serve_magic);
  auto magic = decode_server_magic(reader3);
  ASSERT_FALSE(magic.ok());
  EXPECT_EQ(magic.error().code, EPROTO);
}

TEST(WorkerProtocol, EveryMessageOfABuildDecodes) {
  // The daemon's side of a remote build carries activities (querying, copying, building) and
  // results (build log lines). Decode every message that starts somewhere in the recording.
  std::string server = test_data("worker_nix_build_server.bin");
  ASSERT_GT(server.size(), 64u);
  std::set<std::string> texts;
  size_t results = 0, stops = 0;
  for (size_t pos = 0; pos + 8 <= server.size(); pos += 8) {
    uint64_t word = get_u64_le(server.data() + pos);
    if (word != static_cast<uint64_t>(Stderr::StartActivity) && word != static_cast<uint64_t>(Stderr::Result) &&
        word != static_cast<uint64_t>(Stderr::StopActivity)) {
      continue;
    }
    std::string rest = server.substr(pos);
    auto reader = reader_over(rest);
    auto message = decode_log_message(reader, 0x122);
    ASSERT_TRUE(message.ok()) << "at " << pos << ": " << message.error().message;
    if (message->kind == Stderr::StartActivity) texts.insert(message->text);
    if (message->kind == Stderr::Result) ++results;
    if (message->kind == Stderr::StopActivity) ++stops;
  }
  EXPECT_TRUE(texts.count("querying info about missing paths")) << texts.size();
  bool building = false;
  for (const auto& text : texts) building |= text.starts_with("building '/nix/store/") && text.ends_with(".drv'");
  EXPECT_TRUE(building);
  EXPECT_GT(results, 0u);
  EXPECT_GT(stops, 0u);
}

TEST(WorkerProtocol, ErrorOfAnUntrustedDaemon) {
  std::string server = test_data("worker_unsigned_refused_server.bin");
  auto reader = reader_over(server);
  ASSERT_TRUE(decode_server_magic(reader).ok());
  auto hello = decode_server_hello(reader);
  ASSERT_TRUE(hello.ok());
  ASSERT_EQ(decode_log_message(reader, hello->version)->kind, Stderr::Last);
  ASSERT_EQ(decode_log_message(reader, hello->version)->kind, Stderr::Last);
  ASSERT_TRUE(decode_path_set(reader).ok());
  auto error = decode_log_message(reader, hello->version);
  ASSERT_TRUE(error.ok()) << error.error().message;
  EXPECT_EQ(error->kind, Stderr::Error);
  EXPECT_EQ(plain_message(error->text),
            "cannot add path '/nix/store/d4ab9lr1hjkbq1fjdhljg247y5wr0712-hello-recorded' because it lacks a "
            "valid signature");
}

TEST(WorkerProtocol, OldStyleErrors) {
  std::string bytes = WireWriter().u64(static_cast<uint64_t>(Stderr::Error)).str("no way").u64(3).take();
  auto reader = reader_over(bytes);
  auto error = decode_log_message(reader, 0x119);
  ASSERT_TRUE(error.ok());
  EXPECT_EQ(error->text, "no way");
  EXPECT_EQ(error->status, 3u);
}

TEST(WorkerProtocol, TunnelRequestsAndUnknownMessagesAreErrors) {
  for (uint64_t kind : {uint64_t{0x64617461}, uint64_t{0x64617416}, uint64_t{0x12345678}}) {
    std::string bytes = WireWriter().u64(kind).u64(8).take();
    auto reader = reader_over(bytes);
    auto message = decode_log_message(reader, 0x122);
    ASSERT_FALSE(message.ok());
    EXPECT_EQ(message.error().code, EPROTO);
  }
}

TEST(WorkerProtocol, Sha256InEveryNotation) {
  const std::string hex = "477cc78c8eecdce8d84362462e55b1ac26e2f6301336be38c19bff9ec95c0fdd";
  for (const char* form :
       {"sha256:1p8gbk4rxzwvq4wbwdhk63vf49mcn5ajwik28gcfip7cis6cfz27",
        "sha256:477cc78c8eecdce8d84362462e55b1ac26e2f6301336be38c19bff9ec95c0fdd",
        "477cc78c8eecdce8d84362462e55b1ac26e2f6301336be38c19bff9ec95c0fdd",
        "sha256-R3zHjI7s3OjYQ2JGLlWxrCbi9jATNr44wZv/nslcD90=", "sha256:R3zHjI7s3OjYQ2JGLlWxrCbi9jATNr44wZv/nslcD90="}) {
    auto converted = sha256_base16(form);
    ASSERT_TRUE(converted.ok()) << form << ": " << converted.error().message;
    EXPECT_EQ(*converted, hex) << form;
  }
  for (const char* bad : {"", "sha256:", "md5:477cc78c8eecdce8d84362462e55b1ac", "sha256:xyz",
                          "sha256:1p8gbk4rxzwvq4wbwdhk63vf49mcn5ajwik28gcfip7cis6cfz2e"}) {
    EXPECT_FALSE(sha256_base16(bad).ok()) << bad;
  }
  PathInfo unhashed = tree_info();
  unhashed.nar_hash = "";
  EXPECT_FALSE(encode_path_info(unhashed).ok());
}

TEST(WorkerProtocol, PlainMessage) {
  EXPECT_EQ(plain_message("cannot add path '\x1b[35;1m/nix/store/x\x1b[0m'\n"), "cannot add path '/nix/store/x'");
  EXPECT_EQ(plain_message("a\tb\x07"), "a b");
}

// Truncated and mutated recordings decode to a value or an error, never a crash or a hang.
TEST(WorkerProtocol, MutatedInputNeverCrashes) {
  std::vector<std::string> goldens{test_data("worker_nix_copy_server.bin"), test_data("worker_nix_build_server.bin"),
                                   test_data("worker_unsigned_refused_server.bin")};
  std::mt19937_64 random(7);
  for (int round = 0; round < 20000; ++round) {
    std::string input = goldens[random() % goldens.size()];
    int flips = 1 + static_cast<int>(random() % 4);
    for (int i = 0; i < flips; ++i) input[random() % input.size()] = static_cast<char>(random() & 0xff);
    if (round % 3 == 0) input.resize(random() % (input.size() + 1));
    auto reader = reader_over(input);
    if (!decode_server_magic(reader).ok()) continue;
    auto hello = decode_server_hello(reader);
    if (!hello) continue;
    for (int i = 0; i < 64; ++i) {
      auto message = decode_log_message(reader, hello->version);
      if (!message) break;
      if (message->kind == Stderr::Last && !decode_path_set(reader).ok()) break;
    }
  }
}

}  // namespace
}  // namespace lazystore::worker
