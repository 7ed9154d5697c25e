#include "store_path.h"

#include <stdexcept>

#include "nix32.h"
#include "printable.h"

namespace lazystore {
namespace {

bool is_name_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' || c == '-' ||
         c == '.' || c == '_' || c == '?' || c == '=';
}

// Hostile names end up in log lines: show at most a prefix, control bytes escaped.
std::string quoted(std::string_view text) { return "'" + escape_for_message(text) + "'"; }

// Nix's checkName (src/libstore/path.cc): a leading '.' is allowed (Nix 2.4 and later create such
// paths), but not the names "." and "..", nor a first dash-separated component "." or "..".
const char* name_problem(std::string_view name) {
  if (name.empty()) return "has an empty name";
  if (name.size() > StorePath::kMaxNameLength) return "has a name longer than 211 characters";
  if (name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-")) {
    return "has the invalid name '.' or '..'";
  }
  for (char c : name) {
    if (!is_name_char(c)) return "has an illegal character in its name";
  }
  return nullptr;
}

const char* base_name_problem(std::string_view base) {
  if (base.size() < StorePath::kHashLength + 2) return "is too short to be a store path";
  for (char c : base.substr(0, StorePath::kHashLength)) {
    if (!nix32::is_char(c)) return "has an illegal character in its hash part";
  }
  if (base[StorePath::kHashLength] != '-') return "has no '-' after its hash part";
  return name_problem(base.substr(StorePath::kHashLength + 1));
}

}  // namespace

StorePath::StorePath(std::string_view base_name) : base_(base_name) {
  if (const char* problem = base_name_problem(base_name)) {
    throw std::invalid_argument("store path " + quoted(base_name) + " " + problem);
  }
}

Result<StorePath> StorePath::parse(std::string_view base_name) {
  if (const char* problem = base_name_problem(base_name)) {
    return make_error(EINVAL, "store path " + quoted(base_name) + " " + problem);
  }
  return StorePath(Unchecked{}, std::string(base_name));
}

Result<StorePath> StorePath::parse_absolute(std::string_view path) {
  if (!path.starts_with(kStoreDir) || path.size() <= kStoreDir.size() || path[kStoreDir.size()] != '/') {
    return make_error(EINVAL, quoted(path) + " is not in " + std::string(kStoreDir));
  }
  std::string_view rest = path.substr(kStoreDir.size() + 1);
  return parse(rest.substr(0, rest.find('/')));
}

bool StorePath::is_valid(std::string_view base_name) { return base_name_problem(base_name) == nullptr; }

}  // namespace lazystore
