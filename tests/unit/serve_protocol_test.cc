// Golden-byte tests of the serve-protocol wire code (common/serve_protocol.*). The answer file
// in data/ was captured from Nix 2.8's `nix-store --serve` for a `nix-store --add`ed tree.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "serve_protocol.h"
#include "test_support.h"

namespace lazystore::serve {
namespace {

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string unhex(std::string_view text) {
  std::string out;
  auto value = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    out += static_cast<char>(value(text[i]) * 16 + value(text[i + 1]));
  }
  return out;
}

WireReader reader_over(const std::string& bytes) {
  return WireReader(nar_source_from(std::as_bytes(std::span(bytes.data(), bytes.size()))));
}

constexpr const char* kPath = "/nix/store/vj6mq0rdaljd4mz6yal02qzp9s90rx5r-hello-tree";

TEST(ServeProtocol, ClientHello) {
  EXPECT_EQ(hex(encode_client_hello()),
            "eb9d0c3900000000"
            "0602000000000000");
}

TEST(ServeProtocol, ServerHelloOfNix28) {
  auto bytes = unhex(
      "cbee525400000000"
      "0702000000000000");
  auto reader = reader_over(bytes);
  auto version = decode_server_hello(reader);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, 0x207u);
  EXPECT_EQ(version_major(*version), 2u);
  EXPECT_EQ(version_minor(*version), 7u);
}

TEST(ServeProtocol, ServerHelloRejectsWrongMagic) {
  auto bytes = unhex(
      "0000000000000000"
      "0702000000000000");
  auto reader = reader_over(bytes);
  auto version = decode_server_hello(reader);
  ASSERT_FALSE(version.ok());
  EXPECT_EQ(version.error().code, EPROTO);
}

TEST(ServeProtocol, StringsArePaddedToEightBytes) {
  WireWriter w;
  w.str("").str("abc").str("12345678");
  EXPECT_EQ(hex(w.bytes()),
            "0000000000000000"
            "0300000000000000"
            "6162630000000000"
            "0800000000000000"
            "3132333435363738");
}

TEST(ServeProtocol, QueryValidPaths) {
  std::vector<std::string> paths{kPath};
  EXPECT_EQ(hex(encode_query_valid_paths(true, false, paths)),
            "0100000000000000"  // command 1
            "0100000000000000"  // lock
            "0000000000000000"  // substitute
            "0100000000000000"  // one path
            "3600000000000000" +
                hex(kPath) + "0000");
}

TEST(ServeProtocol, QueryClosureAndDump) {
  std::vector<std::string> paths{kPath};
  EXPECT_EQ(hex(encode_query_closure(false, paths)),
            "0700000000000000"
            "0000000000000000"
            "0100000000000000"
            "3600000000000000" +
                hex(kPath) + "0000");
  EXPECT_EQ(hex(encode_dump_store_path(kPath)),
            "0300000000000000"
            "3600000000000000" +
                hex(kPath) + "0000");
}

TEST(ServeProtocol, AddToStoreNar) {
  PathInfo info;
  info.path = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x";
  info.nar_hash = "sha256:1k4pshyirbmmy6g8jsxpk8pabpvlsjb1vdmdra02z0mxgznxqkg2";
  info.references = {"/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-y"};
  info.nar_size = 480;
  info.sigs = {"k:sig"};
  EXPECT_EQ(hex(encode_add_to_store_nar(info)),
            "0900000000000000"  // command 9
            "2d00000000000000" +
                hex(info.path) + "000000" +  // path (45 bytes)
                "0000000000000000"           // deriver ""
                "3b00000000000000" +
                hex(info.nar_hash) + "0000000000" +  // narHash (59 bytes)
                "0100000000000000"
                "2d00000000000000" +
                hex(info.references[0]) + "000000" +
                "0000000000000000"  // registrationTime
                "e001000000000000"  // narSize 480
                "0000000000000000"  // ultimate
                "0100000000000000"
                "0500000000000000" +
                hex("k:sig") + "000000" + "0000000000000000");  // ca ""
}

TEST(ServeProtocol, ImportPathsFraming) {
  PathInfo info;
  info.path = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x";
  EXPECT_EQ(hex(encode_import_paths_begin()), "0400000000000000");
  EXPECT_EQ(hex(encode_import_path_begin()), "0100000000000000");
  EXPECT_EQ(hex(encode_import_path_trailer(info)),
            "4e49584500000000"  // export magic
            "2d00000000000000" +
                hex(info.path) + "000000" +  // path
                "0000000000000000"           // no references
                "0000000000000000"           // deriver ""
                "0000000000000000");         // no signature
  EXPECT_EQ(hex(encode_import_paths_end()), "0000000000000000");
}

