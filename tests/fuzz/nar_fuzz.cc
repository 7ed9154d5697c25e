// NARs as an HTTP binary cache or `nix-store --dump` serves them: parse_nar with a checking
// visitor, then tree_from_nar, whose offsets must point inside the archive.
#include <string>

#include "fuzz_check.h"
#include "nar.h"

using namespace lazystore;

namespace {

// Checks the visitor protocol: file_data only between file_begin and file_end, the data adds up
// to the announced size and lies where nar_offset says (so a range read at nar_offset is right).
class CheckingVisitor final : public NarVisitor {
 public:
  explicit CheckingVisitor(std::span<const std::byte> archive) : archive_(archive) {}

  Status directory(std::string_view path) override { return check_path(path); }
  Status symlink(std::string_view path, std::string_view target) override {
    FUZZ_CHECK(!in_file_);
    FUZZ_CHECK(!target.empty() && target.size() <= Tree::kMaxTargetLength);
    return check_path(path);
  }
  Status file_begin(std::string_view path, bool, uint64_t size, uint64_t nar_offset) override {
    FUZZ_CHECK(!in_file_);
    // The size is only announced here (a truncated archive fails later); the offset is real.
    FUZZ_CHECK(nar_offset <= archive_.size());
    in_file_ = true;
    remaining_ = size;
    offset_ = nar_offset;
    return check_path(path);
  }
  Status file_data(std::span<const std::byte> data) override {
    FUZZ_CHECK(in_file_ && data.size() <= remaining_);
    FUZZ_CHECK(offset_ <= archive_.size() && data.size() <= archive_.size() - offset_);
    FUZZ_CHECK(std::equal(data.begin(), data.end(), archive_.begin() + static_cast<ptrdiff_t>(offset_)));
    remaining_ -= data.size();
    offset_ += data.size();
    return {};
  }
  Status file_end() override {
    FUZZ_CHECK(in_file_ && remaining_ == 0);
    in_file_ = false;
    return {};
  }

 private:
  Status check_path(std::string_view path) {
    FUZZ_CHECK(!path.starts_with('/') && !path.ends_with('/'));
    FUZZ_CHECK(path.find('\0') == std::string_view::npos);
    FUZZ_CHECK(path.find("//") == std::string_view::npos);
    for (std::string_view rest = path; !rest.empty();) {
      std::string_view component = rest.substr(0, rest.find('/'));
      FUZZ_CHECK(component != "." && component != "..");
      rest.remove_prefix(std::min(rest.size(), component.size() + 1));
    }
    return {};
  }

  std::span<const std::byte> archive_;
  bool in_file_ = false;
  uint64_t remaining_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto archive = std::as_bytes(std::span(data, size));
  CheckingVisitor visitor(archive);
  Status parsed = parse_nar(nar_source_from(archive), visitor);
  if (!parsed) FUZZ_CHECK(parsed.error().code == EINVAL || parsed.error().code == EPROTO);

  auto tree = tree_from_nar(nar_source_from(archive));
  FUZZ_CHECK(tree.ok() == parsed.ok());
  if (tree) {
    for (const TreeNode& node : tree->nodes) {
      if (node.type != NodeType::Regular) continue;
      FUZZ_CHECK(node.nar_offset <= size && node.size <= size - node.nar_offset);
    }
    // What the metadata cache stores must come back identical.
    auto again = Tree::deserialize(tree->serialize());
    FUZZ_CHECK(again.ok() && *again == *tree);
  }
  return 0;
}
