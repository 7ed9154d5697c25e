#include "nar_listing.h"

#include <nlohmann/json.hpp>

#include <cstring>

namespace lazystore {
namespace {

using Json = nlohmann::json;

// JSON nesting of a listing: two levels ("entries", the entry) per directory level, plus the top.
constexpr size_t kMaxJsonDepth = 2 * Tree::kMaxDepth + 8;

// Rejects nesting deeper than `limit` before the JSON parser sees it (no parser recursion risk).
bool nesting_within(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limit) return false;
    } else if (c == '}' || c == ']') {
      if (depth > 0) --depth;
    }
  }
  return true;
}

Error invalid(const std::string& where, const char* what) {
  return make_error(EINVAL, "NAR listing: " + (where.empty() ? std::string("root") : where) + ": " + what);
}

Result<uint64_t> get_u64(const Json& object, const char* key, const std::string& where, bool required) {
  auto it = object.find(key);
  if (it == object.end()) {
    if (required) return invalid(where, (std::string("no ") + key).c_str());
    return uint64_t{0};
  }
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0)) {
    return invalid(where, (std::string("invalid ") + key).c_str());
  }
  return it->get<uint64_t>();
}

Status fill(Tree& tree, uint32_t node, const Json& entry, const std::string& where, size_t depth) {
  if (!entry.is_object()) return invalid(where, "entry is not an object");
  if (depth > Tree::kMaxDepth) return invalid(where, "too deep");
  auto type_it = entry.find("type");
  if (type_it == entry.end() || !type_it->is_string()) return invalid(where, "no type");
  const std::string& type = type_it->get_ref<const std::string&>();
  TreeNode& n = tree.nodes[node];
  if (type == "regular") {
    if (n.type != NodeType::Regular) return invalid(where, "type does not match");
    auto size = get_u64(entry, "size", where, true);
    if (!size) return size.error();
    auto offset = get_u64(entry, "narOffset", where, false);
    if (!offset) return offset.error();
    bool executable = false;
    if (auto it = entry.find("executable"); it != entry.end()) {
      if (!it->is_boolean()) return invalid(where, "executable is not a boolean");
      executable = it->get<bool>();
    }
    TreeNode& f = tree.nodes[node];
    f.size = *size;
    f.nar_offset = *offset;
    f.executable = executable;
    return {};
  }
  if (type == "symlink") {
    if (n.type != NodeType::Symlink) return invalid(where, "type does not match");
    auto it = entry.find("target");
    if (it == entry.end() || !it->is_string()) return invalid(where, "no target");
    const std::string& target = it->get_ref<const std::string&>();
    if (target.empty() || target.size() > Tree::kMaxTargetLength ||
        std::memchr(target.data(), '\0', target.size())) {
      return invalid(where, "invalid symlink target");
    }
    TreeNode& l = tree.nodes[node];
    l.target = target;
    l.size = target.size();
    return {};
  }
  if (type == "directory") {
    if (n.type != NodeType::Directory) return invalid(where, "type does not match");
    auto it = entry.find("entries");
    if (it == entry.end()) return {};
    if (!it->is_object()) return invalid(where, "entries is not an object");
    for (const auto& [name, child] : it->items()) {
      std::string child_where = where.empty() ? name : where + "/" + name;
      if (!child.is_object()) return invalid(child_where, "entry is not an object");
      auto child_type = child.find("type");
      if (child_type == child.end() || !child_type->is_string()) return invalid(child_where, "no type");
      const std::string& t = child_type->get_ref<const std::string&>();
      NodeType kind;
      if (t == "regular") kind = NodeType::Regular;
      else if (t == "directory") kind = NodeType::Directory;
      else if (t == "symlink") kind = NodeType::Symlink;
      else return invalid(child_where, "unknown type");
      auto added = tree.add_child(node, name, kind);
      if (!added) return make_error(EINVAL, "NAR listing: " + added.error().message);
      if (auto st = fill(tree, *added, child, child_where, depth + 1); !st) return st;
    }
    return {};
  }
  return invalid(where, "unknown type");
}

}  // namespace

Result<Tree> parse_nar_listing(std::string_view json) {
  if (json.size() > kMaxNarListingBytes) return make_error(EINVAL, "NAR listing: too large");
  if (!nesting_within(json, kMaxJsonDepth)) return make_error(EINVAL, "NAR listing: nested too deeply");
  Json doc = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return make_error(EINVAL, "NAR listing: not a JSON object");
  auto version = doc.find("version");
  if (version == doc.end() || !version->is_number_integer() || version->get<int64_t>() != 1) {
    return make_error(EINVAL, "NAR listing: unsupported version");
  }
  auto root = doc.find("root");
  if (root == doc.end() || !root->is_object()) return make_error(EINVAL, "NAR listing: no root");
  auto type = root->find("type");
  if (type == root->end() || !type->is_string()) return make_error(EINVAL, "NAR listing: root has no type");
  const std::string& t = type->get_ref<const std::string&>();
  NodeType kind;
  if (t == "regular") kind = NodeType::Regular;
  else if (t == "directory") kind = NodeType::Directory;
  else if (t == "symlink") kind = NodeType::Symlink;
  else return make_error(EINVAL, "NAR listing: root has an unknown type");
  Tree tree = Tree::with_root(kind);
  if (auto st = fill(tree, Tree::kRoot, *root, "", 0); !st) return st.error();
  return tree;
}

}  // namespace lazystore