TEST(ServeProtocol, PathInfosFromNix28) {
  std::string answer = test_data("push_query_path_infos_answer.bin");
  ASSERT_FALSE(answer.empty());
  auto reader = reader_over(answer);
  auto infos = decode_path_infos(reader, 0x206);
  ASSERT_TRUE(infos.ok()) << infos.error().message;
  ASSERT_EQ(infos->size(), 1u);
  const PathInfo& info = (*infos)[0];
  EXPECT_EQ(info.path, kPath);
  EXPECT_EQ(info.deriver, "");
  EXPECT_TRUE(info.references.empty());
  EXPECT_EQ(info.nar_size, 480u);
  EXPECT_EQ(info.download_size, 480u);
  EXPECT_EQ(info.nar_hash, "sha256:1k4pshyirbmmy6g8jsxpk8pabpvlsjb1vdmdra02z0mxgznxqkg2");
  EXPECT_EQ(info.ca, "fixed:r:sha256:1k4pshyirbmmy6g8jsxpk8pabpvlsjb1vdmdra02z0mxgznxqkg2");
  EXPECT_TRUE(info.sigs.empty());
}

TEST(ServeProtocol, PathInfosOfOldVersionHaveNoHash) {
  WireWriter w;
  std::vector<std::string> refs{kPath};
  w.str(kPath).str("").strings(refs).u64(10).u64(20).str("");
  auto bytes = w.take();
  auto reader = reader_over(bytes);
  auto infos = decode_path_infos(reader, 0x203);
  ASSERT_TRUE(infos.ok());
  ASSERT_EQ(infos->size(), 1u);
  EXPECT_EQ((*infos)[0].references, refs);
  EXPECT_EQ((*infos)[0].nar_size, 20u);
  EXPECT_EQ((*infos)[0].nar_hash, "");
}

TEST(ServeProtocol, TruncatedInputIsAnError) {
  std::string answer = test_data("push_query_path_infos_answer.bin");
  for (size_t cut = 0; cut < answer.size(); cut += 7) {
    auto truncated = answer.substr(0, cut);
    auto reader = reader_over(truncated);
    auto infos = decode_path_infos(reader, 0x206);
    ASSERT_FALSE(infos.ok()) << "cut at " << cut;
    EXPECT_EQ(infos.error().code, EPROTO);
  }
}

TEST(ServeProtocol, HostileLengthsAreRejected) {
  auto huge_string = unhex("ffffffffffffff7f");
  auto reader = reader_over(huge_string);
  auto s = reader.str();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EINVAL);
  auto huge_list = unhex("ffffffffffffff7f");
  auto reader2 = reader_over(huge_list);
  auto list = decode_path_set(reader2);
  ASSERT_FALSE(list.ok());
  EXPECT_EQ(list.error().code, EINVAL);
  auto bad_padding = unhex(
      "0100000000000000"
      "6101000000000000");
  auto reader3 = reader_over(bad_padding);
  auto padded = reader3.str();
  ASSERT_FALSE(padded.ok());
  EXPECT_EQ(padded.error().code, EINVAL);
}

// A cheap in-process fuzz: mutated golden answers and random bytes decode to a value or an
// error, never a crash, a hang or an unbounded allocation (run under ASan in CI).
TEST(ServeProtocol, MutatedInputNeverCrashes) {
  std::string golden = test_data("push_query_path_infos_answer.bin");
  ASSERT_FALSE(golden.empty());
  std::mt19937_64 random(42);
  for (int round = 0; round < 20000; ++round) {
    std::string input = golden;
    int flips = 1 + static_cast<int>(random() % 4);
    for (int i = 0; i < flips; ++i) {
      input[random() % input.size()] = static_cast<char>(random() & 0xff);
    }
    if (round % 3 == 0) input.resize(random() % (input.size() + 1));
    if (round % 5 == 0) {
      input.assign(random() % 64, '\0');
      for (char& c : input) c = static_cast<char>(random() & 0xff);
    }
    auto r1 = reader_over(input);
    (void)decode_path_infos(r1, 0x206);
    auto r2 = reader_over(input);
    (void)decode_path_set(r2);
    auto r3 = reader_over(input);
    (void)decode_server_hello(r3);
  }
}

TEST(ServeProtocol, Success) {
  auto one = unhex("0100000000000000");
  auto reader = reader_over(one);
  EXPECT_TRUE(decode_success(reader).ok());
  auto zero = unhex("0000000000000000");
  auto reader2 = reader_over(zero);
  EXPECT_FALSE(decode_success(reader2).ok());
}

}  // namespace
}  // namespace lazystore::serve
