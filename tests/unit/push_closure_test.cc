// Unit tests of lazystore-push's pure parts: reference order, argument resolution, progress
// formatting, ssh -o options.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "closure.h"
#include "progress.h"
#include "ssh_session.h"

namespace lazystore {
namespace {

serve::PathInfo info(const std::string& name, std::vector<std::string> refs) {
  serve::PathInfo i;
  i.path = "/nix/store/" + name;
  for (auto& r : refs) r = "/nix/store/" + r;
  i.references = std::move(refs);
  return i;
}

const std::string A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const std::string B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";
const std::string C = "cccccccccccccccccccccccccccccccc-c";
const std::string D = "dddddddddddddddddddddddddddddddd-d";

TEST(PushClosure, ReferencesComeFirst) {
  // d -> c -> b -> a, d -> a, self-reference on b.
  auto ordered = order_by_references({info(D, {C, A}), info(A, {}), info(C, {B}), info(B, {B, A})});
  ASSERT_TRUE(ordered.ok()) << ordered.error().message;
  std::vector<std::string> names;
  for (const auto& i : *ordered) names.push_back(i.path.substr(11));
  EXPECT_EQ(names, (std::vector<std::string>{A, B, C, D}));
}

TEST(PushClosure, TiesAreBrokenByPath) {
  auto ordered = order_by_references({info(C, {}), info(A, {}), info(B, {})});
  ASSERT_TRUE(ordered.ok());
  EXPECT_EQ((*ordered)[0].path.substr(11), A);
  EXPECT_EQ((*ordered)[2].path.substr(11), C);
}

TEST(PushClosure, MissingReferenceAndCycleAreErrors) {
  EXPECT_FALSE(order_by_references({info(A, {B})}).ok());
  EXPECT_FALSE(order_by_references({info(A, {B}), info(B, {A})}).ok());
}

TEST(PushClosure, ResolvesStorePathsAndSymlinks) {
  auto direct = resolve_store_path("/nix/store/" + A + "/bin/x");
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(*direct, "/nix/store/" + A);

  auto dir = std::filesystem::temp_directory_path() / ("push_closure_test." + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::create_symlink("/nix/store/" + B, dir / "result");  // dangling on this host
  std::filesystem::create_symlink("result", dir / "result2");
  auto via = resolve_store_path((dir / "result2").string());
  ASSERT_TRUE(via.ok()) << via.error().message;
  EXPECT_EQ(*via, "/nix/store/" + B);
  std::filesystem::create_symlink("/etc", dir / "elsewhere");
  EXPECT_FALSE(resolve_store_path((dir / "elsewhere").string()).ok());
  EXPECT_FALSE(resolve_store_path((dir / "nothing").string()).ok());
  EXPECT_FALSE(resolve_store_path("/nix/store/not-a-valid-hash").ok());
  std::filesystem::remove_all(dir);
}

TEST(PushProgress, Formatting) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(62), "1:02");
  EXPECT_EQ(format_duration(3723), "1:02:03");
}

TEST(PushSsh, DashOOptions) {
  SshOptions options;
  EXPECT_TRUE(apply_ssh_option(options, "UserKnownHostsFile=/tmp/kh").ok());
  EXPECT_EQ(options.known_hosts_file.value_or(""), "/tmp/kh");
  EXPECT_TRUE(apply_ssh_option(options, "Port 2222").ok());
  EXPECT_EQ(options.port.value_or(0), 2222u);
  EXPECT_TRUE(apply_ssh_option(options, "stricthostkeychecking=accept-new").ok());
  EXPECT_TRUE(options.accept_new_host_key);
  EXPECT_TRUE(apply_ssh_option(options, "IdentityFile=/k").ok());
  EXPECT_EQ(options.identity_files.back(), "/k");
  EXPECT_FALSE(apply_ssh_option(options, "StrictHostKeyChecking=no").ok());
  EXPECT_FALSE(apply_ssh_option(options, "Port=0").ok());
  EXPECT_FALSE(apply_ssh_option(options, "ProxyCommand=nc x").ok());
  EXPECT_FALSE(apply_ssh_option(options, "novalue").ok());
}

}  // namespace
}  // namespace lazystore
