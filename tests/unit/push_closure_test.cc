// Unit tests of lazystore-push's pure parts: reference order, argument resolution, roots
// names/ages/listings, progress formatting, ssh -o options.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "closure.h"
#include "progress.h"
#include "roots.h"
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

TEST(PushRoots, Names) {
  EXPECT_TRUE(is_valid_root_name("ci-main_2024.1+x"));
  EXPECT_FALSE(is_valid_root_name(""));
  EXPECT_FALSE(is_valid_root_name(".hidden"));
  EXPECT_FALSE(is_valid_root_name("-opt"));
  EXPECT_FALSE(is_valid_root_name("a/b"));
  EXPECT_FALSE(is_valid_root_name("a b"));
  EXPECT_FALSE(is_valid_root_name("a;rm"));
  EXPECT_FALSE(is_valid_root_name(std::string(101, 'a')));
}

TEST(PushRoots, Ages) {
  EXPECT_EQ(*parse_age("90"), 90);
  EXPECT_EQ(*parse_age("90s"), 90);
  EXPECT_EQ(*parse_age("15m"), 900);
  EXPECT_EQ(*parse_age("12h"), 43200);
  EXPECT_EQ(*parse_age("30d"), 30 * 86400);
  EXPECT_EQ(*parse_age("2w"), 14 * 86400);
  EXPECT_FALSE(parse_age("").ok());
  EXPECT_FALSE(parse_age("d").ok());
  EXPECT_FALSE(parse_age("3y").ok());
  EXPECT_FALSE(parse_age("-3d").ok());
  EXPECT_FALSE(parse_age("99999999999999999w").ok());
}

TEST(PushRoots, Listing) {
  auto entries = parse_root_listing("ci\t1700000000\t/nix/store/" + A + " /nix/store/" + B + "\nempty\t5\t\n");
  ASSERT_TRUE(entries.ok()) << entries.error().message;
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, "ci");
  EXPECT_EQ((*entries)[0].mtime, 1700000000);
  EXPECT_EQ((*entries)[0].paths.size(), 2u);
  EXPECT_TRUE((*entries)[1].paths.empty());
  EXPECT_FALSE(parse_root_listing("no tabs here\n").ok());
  EXPECT_FALSE(parse_root_listing("x\tnotanumber\t\n").ok());
  EXPECT_EQ(roots_add_command("lazystore-roots", "ci"), "lazystore-roots add ci");
  EXPECT_EQ(roots_delete_command("r", {"a", "b"}), "r delete a b");
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
