// GC roots on the server, kept by the server-side `lazystore-roots` command (packaging/server/):
//   lazystore-roots add NAME      store paths on stdin, one a line; NAME then roots exactly them
//   lazystore-roots list          one line per root: NAME <TAB> mtime (epoch s) <TAB> paths (space-separated)
//   lazystore-roots delete NAME…
// This file holds the client's side of that: names, ages and the listing format.
#pragma once

#include <cstdint>
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

// 1..100 chars of [A-Za-z0-9._+-], not starting with '.' or '-'.
bool is_valid_root_name(std::string_view name);
// "90", "90s", "15m", "12h", "30d", "2w" → seconds.
Result<int64_t> parse_age(std::string_view text);
Result<std::vector<RootEntry>> parse_root_listing(std::string_view text);

std::string roots_add_command(std::string_view roots_command, std::string_view name);
std::string roots_list_command(std::string_view roots_command);
std::string roots_delete_command(std::string_view roots_command, const std::vector<std::string>& names);

}  // namespace lazystore
