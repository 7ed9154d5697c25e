#include "tree.h"

#include <algorithm>
#include <cstring>

#include "hash.h"

namespace lazystore {
namespace {

bool is_valid_name(std::string_view name) {
  return !name.empty() && name.size() <= Tree::kMaxNameLength && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

// ---- serialized form -------------------------------------------------------------------------
// "lazytree" u32:version u32:node_count, then per node
//   u8:type u8:flags(bit 0 executable) u32:name_len u32:target_len u32:parent u64:size
//   u64:nar_offset u32:child_count, name bytes, target bytes, u32 child indices,
// then u64 xxh3_64 of everything before it. All integers little-endian.
constexpr std::string_view kMagic = "lazytree";
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 8 + 4 + 4;
constexpr size_t kFixedNodeSize = 1 + 1 + 4 + 4 + 4 + 8 + 8 + 4;
constexpr size_t kChecksumSize = 8;

void put(std::string& out, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Bounds-checked little-endian reads; a failed read leaves the reader failed for good.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  size_t left() const { return data_.size() - pos_; }
  size_t pos() const { return pos_; }
  bool get(size_t bytes, uint64_t& out) {
    if (left() < bytes) return false;
    out = 0;
    for (size_t i = 0; i < bytes; ++i) {
      out |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    }
    pos_ += bytes;
    return true;
  }
  bool take(size_t bytes, std::string_view& out) {
    if (left() < bytes) return false;
    out = data_.substr(pos_, bytes);
    pos_ += bytes;
    return true;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

Error corrupt(const std::string& what, size_t offset) {
  return make_error(EINVAL, "serialized tree: " + what + " at byte " + std::to_string(offset));
}

Error bad_structure(const std::string& what, uint32_t node) {
  return make_error(EINVAL, "serialized tree: " + what + " at node " + std::to_string(node));
}

// Reads node `index` into `node`; checks everything that concerns the node alone.
Status read_node(Reader& in, uint32_t index, size_t node_count, TreeNode& node) {
  size_t start = in.pos();
  uint64_t type = 0, flags = 0, name_len = 0, target_len = 0, parent = 0, child_count = 0;
  if (!in.get(1, type) || !in.get(1, flags) || !in.get(4, name_len) || !in.get(4, target_len) || !in.get(4, parent) ||
      !in.get(8, node.size) || !in.get(8, node.nar_offset) || !in.get(4, child_count)) {
    return corrupt("truncated node", start);
  }
  if (type < 1 || type > 3) return corrupt("bad node type", start);
  node.type = static_cast<NodeType>(type);
  if (flags > 1 || (flags != 0 && node.type != NodeType::Regular)) {
    return corrupt("bad flags", start);
  }
  node.executable = flags != 0;
  if (name_len > Tree::kMaxNameLength) return corrupt("name too long", start);
  if (target_len > Tree::kMaxTargetLength) return corrupt("symlink target too long", start);
  if (parent >= node_count) return corrupt("parent out of range", start);
  node.parent = static_cast<uint32_t>(parent);
  // At most left()/4 children can follow: never reserve more than the input can hold.
  if (child_count > in.left() / 4 || child_count >= node_count) {
    return corrupt("bad child count", start);
  }
  std::string_view name, target;
  if (!in.take(name_len, name) || !in.take(target_len, target)) {
    return corrupt("truncated node", start);
  }
  node.name.assign(name);
  node.target.assign(target);
  node.children.resize(child_count);
  for (uint32_t& child : node.children) {
    uint64_t value = 0;
    if (!in.get(4, value)) return corrupt("truncated children", start);
    if (value == 0 || value >= node_count) return corrupt("child index out of range", start);
    child = static_cast<uint32_t>(value);
  }

  if (index == 0 ? (!node.name.empty() || node.parent != 0) : (!is_valid_name(node.name) || node.parent == index)) {
    return corrupt("bad name or parent", start);
  }
  switch (node.type) {
    case NodeType::Regular:
      if (!node.target.empty() || !node.children.empty()) return corrupt("bad file", start);
      break;
    case NodeType::Directory:
      if (!node.target.empty() || node.size != 0 || node.nar_offset != 0) {
        return corrupt("bad directory", start);
      }
      break;
    case NodeType::Symlink:
      if (node.target.empty() || node.target.find('\0') != std::string::npos || node.size != node.target.size() ||
          node.nar_offset != 0 || !node.children.empty()) {
        return corrupt("bad symlink", start);
      }
      break;
  }
  return {};
}

// Children sorted, unique and pointing back; every node reachable from the root once, not too deep.
Status check_structure(const std::vector<TreeNode>& nodes) {
  size_t listed = 0;
  for (uint32_t d = 0; d < nodes.size(); ++d) {
    const auto& children = nodes[d].children;
    for (size_t k = 0; k < children.size(); ++k) {
      if (nodes[children[k]].parent != d) return bad_structure("child's parent mismatch", d);
      if (k > 0 && !(nodes[children[k - 1]].name < nodes[children[k]].name)) {
        return bad_structure("children not sorted and unique", d);
      }
    }
    listed += children.size();
  }
  // Each child lists its parent, so no node is listed twice; count-1 listings cover all of them.
  if (listed != nodes.size() - 1) return bad_structure("nodes not listed by their parent", 0);
  std::vector<uint32_t> depth(nodes.size(), 0);
  std::vector<uint32_t> queue{Tree::kRoot};
  queue.reserve(nodes.size());
  for (size_t head = 0; head < queue.size(); ++head) {
    uint32_t d = queue[head];
    for (uint32_t c : nodes[d].children) {
      depth[c] = depth[d] + 1;
      if (depth[c] > Tree::kMaxDepth) return bad_structure("tree too deep", c);
      queue.push_back(c);
    }
  }
  if (queue.size() != nodes.size()) return bad_structure("cycle in parent links", 0);
  return {};
}

}  // namespace

Status Tree::check_file_size(uint64_t size, std::string_view what) {
  if (size <= kMaxFileSize) return {};
  return make_error(EFBIG, std::string(what) + ": " + std::to_string(size) +
                               " bytes, more than the largest file lazystore serves (4 PiB)");
}

bool Tree::valid_name(std::string_view name) { return is_valid_name(name); }

Tree Tree::with_root(NodeType type) {
  Tree tree;
  tree.nodes.emplace_back();
  tree.nodes.back().type = type;
  return tree;
}

namespace {

Status check_new_child(const Tree& tree, uint32_t parent, std::string_view name) {
  const auto& nodes = tree.nodes;
  if (parent >= nodes.size() || nodes[parent].type != NodeType::Directory) {
    return make_error(ENOTDIR, "add_child: parent " + std::to_string(parent) + " is no directory");
  }
  if (!is_valid_name(name)) return make_error(EINVAL, "add_child: invalid entry name");
  if (nodes.size() >= Tree::kMaxNodes) {
    return make_error(EFBIG, "add_child: more than " + std::to_string(Tree::kMaxNodes) + " entries");
  }
  size_t depth = 1;
  for (uint32_t up = parent; up != Tree::kRoot && depth <= Tree::kMaxDepth; up = nodes[up].parent) ++depth;
  if (depth > Tree::kMaxDepth) return make_error(ELOOP, "add_child: tree too deep");
  return {};
}

}  // namespace

Result<uint32_t> Tree::append_child(uint32_t parent, std::string_view name, NodeType type) {
  if (auto st = check_new_child(*this, parent, name); !st) return st.error();
  auto index = static_cast<uint32_t>(nodes.size());
  nodes[parent].children.push_back(index);  // before emplace_back, which may move it
  TreeNode& node = nodes.emplace_back();
  node.type = type;
  node.name.assign(name);
  node.parent = parent;
  return index;
}

Status Tree::sort_children(uint32_t dir) {
  if (dir >= nodes.size()) return make_error(EINVAL, "sort_children: no such node");
  auto& siblings = nodes[dir].children;
  auto by_name = [this](uint32_t a, uint32_t b) { return nodes[a].name < nodes[b].name; };
  if (!std::is_sorted(siblings.begin(), siblings.end(), by_name)) {
    std::sort(siblings.begin(), siblings.end(), by_name);
  }
  auto same = std::adjacent_find(siblings.begin(), siblings.end(),
                                 [this](uint32_t a, uint32_t b) { return nodes[a].name == nodes[b].name; });
  if (same != siblings.end()) return make_error(EEXIST, "duplicate entry " + nodes[*same].name);
  return {};
}

Result<uint32_t> Tree::add_child(uint32_t parent, std::string_view name, NodeType type) {
  if (auto st = check_new_child(*this, parent, name); !st) return st.error();
  auto& siblings = nodes[parent].children;
  auto at = std::lower_bound(siblings.begin(), siblings.end(), name,
                             [this](uint32_t i, std::string_view n) { return nodes[i].name < n; });
  if (at != siblings.end() && nodes[*at].name == name) {
    return make_error(EEXIST, "add_child: duplicate entry " + std::string(name));
  }
  auto index = static_cast<uint32_t>(nodes.size());
  siblings.insert(at, index);  // before emplace_back, which may move `siblings`
  TreeNode& node = nodes.emplace_back();
  node.type = type;
  node.name.assign(name);
  node.parent = parent;
  return index;
}

std::optional<uint32_t> Tree::child(uint32_t dir, std::string_view name) const {
  if (dir >= nodes.size()) return std::nullopt;
  const auto& siblings = nodes[dir].children;
  auto at = std::lower_bound(siblings.begin(), siblings.end(), name,
                             [this](uint32_t i, std::string_view n) { return nodes[i].name < n; });
  if (at == siblings.end() || nodes[*at].name != name) return std::nullopt;
  return *at;
}

std::string Tree::path_of(uint32_t node) const {
  std::vector<const std::string*> names;
  // Bounded so that a hand-made tree with a parent cycle cannot loop forever.
  for (uint32_t n = node; n != kRoot && n < nodes.size() && names.size() <= nodes.size(); n = nodes[n].parent) {
    names.push_back(&nodes[n].name);
  }
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (!path.empty()) path += '/';
    path += **it;
  }
  return path;
}

std::optional<uint32_t> Tree::resolve(std::string_view relative_path) const {
  if (nodes.empty()) return std::nullopt;
  uint32_t node = kRoot;
  if (relative_path.empty()) return node;
  while (true) {
    size_t slash = relative_path.find('/');
    auto next = child(node, relative_path.substr(0, slash));
    if (!next) return std::nullopt;
    node = *next;
    if (slash == std::string_view::npos) return node;
    relative_path.remove_prefix(slash + 1);
  }
}

uint64_t Tree::total_file_bytes() const {
  uint64_t total = 0;
  for (const TreeNode& node : nodes) {
    if (node.type == NodeType::Regular) total += node.size;
  }
  return total;
}

std::string Tree::serialize() const {
  std::string out(kMagic);
  put(out, kVersion, 4);
  put(out, nodes.size(), 4);
  for (const TreeNode& node : nodes) {
    put(out, static_cast<uint8_t>(node.type), 1);
    put(out, node.executable ? 1 : 0, 1);
    put(out, node.name.size(), 4);
    put(out, node.target.size(), 4);
    put(out, node.parent, 4);
    put(out, node.size, 8);
    put(out, node.nar_offset, 8);
    put(out, node.children.size(), 4);
    out += node.name;
    out += node.target;
    for (uint32_t c : node.children) put(out, c, 4);
  }
  put(out, xxh3_64(out), 8);
  return out;
}

Result<Tree> Tree::deserialize(std::string_view data) {
  if (data.size() < kHeaderSize + kChecksumSize) return corrupt("too short", 0);
  std::string_view body = data.substr(0, data.size() - kChecksumSize);
  Reader trailer(data.substr(body.size()));
  uint64_t checksum = 0;
  if (!trailer.get(8, checksum) || checksum != xxh3_64(body)) {
    return corrupt("checksum mismatch", body.size());
  }
  Reader in(body);
  std::string_view magic;
  uint64_t version = 0, count = 0;
  if (!in.take(kMagic.size(), magic) || magic != kMagic) return corrupt("bad magic", 0);
  if (!in.get(4, version) || version != kVersion) return corrupt("unknown version", 8);
  if (!in.get(4, count) || count == 0 || count > kMaxNodes || count > in.left() / kFixedNodeSize) {
    return corrupt("bad node count", 12);
  }
  Tree tree;
  tree.nodes.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (auto read = read_node(in, i, count, tree.nodes[i]); !read) return read.error();
  }
  if (in.left() != 0) return corrupt("trailing bytes", in.pos());
  if (auto checked = check_structure(tree.nodes); !checked) return checked.error();
  return tree;
}

}  // namespace lazystore
