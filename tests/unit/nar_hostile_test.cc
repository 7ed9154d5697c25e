// Hostile and broken archives: every one is an error value (EPROTO truncated, EINVAL malformed),
// never a crash, a hang, a big allocation or a file outside the destination.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <new>

#include "nar.h"
#include "test_support.h"

// The largest single allocation while tracking is on: proves no allocation follows a length field.
namespace {
std::atomic<bool> g_tracking{false};
std::atomic<size_t> g_largest{0};
}  // namespace

// GCC cannot see that these replace the global pair, so it flags the malloc/free inside them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t size) {
  if (g_tracking.load(std::memory_order_relaxed)) {
    size_t seen = g_largest.load(std::memory_order_relaxed);
    while (size > seen && !g_largest.compare_exchange_weak(seen, size)) {}
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace lazystore {
namespace {

namespace fs = std::filesystem;

// ---- archive construction ----------------------------------------------------------------------

std::string u64le(uint64_t value) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return out;
}
std::string str(std::string_view s) {
  return u64le(s.size()) + std::string(s) + std::string((8 - s.size() % 8) % 8, '\0');
}
std::string file_node(std::string_view contents, bool executable = false) {
  return str("(") + str("type") + str("regular") + (executable ? str("executable") + str("") : std::string()) +
         str("contents") + str(contents) + str(")");
}
std::string symlink_node(std::string_view target) {
  return str("(") + str("type") + str("symlink") + str("target") + str(target) + str(")");
}
std::string entry(std::string_view name, const std::string& node) {
  return str("entry") + str("(") + str("name") + str(name) + str("node") + node + str(")");
}
std::string dir_node(std::initializer_list<std::string> entries) {
  std::string out = str("(") + str("type") + str("directory");
  for (const std::string& e : entries) out += e;
  return out + str(")");
}
std::string nar(const std::string& node) { return str("nix-archive-1") + node; }

// A file at `depth` under nested directories (the root is depth 0), built in linear time.
std::string nested(size_t depth) {
  std::string open =
      str("(") + str("type") + str("directory") + str("entry") + str("(") + str("name") + str("d") + str("node");
  std::string close = str(")") + str(")");
  std::string out = str("nix-archive-1");
  for (size_t i = 0; i < depth; ++i) out += open;
  out += file_node("leaf");
  for (size_t i = 0; i < depth; ++i) out += close;
  return out;
}

// Every node type, nesting, an executable and an empty file; `big` sets one file's size.
std::string rich_archive(size_t big = 70000) {
  return nar(dir_node({
      entry("bin",
            dir_node({entry("hello", file_node("#!/bin/sh\necho hello\n", true)), entry("sh", symlink_node("hello"))})),
      entry("empty", file_node("")),
      entry("emptydir", dir_node({})),
      entry("lib", dir_node({entry("libx.so", file_node(std::string(big, 'x')))})),
      entry("link", symlink_node("/nix/store/lpg73p3x49mjkxrdj3vxhhzslln67blr-.foo")),
  }));
}

NarSource source_of(const std::string& data) { return nar_source_from(std::as_bytes(std::span(data))); }

struct NullVisitor : NarVisitor {
  Status directory(std::string_view) override { return {}; }
  Status symlink(std::string_view, std::string_view) override { return {}; }
  Status file_begin(std::string_view, bool, uint64_t, uint64_t) override { return {}; }
  Status file_data(std::span<const std::byte>) override { return {}; }
  Status file_end() override { return {}; }
};

Status parse(const std::string& data, const NarLimits& limits = {}) {
  NullVisitor visitor;
  return parse_nar(source_of(data), visitor, limits);
}

void expect_malformed(const std::string& data, const std::string& why, const std::string& message_part = "",
                      const NarLimits& limits = {}) {
  auto result = parse(data, limits);
  ASSERT_FALSE(result) << why;
  EXPECT_EQ(result.error().code, EINVAL) << why << ": " << result.error().message;
  EXPECT_NE(result.error().message.find("at byte "), std::string::npos) << result.error().message;
  if (!message_part.empty()) {
    EXPECT_NE(result.error().message.find(message_part), std::string::npos) << why << ": " << result.error().message;
  }
}

// ---- tests -------------------------------------------------------------------------------------

TEST(NarHostile, ValidArchivesParse) {
  EXPECT_TRUE(parse(rich_archive()));
  EXPECT_TRUE(parse(nar(file_node("x"))));
  EXPECT_TRUE(parse(nar(symlink_node("x"))));
  EXPECT_TRUE(parse(nar(dir_node({}))));
  auto tree = tree_from_nar(source_of(rich_archive()));
  ASSERT_TRUE(tree) << tree.error().message;
  EXPECT_EQ(tree->nodes.size(), 9u);
}

void expect_truncated(const std::string& cut, const fs::path& restore_to) {
  auto parsed = parse(cut);
  ASSERT_FALSE(parsed) << cut.size();
  EXPECT_EQ(parsed.error().code, EPROTO) << cut.size() << ": " << parsed.error().message;
  EXPECT_NE(parsed.error().message.find("at byte "), std::string::npos);
  auto tree = tree_from_nar(source_of(cut));
  ASSERT_FALSE(tree) << cut.size();
  EXPECT_EQ(tree.error().code, EPROTO);
  // Items are 8-byte aligned, so cuts at multiples of 8 reach every prefix of visitor calls.
  if (cut.size() % 8 == 0) {
    auto restored = restore_nar(source_of(cut), restore_to);
    ASSERT_FALSE(restored) << cut.size();
    EXPECT_EQ(restored.error().code, EPROTO);
  }
}

TEST(NarHostile, EveryTruncationIsAnError) {
  TempDir dir;
  std::string full = rich_archive(13);
  for (size_t length = 0; length < full.size(); ++length) {
    expect_truncated(full.substr(0, length), dir.path() / std::to_string(length));
  }
  EXPECT_TRUE(parse(full));
  // With contents longer than one 64 KiB piece: a sample of cuts, and all around the contents.
  std::string big = rich_archive(70000);
  size_t contents = big.find(std::string(64, 'x'));
  for (size_t length = 0; length < big.size(); length += length < contents ? 1 : 4096) {
    expect_truncated(big.substr(0, length), dir.path() / ("big" + std::to_string(length)));
  }
  for (size_t length = contents + 69990; length < big.size(); ++length) {
    expect_truncated(big.substr(0, length), dir.path() / ("end" + std::to_string(length)));
  }
}

TEST(NarHostile, EveryByteFlipIsHandled) {
  std::string full = rich_archive(13);
  for (size_t i = 0; i < full.size(); ++i) {
    for (int flip : {0x01, 0x80, 0xff}) {
      std::string bad = full;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      auto parsed = parse(bad);
      if (!parsed) {
        EXPECT_TRUE(parsed.error().code == EINVAL || parsed.error().code == EPROTO) << i;
      }
      auto tree = tree_from_nar(source_of(bad));  // must not crash either
      EXPECT_EQ(tree.ok(), parsed.ok()) << i;
    }
  }
}

TEST(NarHostile, BadMagic) {
  expect_malformed(str("nix-archive-2") + file_node("x"), "wrong version", "nix-archive-1");
  expect_malformed(str("NIX-ARCHIVE-1") + file_node("x"), "wrong case");
  expect_malformed(str("") + file_node("x"), "empty magic");
  expect_malformed(u64le(uint64_t{1} << 62) + "nix-archive-1", "huge magic length");
  expect_malformed(file_node("x"), "no magic");
  auto empty = parse("");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, EPROTO);
}

TEST(NarHostile, NonzeroPadding) {
  std::string good = nar(file_node("abc"));
  EXPECT_TRUE(parse(good));
  // Contents "abc" are followed by 5 padding bytes: spoil each.
  size_t contents_at = good.find("abc");
  for (size_t i = 3; i < 8; ++i) {
    std::string bad = good;
    bad[contents_at + i] = 'X';
    expect_malformed(bad, "padding after contents", "padding");
  }
  // The padding of a keyword ("type" has 4).
  std::string bad = good;
  bad[good.find("type") + 4] = '\x01';
  expect_malformed(bad, "padding after keyword", "padding");
  // The padding of the magic (13 bytes, 3 of padding).
  bad = good;
  bad[8 + 13] = '\x80';
  expect_malformed(bad, "padding after magic", "padding");
}

TEST(NarHostile, EntriesMustBeSortedAndUnique) {
  EXPECT_TRUE(parse(nar(dir_node({entry("a", file_node("")), entry("b", file_node(""))}))));
  expect_malformed(nar(dir_node({entry("b", file_node("")), entry("a", file_node(""))})), "unsorted", "sorted");
  expect_malformed(nar(dir_node({entry("a", file_node("")), entry("a", file_node("x"))})), "duplicate", "duplicate");
  expect_malformed(nar(dir_node({entry("a", file_node("")), entry("a", dir_node({}))})), "duplicate of another type");
  // Byte order, not locale order: "B" (0x42) sorts before "a" (0x61), "\xc3" after "z".
  EXPECT_TRUE(parse(nar(dir_node({entry("B", file_node("")), entry("a", file_node("")), entry("z", file_node("")),
                                  entry("\xc3\xa9", file_node(""))}))));
  expect_malformed(nar(dir_node({entry("\xc3\xa9", file_node("")), entry("z", file_node(""))})), "signed-char order");
  // Sorting is per directory: the same name in two directories is fine.
  EXPECT_TRUE(parse(nar(dir_node(
      {entry("a", dir_node({entry("x", file_node(""))})), entry("b", dir_node({entry("x", file_node(""))}))}))));
}

TEST(NarHostile, BadNames) {
  const std::vector<std::string> bad_names = {"a/b",
                                              "/",
                                              "..",
                                              ".",
                                              "",
                                              std::string("a\0b", 3),
                                              std::string("\0", 1),
                                              "../../etc/passwd",
                                              std::string(256, 'n')};
  for (const std::string& name : bad_names) {
    expect_malformed(nar(dir_node({entry(name, file_node("x"))})), "name " + name);
  }
  EXPECT_TRUE(parse(nar(dir_node({entry(std::string(255, 'n'), file_node("x"))}))));
  EXPECT_TRUE(parse(nar(dir_node({entry("...", file_node("x"))}))));
  expect_malformed(nar(dir_node({entry(std::string(300, 'n'), file_node("x"))})), "name beyond the limit",
                   "exceeds the limit");
}

TEST(NarHostile, HugeLengthsFailFastWithoutAllocating) {
  const uint64_t huge = uint64_t{1} << 62;
  std::string prefix = str("nix-archive-1") + str("(") + str("type");
  std::vector<std::pair<std::string, int>> cases = {
      // A file claiming 2^62 bytes of contents, then the input ends.
      {prefix + str("regular") + str("contents") + u64le(huge) + std::string(64, 'x'), EPROTO},
      {prefix + str("regular") + str("contents") + u64le(UINT64_MAX), EPROTO},
      {prefix + str("symlink") + str("target") + u64le(huge) + "xxxxxxxx", EINVAL},
      {prefix + u64le(huge), EINVAL},
      {prefix + str("directory") + str("entry") + str("(") + str("name") + u64le(huge), EINVAL},
      {prefix + str("directory") + u64le(UINT64_MAX), EINVAL},
  };
  for (const auto& [data, code] : cases) {
    NullVisitor visitor;
    auto source = source_of(data);
    g_largest = 0;
    auto start = std::chrono::steady_clock::now();
    g_tracking = true;
    auto parsed = parse_nar(source, visitor);
    g_tracking = false;
    auto elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(parsed);
    EXPECT_EQ(parsed.error().code, code) << parsed.error().message;
    EXPECT_LE(g_largest.load(), 128u * 1024) << parsed.error().message;
    EXPECT_LT(elapsed, std::chrono::seconds(1));
  }
  // Raised limits do not turn a declared length into an allocation either.
  NarLimits generous;
  generous.max_target = SIZE_MAX;
  std::string data = prefix + str("symlink") + str("target") + u64le(huge) + "xxxxxxxx";
  g_largest = 0;
  g_tracking = true;
  auto parsed = parse(data, generous);
  g_tracking = false;
  ASSERT_FALSE(parsed);
  EXPECT_EQ(parsed.error().code, EPROTO);
  EXPECT_LE(g_largest.load(), 128u * 1024);
}

TEST(NarHostile, DepthBomb) {
  EXPECT_TRUE(parse(nested(Tree::kMaxDepth)));
  expect_malformed(nested(Tree::kMaxDepth + 1), "leaf one level too deep", "deeper");
  expect_malformed(nested(100000), "depth bomb", "deeper");
  auto tree = tree_from_nar(source_of(nested(Tree::kMaxDepth)));
  ASSERT_TRUE(tree) << tree.error().message;
  EXPECT_EQ(tree->nodes.size(), Tree::kMaxDepth + 1);
  // With the limit lifted, deep nesting is parsed without recursion (no stack overflow).
  NarLimits deep;
  deep.max_depth = SIZE_MAX;
  EXPECT_TRUE(parse(nested(50000), deep));
}

TEST(NarHostile, SymlinkTargets) {
  EXPECT_TRUE(parse(nar(symlink_node(std::string(Tree::kMaxTargetLength, 't')))));
  expect_malformed(nar(symlink_node(std::string(Tree::kMaxTargetLength + 1, 't'))), "too long", "exceeds the limit");
  expect_malformed(nar(symlink_node("")), "empty target");
  expect_malformed(nar(symlink_node(std::string("a\0b", 3))), "NUL in target");
  NarLimits small;
  small.max_target = 4;
  expect_malformed(nar(symlink_node("abcde")), "custom limit", "", small);
}

TEST(NarHostile, EntryLimit) {
  std::string three = nar(dir_node({entry("a", file_node("")), entry("b", file_node(""))}));
  NarLimits limits;
  limits.max_entries = 3;
  EXPECT_TRUE(parse(three, limits));
  limits.max_entries = 2;
  expect_malformed(three, "too many entries", "entries", limits);
}

TEST(NarHostile, GrammarViolations) {
  std::string start = str("nix-archive-1") + str("(") + str("type");
  expect_malformed(start + str("fifo") + str(")"), "unknown type", "unknown node type");
  expect_malformed(start + str("regular") + str("executable") + str("yes") + str("contents") + str("x") + str(")"),
                   "non-empty executable marker");
  expect_malformed(start + str("regular") + str(")"), "no contents");
  expect_malformed(start + str("regular") + str("contents") + str("x") + str("executable") + str("") + str(")"),
                   "attribute after contents");
  expect_malformed(start + str("symlink") + str("target") + str("x") + str("target") + str("y") + str(")"),
                   "two targets");
  expect_malformed(start + str("directory") + str("file") + str(")"), "bad directory token");
  expect_malformed(
      start + str("directory") + str("entry") + str("(") + str("node") + file_node("") + str(")") + str(")"),
      "entry without name");
  expect_malformed(
      start + str("directory") + str("entry") + str("(") + str("name") + str("a") + file_node("") + str(")") + str(")"),
      "entry without node keyword");
  expect_malformed(start + str("directory") + str("entry") + str("(") + str("name") + str("a") + str("node") +
                       file_node("") + str("x") + str(")"),
                   "entry not closed");
  expect_malformed(str("nix-archive-1") + str("[") + str("type") + str("regular"), "not '('");
  expect_malformed(str("nix-archive-1") + str("(") + str("kind") + str("regular"), "not 'type'");
  expect_malformed(str("nix-archive-1") + str("(") + str("type") + str(std::string(17, 'r')), "overlong keyword",
                   "exceeds the limit");
}

TEST(NarHostile, ReadsExactlyOneArchive) {
  // The reader stops at the archive's last byte: what follows in a stream is left there.
  std::string archive = rich_archive();
  std::string stream = archive + "NEXT-MESSAGE";
  size_t consumed = 0;
  NarSource counting = [&, inner = source_of(stream)](std::span<std::byte> buf) -> Result<size_t> {
    auto n = inner(buf);
    if (n) consumed += *n;
    return n;
  };
  NullVisitor visitor;
  ASSERT_TRUE(parse_nar(counting, visitor));
  EXPECT_EQ(consumed, archive.size());
}

TEST(NarHostile, OneByteAtATime) {
  std::string archive = rich_archive();
  NarSource trickle = [&, inner = source_of(archive)](std::span<std::byte> buf) -> Result<size_t> {
    return inner(buf.first(std::min<size_t>(buf.size(), 1)));
  };
  auto tree = tree_from_nar(trickle);
  ASSERT_TRUE(tree) << tree.error().message;
  auto whole = tree_from_nar(source_of(archive));
  ASSERT_TRUE(whole);
  EXPECT_EQ(*tree, *whole);
}

TEST(NarHostile, SourceAndVisitorErrorsPropagate) {
  NullVisitor visitor;
  auto failing = parse_nar(
      [](std::span<std::byte>) -> Result<size_t> { return make_error(ECONNRESET, "connection reset"); }, visitor);
  ASSERT_FALSE(failing);
  EXPECT_EQ(failing.error().code, ECONNRESET);

  auto lying = parse_nar([](std::span<std::byte> buf) -> Result<size_t> { return buf.size() + 1; }, visitor);
  ASSERT_FALSE(lying);
  EXPECT_EQ(lying.error().code, EIO);

  struct Refusing : NullVisitor {
    Status symlink(std::string_view, std::string_view) override { return make_error(EPERM, "no symlinks here"); }
  } refusing;
  auto refused = parse_nar(source_of(rich_archive()), refusing);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, EPERM);
}

