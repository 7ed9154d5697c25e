#include "nar_listing.h"

#include <nlohmann/json.hpp>

#include "narinfo.h"
#include "printable.h"

#include <cstring>
#include <iterator>
#include <optional>
#include <vector>

namespace lazystore {
namespace {

using Json = nlohmann::json;

// JSON nesting of a listing: two levels ("entries", the entry) per directory level, plus the top.
constexpr size_t kMaxJsonDepth = 2 * Tree::kMaxDepth + 8;

// Rejects nesting deeper than `limit` before the JSON parser sees it.
bool nesting_within(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
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

std::optional<NodeType> node_type(std::string_view name) {
  if (name == "regular") return NodeType::Regular;
  if (name == "directory") return NodeType::Directory;
  if (name == "symlink") return NodeType::Symlink;
  return std::nullopt;
}

// Builds the Tree while the JSON is read (SAX): memory is the Tree's, never a JSON document's,
// whatever the listing holds. Keys may come in any order (Nix writes "type" first, nlohmann-based
// writers sort keys: "entries" first); entries may come unsorted; both are handled.
class ListingBuilder final : public nlohmann::json_sax<Json> {
 public:
  // With `blocks`, every regular file must carry "blocks" (a manifest body); without, the key is
  // an unknown one (ignored, as in a `.ls` listing).
  explicit ListingBuilder(BlockHashes* blocks = nullptr) : blocks_(blocks) {}

  Result<Tree> finish(bool parsed) {
    if (error_) return *error_;
    if (!parsed || !done_) return make_error(EINVAL, "NAR listing: not a JSON object");
    if (!version_ok_) return make_error(EINVAL, "NAR listing: unsupported version");
    if (!root_seen_) return make_error(EINVAL, "NAR listing: no root");
    return std::move(tree_);
  }

  bool null() override { return scalar("null"); }
  bool boolean(bool value) override {
    if (skip_) return true;
    Frame* f = entry_with_key("executable");
    if (f == nullptr) return scalar("a boolean");
    f->executable = value;
    return true;
  }
  bool number_integer(number_integer_t value) override {  // only negative numbers come here
    if (skip_) return true;
    if (in_document("version")) return version(false);
    return scalar(value < 0 ? "a negative number" : "a number");
  }
  bool number_unsigned(number_unsigned_t value) override {
    if (skip_) return true;
    if (in_document("version")) return version(value == 1);
    if (Frame* f = entry_with_key("size")) {
      f->size = value;
      return true;
    }
    if (Frame* f = entry_with_key("narOffset")) {
      f->nar_offset = value;
      return true;
    }
    return scalar("a number");
  }
  bool number_float(number_float_t, const string_t&) override {
    if (skip_) return true;
    if (in_document("version")) return version(false);
    return scalar("a fractional number");
  }
  bool string(string_t& value) override {
    if (skip_) return true;
    if (Frame* f = entry_with_key("type")) {
      if (f->type) return fail(where(*f), "type given twice");
      auto type = node_type(value);
      if (!type) return fail(where(*f), "unknown type");
      if (f->has_entries && *type != NodeType::Directory) return fail(where(*f), "entries in a non-directory");
      f->type = type;
      return true;
    }
    if (Frame* f = entry_with_key("target")) {
      f->target = std::move(value);
      return true;
    }
    if (Frame* f = blocks_ ? entry_with_key("blocks") : nullptr) {
      f->blocks = std::move(value);
      return true;
    }
    return scalar("a string");
  }
  bool binary(binary_t&) override { return scalar("binary data"); }

  bool start_object(std::size_t) override {
    if (skip_) return ++skip_ < kMaxSkipDepth || fail("", "nested too deeply");
    if (stack_.empty()) {
      if (done_) return fail("", "more than one JSON value");
      stack_.push_back(frame(Kind::Document));
      return true;
    }
    Frame& top = stack_.back();
    switch (top.kind) {
      case Kind::Document:
        if (top.key != "root") return skip_value();
        if (root_seen_) return fail("", "root given twice");
        root_seen_ = true;
        tree_ = Tree::with_root(NodeType::Regular);  // the real type is known at its end
        stack_.push_back(frame(Kind::Entry, Tree::kRoot));
        return true;
      case Kind::Entry: {
        if (top.key != "entries") return known_key(top.key) ? fail(where(top), "invalid " + top.key) : skip_value();
        if (top.has_entries) return fail(where(top), "entries given twice");
        if (top.type && *top.type != NodeType::Directory) return fail(where(top), "entries in a non-directory");
        top.has_entries = true;
        tree_.nodes[top.node].type = NodeType::Directory;
        stack_.push_back(frame(Kind::Entries, top.node));
        return true;
      }
      case Kind::Entries: {
        auto child = tree_.append_child(top.node, top.key, NodeType::Regular);
        if (!child) return fail(where(top) + "/" + printable(top.key), child.error().message, child.error().code);
        stack_.push_back(frame(Kind::Entry, *child));
        return true;
      }
    }
    return false;
  }

  bool key(string_t& value) override {
    if (skip_) return true;
    Frame& top = stack_.back();
    top.key = std::move(value);
    if (top.kind == Kind::Entry && known_key(top.key) && top.key != "entries") {
      // "blocks" is known only to a manifest body: SeenKeys checks it either way.
      if (!top.seen.insert_if_new(top.key)) return fail(where(top), top.key + " given twice");
    }
    return true;
  }

  bool end_object() override {
    if (skip_) {
      --skip_;
      return true;
    }
    Frame top = std::move(stack_.back());
    stack_.pop_back();
    switch (top.kind) {
      case Kind::Document: done_ = true; return true;
      case Kind::Entries:
        if (auto st = tree_.sort_children(top.node); !st) return fail(where(top), st.error().message);
        return true;
      case Kind::Entry: return finish_entry(top);
    }
    return false;
  }

  bool start_array(std::size_t) override {
    if (skip_) return ++skip_ < kMaxSkipDepth || fail("", "nested too deeply");
    if (stack_.empty()) return fail("", "not a JSON object");
    Frame& top = stack_.back();
    if (top.kind == Kind::Entries) return fail(where(top) + "/" + printable(top.key), "entry is not an object");
    if (top.kind == Kind::Entry && known_key(top.key)) return fail(where(top), "invalid " + top.key);
    if (top.kind == Kind::Document && (top.key == "root" || top.key == "version")) {
      return fail("", "invalid " + top.key);
    }
    return skip_value();
  }
  bool end_array() override {
    if (skip_) --skip_;
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    return fail("", "not valid JSON (at byte " + std::to_string(position) + ")");
  }

 private:
  enum class Kind { Document, Entry, Entries };
  static constexpr size_t kMaxSkipDepth = 64;  // unknown values: nested at most this deep

  // The keys of an entry seen so far (each at most once).
  struct SeenKeys {
    unsigned bits = 0;
    bool insert_if_new(const std::string& key) {
      static constexpr const char* kKeys[] = {"type", "size", "narOffset", "executable", "target", "blocks"};
      for (unsigned i = 0; i < std::size(kKeys); ++i) {
        if (key == kKeys[i]) {
          if (bits & (1u << i)) return false;
          bits |= 1u << i;
        }
      }
      return true;
    }
  };

  struct Frame {
    Kind kind = Kind::Document;
    uint32_t node = 0;
    std::string key;  // the key whose value comes next (Entries: the child's name)
    // Entry: what it said so far.
    std::optional<NodeType> type;
    bool has_entries = false;
    std::optional<uint64_t> size;
    uint64_t nar_offset = 0;
    bool executable = false;
    std::optional<std::string> target;
    std::optional<std::string> blocks;  // base64, manifest bodies only
    SeenKeys seen;
  };

  static Frame frame(Kind kind, uint32_t node = 0) {
    Frame f;
    f.kind = kind;
    f.node = node;
    return f;
  }

  bool known_key(const std::string& key) const {
    return key == "type" || key == "size" || key == "narOffset" || key == "executable" || key == "target" ||
           key == "entries" || (blocks_ != nullptr && key == "blocks");
  }

  // A name for messages: control bytes escaped, bounded.
  static std::string printable(std::string_view text) { return escape_for_message(text); }

  std::string where(const Frame& frame) const {
    std::string path = tree_.nodes.empty() ? std::string() : tree_.path_of(frame.node);
    return path.empty() ? "root" : printable(path);
  }

  bool fail(const std::string& where, const std::string& what, int code = EINVAL) {
    if (!error_) error_ = make_error(code, "NAR listing: " + (where.empty() ? std::string() : where + ": ") + what);
    return false;
  }

  bool in_document(const char* key) const {
    return !stack_.empty() && stack_.back().kind == Kind::Document && stack_.back().key == key;
  }
  Frame* entry_with_key(const char* key) {
    if (stack_.empty() || stack_.back().kind != Kind::Entry || stack_.back().key != key) return nullptr;
    return &stack_.back();
  }
  bool version(bool ok) {
    version_ok_ = ok;
    return true;
  }
  bool skip_value() {
    skip_ = 1;
    return true;
  }
  // A scalar value where the callbacks above did not want it.
  bool scalar(const char* what) {
    if (skip_) return true;
    if (stack_.empty()) return fail("", "not a JSON object");
    Frame& top = stack_.back();
    switch (top.kind) {
      case Kind::Entries: return fail(where(top) + "/" + printable(top.key), "entry is not an object");
      case Kind::Entry:
        if (known_key(top.key)) return fail(where(top), "invalid " + top.key + " (" + what + ")");
        return true;  // an unknown key: ignored
      case Kind::Document:
        if (top.key == "root") return fail("", "no root");
        if (top.key == "version") return version(false);
        return true;
    }
    return false;
  }

  bool finish_entry(const Frame& f) {
    if (!f.type) return fail(where(f), "no type");
    TreeNode& node = tree_.nodes[f.node];
    node.type = *f.type;
    switch (*f.type) {
      case NodeType::Regular:
        if (!f.size) return fail(where(f), "no size");
        if (*f.size > kMaxFileSize) return fail(where(f), "absurd size " + std::to_string(*f.size));
        node.size = *f.size;
        node.nar_offset = f.nar_offset;
        node.executable = f.executable;
        return blocks_ ? take_blocks(f) : true;
      case NodeType::Symlink:
        if (!f.target) return fail(where(f), "no target");
        if (f.target->empty() || f.target->size() > Tree::kMaxTargetLength ||
            std::memchr(f.target->data(), '\0', f.target->size())) {
          return fail(where(f), "invalid symlink target");
        }
        node.target = *f.target;
        node.size = f.target->size();
        return true;
      case NodeType::Directory: return true;
    }
    return false;
  }

  // The block hashes of a regular file, appended in the order files end.
  bool take_blocks(const Frame& f) {
    if (!f.blocks) return fail(where(f), "no blocks");
    const uint64_t block_size = blocks_->block_size;
    const uint64_t count = *f.size / block_size + (*f.size % block_size != 0);
    // Before decoding: a size the hashes cannot match is refused without allocating for it.
    if (count > f.blocks->size() / 4 * 3 / kBlockHashBytes + 1) return fail(where(f), "blocks do not match the size");
    auto raw = base64_decode(*f.blocks);
    if (!raw) return fail(where(f), "invalid blocks: " + raw.error().message);
    if (raw->size() != count * kBlockHashBytes) return fail(where(f), "blocks do not match the size");
    if (blocks_->first_block.size() <= f.node) blocks_->first_block.resize(tree_.nodes.size(), kNoBlocks);
    blocks_->first_block[f.node] = blocks_->hashes.size() / kBlockHashBytes;
    blocks_->hashes.insert(blocks_->hashes.end(), raw->begin(), raw->end());
    return true;
  }

  BlockHashes* const blocks_;
  Tree tree_;
  std::vector<Frame> stack_;
  size_t skip_ = 0;
  bool done_ = false;
  bool root_seen_ = false;
  bool version_ok_ = false;
  std::optional<Error> error_;
};

}  // namespace

namespace {

Result<Tree> parse_listing(std::string_view json, size_t max_bytes, BlockHashes* blocks) {
  if (json.size() > max_bytes) return make_error(EINVAL, "NAR listing: too large");
  if (!nesting_within(json, kMaxJsonDepth)) return make_error(EINVAL, "NAR listing: nested too deeply");
  ListingBuilder builder(blocks);
  bool parsed = false;
  try {
    parsed = Json::sax_parse(json.begin(), json.end(), &builder);
  } catch (const std::exception& e) {  // the parser reports errors to the builder; this is a backstop
    return make_error(EINVAL, std::string("NAR listing: ") + e.what());
  }
  return builder.finish(parsed);
}

}  // namespace

Result<Tree> parse_nar_listing(std::string_view json) { return parse_listing(json, kMaxNarListingBytes, nullptr); }

Result<Tree> parse_nar_listing_with_blocks(std::string_view json, BlockHashes& blocks) {
  if (blocks.block_size == 0) return make_error(EINVAL, "NAR listing: block size 0");
  blocks.hashes.clear();
  blocks.first_block.clear();
  auto tree = parse_listing(json, kMaxBlockListingBytes, &blocks);
  if (!tree) return tree.error();
  blocks.first_block.resize(tree->nodes.size(), kNoBlocks);
  return tree;
}

}  // namespace lazystore
