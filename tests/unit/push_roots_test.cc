// Unit tests of push/roots.*: root names (lazystore's and rules_nixpkgs'), ages, the listing and
// the command lines of the server's roots command.
#include <gtest/gtest.h>

#include <string>

#include "roots.h"

namespace lazystore {
namespace {

const std::string A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const std::string B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

TEST(PushRoots, Names) {
  EXPECT_TRUE(is_valid_root_name("ci-main_2024.1+x"));
  EXPECT_FALSE(is_valid_root_name(""));
  EXPECT_FALSE(is_valid_root_name(".hidden"));
  EXPECT_FALSE(is_valid_root_name("-opt"));
  EXPECT_FALSE(is_valid_root_name("a/b"));
  EXPECT_FALSE(is_valid_root_name("a b"));
  EXPECT_FALSE(is_valid_root_name("a;rm"));
  EXPECT_FALSE(is_valid_root_name(std::string(101, 'a')));
  EXPECT_FALSE(is_valid_root_name("rules_nixpkgs/" + A));  // set by rules_nixpkgs, not by us
}

TEST(PushRoots, ListedNames) {
  EXPECT_TRUE(is_valid_listed_root_name("ci-main"));
  EXPECT_TRUE(is_valid_listed_root_name("rules_nixpkgs/" + A));
  EXPECT_TRUE(is_valid_listed_root_name("rules_nixpkgs/" + A + "-2"));
  EXPECT_TRUE(is_valid_listed_root_name("rules_nixpkgs/x?y=z"));
  EXPECT_FALSE(is_valid_listed_root_name("rules_nixpkgs/"));
  EXPECT_FALSE(is_valid_listed_root_name("rules_nixpkgs/.x"));
  EXPECT_FALSE(is_valid_listed_root_name("rules_nixpkgs/../x"));
  EXPECT_FALSE(is_valid_listed_root_name("rules_nixpkgs/a b"));
  EXPECT_FALSE(is_valid_listed_root_name("other/x"));
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
  auto entries = parse_root_listing("ci\t1700000000\t/nix/store/" + A + " /nix/store/" + B + "\nempty\t5\t\n" +
                                    "rules_nixpkgs/" + A + "\t7\t/nix/store/" + A + "\n");
  ASSERT_TRUE(entries.ok()) << entries.error().message;
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].name, "ci");
  EXPECT_EQ((*entries)[0].mtime, 1700000000);
  EXPECT_EQ((*entries)[0].paths.size(), 2u);
  EXPECT_TRUE((*entries)[1].paths.empty());
  EXPECT_EQ((*entries)[2].name, "rules_nixpkgs/" + A);
  EXPECT_FALSE(parse_root_listing("no tabs here\n").ok());
  EXPECT_FALSE(parse_root_listing("x\tnotanumber\t\n").ok());
  EXPECT_FALSE(parse_root_listing("../x\t5\t\n").ok());
}

TEST(PushRoots, DeletedNames) {
  auto names = parse_deleted_names("ci\nrules_nixpkgs/" + A + "\n");
  ASSERT_TRUE(names.ok()) << names.error().message;
  EXPECT_EQ(*names, (std::vector<std::string>{"ci", "rules_nixpkgs/" + A}));
  EXPECT_FALSE(parse_deleted_names("bad name\n").ok());
}

TEST(PushRoots, Commands) {
  EXPECT_EQ(roots_add_command("lazystore-roots", "ci"), "lazystore-roots add ci");
  // The list ends with a "." line, so a list cut short is refused instead of committed.
  EXPECT_EQ(roots_add_input({"/nix/store/" + A, "/nix/store/" + B}), "/nix/store/" + A + "\n/nix/store/" + B + "\n.\n");
  EXPECT_EQ(roots_list_command("r", std::nullopt), "r list");
  EXPECT_EQ(roots_list_command("r", 3600), "r list --older-than 3600");
  EXPECT_EQ(roots_delete_command("r", {"a", "b"}, std::nullopt), "r delete a b");
  // The age goes along with a delete: the server re-checks it, so a root renewed since the
  // listing is kept.
  EXPECT_EQ(roots_delete_command("r", {"a"}, 86400), "r delete --older-than 86400 a");
}

}  // namespace
}  // namespace lazystore
