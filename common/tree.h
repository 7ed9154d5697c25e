// The whole tree of one store path (what a NAR listing holds): node 0 is the store path itself,
// which may be a directory, a regular file or a symlink. Children are sorted by name.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace lazystore {

enum class NodeType : uint8_t { Regular = 1, Directory = 2, Symlink = 3 };

struct TreeNode {
  NodeType type = NodeType::Regular;
  bool executable = false;         // Regular only
  uint64_t size = 0;               // Regular: bytes; Symlink: target length
  uint64_t nar_offset = 0;         // Regular: offset of its contents in the NAR, 0 when unknown
  std::string name;                // entry name in its parent; "" for node 0
  std::string target;              // Symlink only
  uint32_t parent = 0;             // node 0 is its own parent
  std::vector<uint32_t> children;  // Directory only: indices into Tree::nodes, sorted by name
};

class Tree {
 public:
  static constexpr uint32_t kRoot = 0;
  // Limits that keep a hostile listing bounded. kMaxNodes is the cap on entries per store path
  // (the store path itself counts): a tree node takes ~120 bytes, so a tree stays below ~150 MB.
  static constexpr size_t kMaxNodes = 1'000'000;
  static constexpr size_t kMaxNameLength = 255;
  static constexpr size_t kMaxTargetLength = 4095;
  static constexpr size_t kMaxDepth = 256;
  // The largest regular file lazystore serves: 2^52 bytes (4 PiB), far past any store file, and
  // small enough that every offset derived from a size (offset + length, the content cache's
  // slots after the content) stays far inside off_t. Every upstream refuses a larger size.
  static constexpr uint64_t kMaxFileSize = uint64_t{1} << 52;
  // EFBIG "WHAT: N bytes, more than the largest file lazystore serves (4 PiB)" past kMaxFileSize.
  static Status check_file_size(uint64_t size, std::string_view what);

  std::vector<TreeNode> nodes;

  // An entry name a tree may hold: not "", "." or "..", no '/' or NUL, at most kMaxNameLength.
  static bool valid_name(std::string_view name);
  // A tree with just a root node of `type`.
  static Tree with_root(NodeType type);
  // Appends a child of `parent` (a directory) and returns its index; keeps children sorted.
  // Fails on an invalid name ("", ".", "..", containing '/' or NUL, too long), a duplicate,
  // a non-directory parent, too many nodes, or a child deeper than kMaxDepth (root: depth 0).
  Result<uint32_t> add_child(uint32_t parent, std::string_view name, NodeType type);
  // The same checks, but the child goes last among its siblings and duplicates are not looked
  // for: for input in any order (a JSON object), followed by sort_children(parent).
  Result<uint32_t> append_child(uint32_t parent, std::string_view name, NodeType type);
  // Sorts the children of `dir` by name; EEXIST when two have the same name.
  Status sort_children(uint32_t dir);

  std::optional<uint32_t> child(uint32_t dir, std::string_view name) const;
  // "a/b/c" relative to the store path root; "" for the root.
  std::string path_of(uint32_t node) const;
  // Resolves "a/b/c" (no symlinks followed) to a node.
  std::optional<uint32_t> resolve(std::string_view relative_path) const;
  uint64_t total_file_bytes() const;

  // Compact binary form for the on-disk metadata cache, with a trailing xxh3 checksum.
  std::string serialize() const;
  // Validates everything (checksum, names, indices, acyclic parents, limits); never trusts input.
  static Result<Tree> deserialize(std::string_view data);

  bool operator==(const Tree&) const = default;
};

inline bool operator==(const TreeNode& a, const TreeNode& b) {
  return a.type == b.type && a.executable == b.executable && a.size == b.size && a.nar_offset == b.nar_offset &&
         a.name == b.name && a.target == b.target && a.parent == b.parent && a.children == b.children;
}

}  // namespace lazystore
