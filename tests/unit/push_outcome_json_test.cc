// Unit tests of push/outcome_json.*: the --json document, which is also what a persistent
// connection hands back to its client, survives the round trip; bad documents are errors.
#include <gtest/gtest.h>

#include "outcome_json.h"

namespace lazystore {
namespace {

TEST(PushOutcomeJson, RoundTrip) {
  PushOutcome outcome;
  outcome.code = ExitCode::Incomplete;
  outcome.message = "push incomplete";
  PushSummary& s = outcome.summary;
  s.destination = "nix-server";
  s.requested = {"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a"};
  s.closure_paths = 50;
  s.closure_bytes = 1 << 20;
  s.missing = {"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a"};
  s.missing_bytes = 480;
  s.copied_paths = 0;
  s.bytes_sent = 100;
  s.seconds = 0.25;
  s.protocol = "daemon";
  s.server_version = "1.34";
  s.server_nix_version = "2.8.0";
  s.root = "ci-main";
  s.dry_run = false;
  s.persistent = true;
  s.connection_reused = true;
  nlohmann::json j = outcome;
  EXPECT_EQ(j["exit_code"], 8);
  EXPECT_EQ(j["error"], "push incomplete");
  EXPECT_EQ(j["root"], "ci-main");
  auto back = push_outcome_from_json(j.dump());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(nlohmann::json(*back), j);

  outcome.code = ExitCode::Ok;
  s.root.reset();
  j = outcome;
  EXPECT_TRUE(j["error"].is_null());
  EXPECT_TRUE(j["root"].is_null());
  back = push_outcome_from_json(j.dump());
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->summary.root.has_value());
  EXPECT_EQ(back->message, "");
}

TEST(PushOutcomeJson, RequestRoundTrip) {
  PushRequest request;
  request.paths = {"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a"};
  request.root = "r";
  request.dry_run = true;
  auto back = push_request_from_json(nlohmann::json(request).dump());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->paths, request.paths);
  EXPECT_EQ(back->root, request.root);
  EXPECT_TRUE(back->dry_run);
}

TEST(PushOutcomeJson, BadDocumentsAreErrors) {
  for (const char* text : {"", "{", "[]", "{\"exit_code\": 0}", "{\"paths\": 3}"}) {
    auto outcome = push_outcome_from_json(text);
    EXPECT_FALSE(outcome.ok()) << text;
    if (!outcome.ok()) {
      EXPECT_EQ(outcome.error().code, EPROTO);
    }
    EXPECT_FALSE(push_request_from_json(text).ok()) << text;
  }
}

TEST(PushOutcomeJson, Roots) {
  RootsOutcome outcome;
  outcome.roots.push_back({"ci", 5, {"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a"}});
  outcome.deleted = {"ci"};
  nlohmann::json j = outcome;
  EXPECT_EQ(j["roots"][0]["name"], "ci");
  EXPECT_EQ(j["roots"][0]["mtime"], 5);
  EXPECT_EQ(j["deleted"], nlohmann::json::array({"ci"}));
  EXPECT_EQ(j["exit_code"], 0);
}

}  // namespace
}  // namespace lazystore
