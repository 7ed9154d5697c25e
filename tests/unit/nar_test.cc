// NAR writer and reader on real trees: round trips, restore, and bytes identical to Nix's.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "nar.h"
#include "test_support.h"

namespace lazystore {
namespace {

namespace fs = std::filesystem;

// A fresh directory, removed (after making it writable again) at the end of the test.

void write_file(const fs::path& path, std::string_view contents, mode_t mode = 0644) {
  std::ofstream(path, std::ios::binary) << contents;
  chmod(path.c_str(), mode);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string dump(const fs::path& path, size_t* largest_piece = nullptr) {
  std::string out;
  auto status = dump_path(path, [&](std::span<const std::byte> data) -> Status {
    if (largest_piece) *largest_piece = std::max(*largest_piece, data.size());
    out.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  });
  EXPECT_TRUE(status) << status.error().message;
  return out;
}

NarSource source_of(const std::string& data) { return nar_source_from(std::as_bytes(std::span(data))); }

// Everything a visitor sees, as one comparable record per node.
struct Recorder : NarVisitor {
  std::map<std::string, std::string> nodes;  // path → "dir" | "link:T" | "file[x]:CONTENTS"
  std::map<std::string, uint64_t> offsets;
  std::string current;
  size_t largest_piece = 0;

  Status directory(std::string_view path) override {
    nodes[std::string(path)] = "dir";
    return {};
  }
  Status symlink(std::string_view path, std::string_view target) override {
    nodes[std::string(path)] = "link:" + std::string(target);
    return {};
  }
  Status file_begin(std::string_view path, bool executable, uint64_t size, uint64_t nar_offset) override {
    current = std::string(path);
    nodes[current] = executable ? "filex:" : "file:";
    nodes[current].reserve(size);
    offsets[current] = nar_offset;
    return {};
  }
  Status file_data(std::span<const std::byte> data) override {
    largest_piece = std::max(largest_piece, data.size());
    nodes[current].append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }
  Status file_end() override { return {}; }
};

// The same record, made by walking the file system directly.
std::map<std::string, std::string> walk(const fs::path& root) {
  std::map<std::string, std::string> out;
  auto describe = [&](const fs::path& p, const std::string& rel) {
    struct stat st {};
    lstat(p.c_str(), &st);
    if (S_ISDIR(st.st_mode)) {
      out[rel] = "dir";
    } else if (S_ISLNK(st.st_mode)) {
      out[rel] = "link:" + fs::read_symlink(p).string();
    } else {
      out[rel] = ((st.st_mode & S_IXUSR) ? "filex:" : "file:") + read_file(p);
    }
  };
  describe(root, "");
  if (fs::is_directory(fs::symlink_status(root))) {
    for (auto it = fs::recursive_directory_iterator(root); it != fs::end(it); ++it) {
      // (not fs::relative, which resolves symlinks)
      describe(it->path(), it->path().string().substr(root.string().size() + 1));
    }
  }
  return out;
}

std::string big_contents() {
  std::string big;
  for (size_t i = 0; big.size() < 200'003; ++i) big += std::to_string(i * 7919) + ",";
  return big.substr(0, 200'003);  // spans several 64 KiB pieces and needs padding
}

// Files, an executable, an empty file, symlinks (relative, absolute, dangling), nested and empty
// directories, names whose byte order differs from a locale's order.
void make_rich_tree(const fs::path& root) {
  fs::create_directories(root / "sub" / "deeper" / "deepest");
  fs::create_directory(root / "emptydir");
  write_file(root / "hello.txt", "hello\n");
  write_file(root / "run.sh", "#!/bin/sh\necho hi\n", 0755);
  write_file(root / "owner-x-only", "x", 0700);
  write_file(root / "group-x-only", "x", 0654);
  write_file(root / "empty", "");
  write_file(root / "big.bin", big_contents());
  write_file(root / "B", "upper");
  write_file(root / "a-b", "dash");
  write_file(root / "a.b", "dot");
  write_file(root / "_", "underscore");
  write_file(root / "caf\xc3\xa9", "utf-8 name");
  write_file(root / "sub" / "deeper" / "deepest" / "x", std::string(1, '\0') + "binary\xff");
  fs::create_symlink("hello.txt", root / "link");
  fs::create_symlink("/etc/passwd", root / "absolute");
  fs::create_symlink("../nowhere", root / "sub" / "dangling");
  fs::create_symlink("deeper", root / "sub" / "dirlink");
}

TEST(Nar, DumpThenParseGivesTheSameTree) {
  TempDir dir;
  fs::path root = dir.path() / "root";
  make_rich_tree(root);
  size_t largest = 0;
  std::string nar = dump(root, &largest);
  EXPECT_LE(largest, 64u * 1024);
  EXPECT_EQ(nar.size() % 8, 0u);

  Recorder recorder;
  auto parsed = parse_nar(source_of(nar), recorder);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(recorder.nodes, walk(root));
  EXPECT_LE(recorder.largest_piece, 64u * 1024);
  EXPECT_EQ(recorder.nodes.at("owner-x-only"), "filex:x");
  EXPECT_EQ(recorder.nodes.at("group-x-only"), "file:x");
  // nar_offset points at the contents inside the archive.
  for (const auto& [path, offset] : recorder.offsets) {
    std::string contents = recorder.nodes.at(path).substr(recorder.nodes.at(path).find(':') + 1);
    EXPECT_EQ(nar.substr(offset, contents.size()), contents) << path;
  }
}

TEST(Nar, TreeFromNar) {
  TempDir dir;
  fs::path root = dir.path() / "root";
  make_rich_tree(root);
  std::string nar = dump(root);
  auto tree = tree_from_nar(source_of(nar));
  ASSERT_TRUE(tree) << tree.error().message;
  auto expected = walk(root);
  EXPECT_EQ(tree->nodes.size(), expected.size());
  for (const auto& [path, record] : expected) {
    auto node = tree->resolve(path);
    ASSERT_TRUE(node) << path;
    const TreeNode& n = tree->nodes[*node];
    EXPECT_EQ(tree->path_of(*node), path);
    if (record == "dir") {
      EXPECT_EQ(n.type, NodeType::Directory) << path;
    } else if (record.starts_with("link:")) {
      EXPECT_EQ(n.type, NodeType::Symlink) << path;
      EXPECT_EQ(n.target, record.substr(5));
      EXPECT_EQ(n.size, n.target.size());
    } else {
      std::string contents = record.substr(record.find(':') + 1);
      EXPECT_EQ(n.type, NodeType::Regular) << path;
      EXPECT_EQ(n.executable, record.starts_with("filex:")) << path;
      EXPECT_EQ(n.size, contents.size()) << path;
      EXPECT_EQ(nar.substr(n.nar_offset, n.size), contents) << path;
    }
  }
  auto again = Tree::deserialize(tree->serialize());
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, *tree);
}

TEST(Nar, RestoreGivesAnIdenticalTree) {
  TempDir dir;
  fs::path root = dir.path() / "root";
  make_rich_tree(root);
  std::string nar = dump(root);
  fs::path copy = dir.path() / "copy";
  auto restored = restore_nar(source_of(nar), copy);
  ASSERT_TRUE(restored) << restored.error().message;
  EXPECT_EQ(dump(copy), nar);
  EXPECT_EQ(walk(copy), walk(root));
  struct stat st {};
  ASSERT_EQ(lstat(copy.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
  ASSERT_EQ(lstat((copy / "sub" / "deeper").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
  ASSERT_EQ(lstat((copy / "hello.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  ASSERT_EQ(lstat((copy / "run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
  EXPECT_TRUE(fs::is_symlink(copy / "sub" / "dirlink"));

  // The destination must not exist.
  auto again = restore_nar(source_of(nar), copy);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, EEXIST);
}

TEST(Nar, SingleFileAndSymlinkRoots) {
  TempDir dir;
  write_file(dir.path() / "file", "contents", 0755);
  fs::create_symlink("target/of/link", dir.path() / "link");
  for (const char* name : {"file", "link"}) {
    std::string nar = dump(dir.path() / name);
    auto tree = tree_from_nar(source_of(nar));
    ASSERT_TRUE(tree) << tree.error().message;
    ASSERT_EQ(tree->nodes.size(), 1u);
    fs::path copy = dir.path() / (std::string(name) + ".copy");
    ASSERT_TRUE(restore_nar(source_of(nar), copy));
    EXPECT_EQ(dump(copy), nar);
  }
  EXPECT_EQ(fs::read_symlink(dir.path() / "link.copy"), "target/of/link");
  EXPECT_EQ(read_file(dir.path() / "file.copy"), "contents");
}

TEST(Nar, DumpRefusesSpecialFilesAndMissingPaths) {
  TempDir dir;
  ASSERT_EQ(mkfifo((dir.path() / "fifo").c_str(), 0644), 0);
  auto sink = [](std::span<const std::byte>) -> Status { return {}; };
  EXPECT_FALSE(dump_path(dir.path() / "fifo", sink));
  EXPECT_FALSE(dump_path(dir.path(), sink));  // the fifo is inside
  auto missing = dump_path(dir.path() / "missing", sink);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  // A failing sink stops the dump with its error.
  write_file(dir.path() / "f", "x");
  auto failing =
      dump_path(dir.path() / "f", [](std::span<const std::byte>) -> Status { return make_error(ENOSPC, "sink full"); });
  ASSERT_FALSE(failing);
  EXPECT_EQ(failing.error().code, ENOSPC);
}

// ---- compared with Nix ---------------------------------------------------------------------

std::string hex_to_bytes(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

// `nix-store --dump` (Nix 2.8) of a directory holding a ("hi") and b -> a.
constexpr std::string_view kSmallTreeNar =
    "0d000000000000006e69782d617263686976652d3100000001000000000000002800000000000000040000000000"
    "0000747970650000000009000000000000006469726563746f7279000000000000000500000000000000656e7472"
    "790000000100000000000000280000000000000004000000000000006e616d650000000001000000000000006100"
    "00000000000004000000000000006e6f646500000000010000000000000028000000000000000400000000000000"
    "74797065000000000700000000000000726567756c6172000800000000000000636f6e74656e7473020000000000"
    "00006869000000000000010000000000000029000000000000000100000000000000290000000000000005000000"
    "00000000656e7472790000000100000000000000280000000000000004000000000000006e616d65000000000100"
    "000000000000620000000000000004000000000000006e6f64650000000001000000000000002800000000000000"
    "04000000000000007479706500000000070000000000000073796d6c696e6b000600000000000000746172676574"
    "00000100000000000000610000000000000001000000000000002900000000000000010000000000000029000000"
    "0000000001000000000000002900000000000000";

TEST(Nar, MatchesGoldenBytesOfNix) {
  TempDir dir;
  fs::create_directory(dir.path() / "small");
  write_file(dir.path() / "small" / "a", "hi");
  fs::create_symlink("a", dir.path() / "small" / "b");
  std::string nar = dump(dir.path() / "small");
  std::string golden = hex_to_bytes(kSmallTreeNar);
  EXPECT_EQ(golden.size(), 480u);
  EXPECT_TRUE(nar == golden);

  // `nix-store --dump` of a file holding "hello".
  write_file(dir.path() / "f", "hello");
  EXPECT_EQ(dump(dir.path() / "f"),
            hex_to_bytes("0d000000000000006e69782d617263686976652d31000000010000000000000028000000"
                         "00000000040000000000000074797065000000000700000000000000726567756c617200"
                         "0800000000000000636f6e74656e7473050000000000000068656c6c6f00000001000000"
                         "000000002900000000000000"));
}

// The content offsets `nix nar ls --json -R` reports for this tree (Nix 2.8).
TEST(Nar, OffsetsMatchNixListing) {
  TempDir dir;
  fs::path t = dir.path() / "t";
  fs::create_directories(t / "sub" / "deeper");
  fs::create_directory(t / "emptydir");
  write_file(t / "hello.txt", "hello\n");
  write_file(t / "run.sh", "#!/bin/sh\necho hi\n", 0755);
  write_file(t / "empty", "");
  fs::create_symlink("hello.txt", t / "link");
  fs::create_symlink("../nowhere", t / "sub" / "dangling");
  write_file(t / "sub" / "deeper" / "x", "x");
  std::string nar = dump(t);
  EXPECT_EQ(nar.size(), 1816u);
  auto tree = tree_from_nar(source_of(nar));
  ASSERT_TRUE(tree) << tree.error().message;
  const std::pair<const char*, uint64_t> offsets[] = {
      {"empty", 232}, {"hello.txt", 592}, {"run.sh", 1016}, {"sub/deeper/x", 1696}};
  for (auto [path, offset] : offsets) {
    auto node = tree->resolve(path);
    ASSERT_TRUE(node) << path;
    EXPECT_EQ(tree->nodes[*node].nar_offset, offset) << path;
  }
}

// Runs `nix-store --dump PATH` when Nix is installed.
std::optional<std::string> nix_dump(const fs::path& path) {
  if (std::system("command -v nix-store >/dev/null 2>&1") != 0) return std::nullopt;
  std::string command = "nix-store --dump '" + path.string() + "'";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buf[65536];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  if (pclose(pipe) != 0) return std::nullopt;
  return out;
}

TEST(Nar, IdenticalToNixStoreDump) {
  TempDir dir;
  fs::path root = dir.path() / "root";
  make_rich_tree(root);
  auto nix = nix_dump(root);
  if (!nix) GTEST_SKIP() << "nix-store is not available";
  std::string ours = dump(root);
  ASSERT_EQ(ours.size(), nix->size());
  EXPECT_TRUE(ours == *nix);
  auto single = nix_dump(root / "run.sh");
  ASSERT_TRUE(single);
  EXPECT_TRUE(dump(root / "run.sh") == *single);
  auto link = nix_dump(root / "link");
  ASSERT_TRUE(link);
  EXPECT_TRUE(dump(root / "link") == *link);
}

}  // namespace
}  // namespace lazystore