TEST(NarHostile, RestoreStaysInsideTheDestination) {
  TempDir dir;
  fs::path outside = dir.path() / "outside";
  fs::create_directory(outside);
  auto expect_outside_empty = [&] { EXPECT_TRUE(fs::is_empty(outside)); };

  // A symlink to outside, then entries that would write through it if anything followed links.
  std::string via_link = nar(dir_node({entry("a", symlink_node(outside.string())), entry("b", file_node("payload"))}));
  ASSERT_TRUE(restore_nar(source_of(via_link), dir.path() / "one"));
  EXPECT_TRUE(fs::is_symlink(dir.path() / "one" / "a"));
  expect_outside_empty();
  // Same name twice (symlink, then directory with a file) is refused before anything is written.
  std::string twice = nar(
      dir_node({entry("a", symlink_node(outside.string())), entry("a", dir_node({entry("x", file_node("payload"))}))}));
  EXPECT_FALSE(restore_nar(source_of(twice), dir.path() / "two"));
  expect_outside_empty();
  for (std::string name : {"..", "../outside", "/tmp", "."}) {
    std::string escape = nar(dir_node({entry(name, dir_node({entry("x", file_node("p"))}))}));
    fs::path destination = dir.path() / ("escape" + std::to_string(name.size()));
    auto restored = restore_nar(source_of(escape), destination);
    ASSERT_FALSE(restored) << name;
    EXPECT_EQ(restored.error().code, EINVAL);
  }
  expect_outside_empty();
  EXPECT_FALSE(fs::exists(dir.path() / "x"));

  // A destination that is a symlink to outside is not followed.
  fs::create_symlink(outside, dir.path() / "trap");
  auto trapped = restore_nar(source_of(nar(dir_node({entry("x", file_node("p"))}))), dir.path() / "trap");
  ASSERT_FALSE(trapped);
  EXPECT_EQ(trapped.error().code, EEXIST);
  auto trapped_file = restore_nar(source_of(nar(file_node("p"))), dir.path() / "trap");
  ASSERT_FALSE(trapped_file);
  EXPECT_EQ(trapped_file.error().code, EEXIST);
  expect_outside_empty();
}

}  // namespace
}  // namespace lazystore
