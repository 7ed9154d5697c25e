// `<hash>.ls` NAR listings (JSON) from a binary cache.
#include <string>

#include "fuzz_check.h"
#include "nar_listing.h"

using namespace lazystore;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tree = parse_nar_listing(fuzz::as_text(data, size));
  if (!tree) {
    FUZZ_CHECK(tree.error().code == EINVAL);
    return 0;
  }
  FUZZ_CHECK(!tree->nodes.empty() && tree->nodes.size() <= Tree::kMaxNodes);
  for (uint32_t i = 0; i < tree->nodes.size(); ++i) {
    const TreeNode& node = tree->nodes[i];
    if (i != Tree::kRoot) {
      FUZZ_CHECK(!node.name.empty() && node.name != "." && node.name != "..");
      FUZZ_CHECK(node.name.find('/') == std::string::npos);
      FUZZ_CHECK(node.name.find('\0') == std::string::npos);
      FUZZ_CHECK(tree->resolve(tree->path_of(i)) == i);
    }
    if (node.type == NodeType::Symlink) FUZZ_CHECK(!node.target.empty());
  }
  auto again = Tree::deserialize(tree->serialize());
  FUZZ_CHECK(again.ok() && *again == *tree);
  return 0;
}
