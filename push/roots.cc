#include "roots.h"

#include <charconv>

namespace lazystore {

namespace {

bool is_store_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
         c == '.' || c == '_' || c == '?' || c == '=';
}

std::string older_than_argument(std::optional<int64_t> seconds) {
  return seconds ? " --older-than " + std::to_string(*seconds) : "";
}

}  // namespace

bool is_valid_root_name(std::string_view name) {
  if (name.empty() || name.size() > 100 || name.front() == '.' || name.front() == '-') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '+' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool is_valid_listed_root_name(std::string_view name) {
  if (!name.starts_with(kRulesNixpkgsPrefix)) return is_valid_root_name(name);
  name.remove_prefix(kRulesNixpkgsPrefix.size());
  if (name.empty() || name.size() > 255 || name.front() == '.' || name.front() == '-') return false;
  for (char c : name) {
    if (!is_store_name_char(c)) return false;
  }
  return true;
}

Result<int64_t> parse_age(std::string_view text) {
  int64_t number = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || number < 0 || end == text.data()) {
    return make_error(EINVAL, "bad age '" + std::string(text) + "' (use e.g. 90s, 15m, 12h, 30d, 2w)");
  }
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  int64_t scale = 0;
  if (unit.empty() || unit == "s")
    scale = 1;
  else if (unit == "m")
    scale = 60;
  else if (unit == "h")
    scale = 3600;
  else if (unit == "d")
    scale = 86400;
  else if (unit == "w")
    scale = 7 * 86400;
  else
    return make_error(EINVAL, "bad age '" + std::string(text) + "' (use e.g. 90s, 15m, 12h, 30d, 2w)");
  if (number > INT64_MAX / scale) return make_error(EINVAL, "age '" + std::string(text) + "' is too large");
  return number * scale;
}

Result<std::vector<RootEntry>> parse_root_listing(std::string_view text) {
  std::vector<RootEntry> entries;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (line.empty()) continue;
    size_t tab1 = line.find('\t');
    size_t tab2 = tab1 == std::string_view::npos ? tab1 : line.find('\t', tab1 + 1);
    if (tab2 == std::string_view::npos) {
      return make_error(EPROTO, "bad roots listing line '" + std::string(line) + "'");
    }
    RootEntry entry;
    entry.name = std::string(line.substr(0, tab1));
    std::string_view mtime = line.substr(tab1 + 1, tab2 - tab1 - 1);
    auto [end, ec] = std::from_chars(mtime.data(), mtime.data() + mtime.size(), entry.mtime);
    if (ec != std::errc() || end != mtime.data() + mtime.size() || !is_valid_listed_root_name(entry.name)) {
      return make_error(EPROTO, "bad roots listing line '" + std::string(line) + "'");
    }
    std::string_view paths = line.substr(tab2 + 1);
    while (!paths.empty()) {
      size_t space = paths.find(' ');
      std::string_view path = paths.substr(0, space);
      if (!path.empty()) entry.paths.emplace_back(path);
      paths = space == std::string_view::npos ? std::string_view() : paths.substr(space + 1);
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

Result<std::vector<std::string>> parse_deleted_names(std::string_view text) {
  std::vector<std::string> names;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (line.empty()) continue;
    if (!is_valid_listed_root_name(line))
      return make_error(EPROTO, "bad deleted root name '" + std::string(line) + "'");
    names.emplace_back(line);
  }
  return names;
}

// Names are validated to a shell-safe alphabet, so no quoting is needed.
std::string roots_add_command(std::string_view roots_command, std::string_view name) {
  return std::string(roots_command) + " add " + std::string(name);
}

std::string roots_add_input(const std::vector<std::string>& paths) {
  std::string input;
  for (const auto& path : paths) input += path + "\n";
  return input + ".\n";
}

std::string roots_list_command(std::string_view roots_command, std::optional<int64_t> older_than_seconds) {
  return std::string(roots_command) + " list" + older_than_argument(older_than_seconds);
}

std::string roots_delete_command(std::string_view roots_command, const std::vector<std::string>& names,
                                 std::optional<int64_t> older_than_seconds) {
  std::string command = std::string(roots_command) + " delete" + older_than_argument(older_than_seconds);
  for (const auto& name : names) command += " " + name;
  return command;
}

}  // namespace lazystore
