// GC roots on the server, kept by the server-side `lazystore-roots` command (packaging/server/):
//   lazystore-roots add NAME                  store paths on stdin, one a line, then a line "."
//   lazystore-roots list [--older-than AGE]   one line per root: NAME <TAB> mtime (epoch s) <TAB> paths
//   lazystore-roots delete [--older-than AGE] NAME…   prints the names it deleted, one a line
// Besides lazystore's own roots it lists rules_nixpkgs' (~/rules_nixpkgs_gcroots/NAME on the
// server) as "rules_nixpkgs/NAME". This file holds the client's side of that: names, ages, the
// listing format and the command lines.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace lazystore {

struct RootEntry {
  std::string name;
  int64_t mtime = 0;  // seconds since the epoch of the last push that set it
  std::vector<std::string> paths;
};

inline constexpr std::string_view kRulesNixpkgsPrefix = "rules_nixpkgs/";

// A lazystore root: 1..100 chars of [A-Za-z0-9._+-], not starting with '.' or '-'.
bool is_valid_root_name(std::string_view name);
// What a listing may name: a lazystore root, or "rules_nixpkgs/" and a store path name.
bool is_valid_listed_root_name(std::string_view name);
// "90", "90s", "15m", "12h", "30d", "2w" → seconds.
Result<int64_t> parse_age(std::string_view text);
Result<std::vector<RootEntry>> parse_root_listing(std::string_view text);
// The names a delete printed.
Result<std::vector<std::string>> parse_deleted_names(std::string_view text);

std::string roots_add_command(std::string_view roots_command, std::string_view name);
// What `add` reads: the paths, one a line, and the final "." that says the list is complete.
std::string roots_add_input(const std::vector<std::string>& paths);
std::string roots_list_command(std::string_view roots_command, std::optional<int64_t> older_than_seconds);
std::string roots_delete_command(std::string_view roots_command, const std::vector<std::string>& names,
                                 std::optional<int64_t> older_than_seconds);

}  // namespace lazystore
