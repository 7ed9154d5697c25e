#include "nar.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dir_names.h"
#include "fd.h"
#include "io.h"
#include "little_endian.h"

namespace lazystore {
namespace {

constexpr size_t kPiece = 64 * 1024;  // bound of every buffer and of every sink/source call
constexpr std::string_view kMagic = "nix-archive-1";
constexpr size_t kMaxKeyword = 16;  // longer than any keyword ("nix-archive-1" is the longest)

size_t padding_of(uint64_t size) { return static_cast<size_t>((8 - size % 8) % 8); }

// Hostile bytes end up in messages: printable ASCII only, and not too much of it.
std::string printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (text.size() > 64) out += "...";
  return out;
}

bool is_entry_name(std::string_view name, size_t max) {
  return !name.empty() && name.size() <= max && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

// ---- reading ---------------------------------------------------------------------------------

// Pulls exactly what each item needs from the source, so it never reads past the archive's end
// (an archive can sit inside a protocol stream) and never holds more than a piece at a time.
class NarReader {
 public:
  NarReader(const NarSource& source, NarVisitor& visitor, const NarLimits& limits)
      : source_(source), visitor_(visitor), limits_(limits) {}

  Status parse() {
    if (auto s = expect(kMagic, "archive magic"); !s) return s;
    std::string path;             // of the node being parsed
    std::vector<Directory> dirs;  // open directories, root first
    while (true) {
      if (auto s = parse_node(path, dirs); !s) return s;
      // Find the next node: the next entry of the innermost open directory, closing finished ones.
      while (true) {
        if (dirs.empty()) return {};  // the root node is complete
        Directory& dir = dirs.back();
        if (dir.in_entry) {
          if (auto s = expect(")", "end of entry"); !s) return s;
          dir.in_entry = false;
        }
        path.resize(dir.path_length);
        auto entry = next_entry(dir, dirs.size(), path);
        if (!entry) return entry.error();
        if (*entry) {
          dir.in_entry = true;
          break;
        }
        dirs.pop_back();
      }
    }
  }

 private:
  struct Directory {
    size_t path_length;
    std::string last_name;  // entries must come strictly sorted
    bool in_entry = false;  // an entry's node has been parsed, its closing ')' not yet
  };

  Error malformed(uint64_t at, const std::string& what) const {
    return make_error(EINVAL, "malformed NAR at byte " + std::to_string(at) + ": " + what);
  }

  // Exactly out.size() bytes; the end of input here means a truncated archive.
  Status fill(std::span<std::byte> out, const char* what) {
    size_t got = 0;
    while (got < out.size()) {
      auto n = source_(out.subspan(got));
      if (!n) return n.error();
      if (*n > out.size() - got) return make_error(EIO, "NAR source returned more than asked");
      if (*n == 0) {
        return make_error(EPROTO, "truncated NAR at byte " + std::to_string(offset_) + ": end of input inside " + what);
      }
      got += *n;
      offset_ += *n;
    }
    return {};
  }

  Result<uint64_t> read_u64(const char* what) {
    std::array<std::byte, 8> bytes;
    if (auto s = fill(bytes, what); !s) return s.error();
    return get_u64_le(bytes.data());
  }

  Status check_padding(uint64_t size, const char* what) {
    std::array<std::byte, 8> pad{};
    uint64_t at = offset_;
    auto part = std::span(pad).first(padding_of(size));
    if (auto s = fill(part, what); !s) return s;
    for (std::byte b : part) {
      if (b != std::byte{0}) return malformed(at, std::string("nonzero padding after ") + what);
    }
    return {};
  }

  // A string of at most `max` bytes; it grows as bytes arrive, not by the declared length.
  Status read_string(size_t max, std::string& out, const char* what) {
    uint64_t at = offset_;
    auto length = read_u64(what);
    if (!length) return length.error();
    if (*length > max) {
      return malformed(at, std::string(what) + " of " + std::to_string(*length) + " bytes exceeds the limit of " +
                               std::to_string(max));
    }
    out.clear();
    while (out.size() < *length) {
      size_t old = out.size();
      size_t piece = std::min<uint64_t>(*length - old, kPiece);
      out.resize(old + piece);
      if (auto s = fill(std::as_writable_bytes(std::span(out).subspan(old)), what); !s) return s;
    }
    return check_padding(*length, what);
  }

  Status expect(std::string_view keyword, const char* what) {
    uint64_t at = offset_;
    std::string got;
    if (auto s = read_string(kMaxKeyword, got, what); !s) return s;
    if (got != keyword) {
      return malformed(at, "expected '" + std::string(keyword) + "' (" + what + "), found '" + printable(got) + "'");
    }
    return {};
  }

  // One node at `path`: a file or symlink completely; a directory up to its first entry.
  Status parse_node(const std::string& path, std::vector<Directory>& dirs) {
    uint64_t at = offset_;
    if (++nodes_ > limits_.max_entries) {
      return malformed(at, "more than " + std::to_string(limits_.max_entries) + " entries");
    }
    if (auto s = expect("(", "start of node"); !s) return s;
    if (auto s = expect("type", "node type"); !s) return s;
    std::string type;
    at = offset_;
    if (auto s = read_string(kMaxKeyword, type, "node type"); !s) return s;
    if (type == "regular") return parse_regular(path);
    if (type == "symlink") return parse_symlink(path);
    if (type != "directory") return malformed(at, "unknown node type '" + printable(type) + "'");
    if (auto s = visitor_.directory(path); !s) return s;
    dirs.push_back(Directory{path.size(), {}, false});  // its entries come next
    return {};
  }

  Status parse_regular(const std::string& path) {
    uint64_t at = offset_;
    std::string keyword;
    if (auto s = read_string(kMaxKeyword, keyword, "file attribute"); !s) return s;
    bool executable = keyword == "executable";
    if (executable) {
      at = offset_;
      if (auto s = read_string(kMaxKeyword, keyword, "executable marker"); !s) return s;
      if (!keyword.empty()) return malformed(at, "executable marker is not empty");
      at = offset_;
      if (auto s = read_string(kMaxKeyword, keyword, "file attribute"); !s) return s;
    }
    if (keyword != "contents") {
      return malformed(at, "expected 'contents', found '" + printable(keyword) + "'");
    }
    auto size = read_u64("file size");
    if (!size) return size.error();
    if (auto s = visitor_.file_begin(path, executable, *size, offset_); !s) return s;
    if (buffer_.empty()) buffer_.resize(kPiece);
    for (uint64_t left = *size; left > 0;) {
      auto piece = std::span(buffer_).first(static_cast<size_t>(std::min<uint64_t>(left, kPiece)));
      if (auto s = fill(piece, "file contents"); !s) return s;
      if (auto s = visitor_.file_data(piece); !s) return s;
      left -= piece.size();
    }
    if (auto s = check_padding(*size, "file contents"); !s) return s;
    if (auto s = visitor_.file_end(); !s) return s;
    return expect(")", "end of file node");
  }

  Status parse_symlink(const std::string& path) {
    if (auto s = expect("target", "symlink target"); !s) return s;
    uint64_t at = offset_;
    std::string target;
    if (auto s = read_string(limits_.max_target, target, "symlink target"); !s) return s;
    if (target.empty() || target.find('\0') != std::string::npos) {
      return malformed(at, "symlink target is empty or contains NUL");
    }
    if (auto s = expect(")", "end of symlink node"); !s) return s;
    return visitor_.symlink(path, target);
  }

  // Reads "entry ( name N node" (true, `path` extended by N) or the directory's ")" (false).
  Result<bool> next_entry(Directory& dir, size_t depth, std::string& path) {
    uint64_t at = offset_;
    std::string keyword;
    if (auto s = read_string(kMaxKeyword, keyword, "directory entry"); !s) return s.error();
    if (keyword == ")") return false;
    if (keyword != "entry") {
      return malformed(at, "expected 'entry' or ')', found '" + printable(keyword) + "'");
    }
    if (auto s = expect("(", "start of entry"); !s) return s.error();
    if (auto s = expect("name", "entry name"); !s) return s.error();
    at = offset_;
    std::string name;
    if (auto s = read_string(limits_.max_name, name, "entry name"); !s) return s.error();
    if (!is_entry_name(name, limits_.max_name)) {
      return malformed(at, "invalid entry name '" + printable(name) + "'");
    }
    if (!(dir.last_name < name)) {
      return malformed(at, "entry '" + printable(name) + "' is not sorted or is a duplicate");
    }
    if (depth > limits_.max_depth) {
      return malformed(at, "directories nested deeper than " + std::to_string(limits_.max_depth));
    }
    dir.last_name = name;
    if (auto s = expect("node", "entry node"); !s) return s.error();
    if (!path.empty()) path += '/';
    path += name;
    return true;
  }

  const NarSource& source_;
  NarVisitor& visitor_;
  NarLimits limits_;
  uint64_t offset_ = 0;
  uint64_t nodes_ = 0;
  std::vector<std::byte> buffer_;
};

// Splits "a/b/c" into its depth (3) and last component ("c").
std::pair<size_t, std::string_view> depth_and_name(std::string_view path) {
  size_t slash = path.rfind('/');
  size_t depth = 1 + static_cast<size_t>(std::count(path.begin(), path.end(), '/'));
  return {depth, slash == std::string_view::npos ? path : path.substr(slash + 1)};
}

// ---- NAR → Tree ------------------------------------------------------------------------------

class TreeBuilder : public NarVisitor {
 public:
  Tree take() { return std::move(tree_); }

  Status directory(std::string_view path) override {
    auto node = place(path, NodeType::Directory);
    if (!node) return node.error();
    open_dirs_.push_back(*node);
    return {};
  }
  Status symlink(std::string_view path, std::string_view target) override {
    auto node = place(path, NodeType::Symlink);
    if (!node) return node.error();
    tree_.nodes[*node].target.assign(target);
    tree_.nodes[*node].size = target.size();
    return {};
  }
  Status file_begin(std::string_view path, bool executable, uint64_t size, uint64_t nar_offset) override {
    auto node = place(path, NodeType::Regular);
    if (!node) return node.error();
    tree_.nodes[*node].executable = executable;
    tree_.nodes[*node].size = size;
    tree_.nodes[*node].nar_offset = nar_offset;
    return {};
  }
  Status file_data(std::span<const std::byte>) override { return {}; }
  Status file_end() override { return {}; }

 private:
  // parse_nar reports depth-first, so a node's parent is the open directory one level up.
  Result<uint32_t> place(std::string_view path, NodeType type) {
    if (path.empty()) {
      tree_ = Tree::with_root(type);
      return Tree::kRoot;
    }
    auto [depth, name] = depth_and_name(path);
    if (depth > open_dirs_.size()) return make_error(EINVAL, "NAR entry outside its directory");
    open_dirs_.resize(depth);
    return tree_.add_child(open_dirs_.back(), name, type);
  }

  Tree tree_;
  std::vector<uint32_t> open_dirs_;
};

// ---- unpacking -------------------------------------------------------------------------------

// Creates everything relative to directory fds it made itself, with O_EXCL/O_NOFOLLOW, from
// validated names: a hostile archive cannot reach outside the destination.
class Restorer : public NarVisitor {
 public:
  Restorer(Fd parent, std::string root_name) : parent_(std::move(parent)), root_name_(std::move(root_name)) {}

  Status finish() { return close_dirs(0); }

  Status directory(std::string_view path) override {
    auto at = place(path);
    if (!at) return at.error();
    if (mkdirat(at->first, at->second.c_str(), 0700) != 0) return failed("mkdir", path);
    Fd fd(openat(at->first, at->second.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return failed("open", path);
    dirs_.push_back(std::move(fd));
    return {};
  }
  Status symlink(std::string_view path, std::string_view target) override {
    auto at = place(path);
    if (!at) return at.error();
    if (symlinkat(std::string(target).c_str(), at->first, at->second.c_str()) != 0) {
      return failed("symlink", path);
    }
    return {};
  }
  Status file_begin(std::string_view path, bool executable, uint64_t, uint64_t) override {
    auto at = place(path);
    if (!at) return at.error();
    file_.reset(openat(at->first, at->second.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!file_) return failed("create", path);
    executable_ = executable;
    file_path_.assign(path);
    return {};
  }
  Status file_data(std::span<const std::byte> data) override {
    while (!data.empty()) {
      ssize_t n = ::write(file_.get(), data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return failed("write", file_path_);
      data = data.subspan(static_cast<size_t>(n));
    }
    return {};
  }
  Status file_end() override {
    if (fchmod(file_.get(), executable_ ? 0555 : 0444) != 0) return failed("chmod", file_path_);
    if (::close(file_.release()) != 0) return failed("close", file_path_);
    return {};
  }

 private:
  Error failed(const char* what, std::string_view path) const {
    return errno_error(errno, std::string("restoring NAR: ") + what + " " + root_name_ + (path.empty() ? "" : "/") +
                                  std::string(path));
  }

  // Directories get their final mode once all their entries exist.
  Status close_dirs(size_t keep) {
    while (dirs_.size() > keep) {
      if (fchmod(dirs_.back().get(), 0555) != 0) return failed("chmod", "(directory)");
      dirs_.pop_back();
    }
    return {};
  }

  // The directory fd and name at which `path` is created.
  Result<std::pair<int, std::string>> place(std::string_view path) {
    if (path.empty()) return std::pair<int, std::string>(parent_.get(), root_name_);
    auto [depth, name] = depth_and_name(path);
    if (depth > dirs_.size()) return make_error(EINVAL, "NAR entry outside its directory");
    if (auto s = close_dirs(depth); !s) return s.error();
    return std::pair<int, std::string>(dirs_.back().get(), std::string(name));
  }

  Fd parent_;
  std::string root_name_;
  std::vector<Fd> dirs_;  // open directories, root first
  Fd file_;
  bool executable_ = false;
  std::string file_path_;
};

// ---- writing ---------------------------------------------------------------------------------

// Collects output into pieces of at most kPiece bytes for the sink.
class NarWriter {
 public:
  explicit NarWriter(const NarSink& sink) : sink_(sink) { buffer_.reserve(kPiece); }

  Status archive(const std::filesystem::path& path) {
    if (auto s = put_string(kMagic); !s) return s;
    return dump(AT_FDCWD, path.c_str(), path.string(), 0);
  }

  Status flush() {
    if (buffer_.empty()) return {};
    auto s = sink_(buffer_);
    buffer_.clear();
    return s;
  }

 private:
  Status dump(int at, const char* name, const std::string& shown, size_t depth) {
    struct stat st {};
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_error(errno, "lstat " + shown);
    }
    if (auto s = put_strings({"(", "type"}); !s) return s;
    Status done;
    if (S_ISREG(st.st_mode)) {
      done = dump_file(at, name, shown);
    } else if (S_ISLNK(st.st_mode)) {
      done = dump_symlink(at, name, shown);
    } else if (S_ISDIR(st.st_mode)) {
      done = dump_directory(at, name, shown, depth);
    } else {
      done = make_error(ENOTSUP, shown + ": not a file, directory or symlink");
    }
    if (!done) return done;
    return put_string(")");
  }

  Status dump_file(int at, const char* name, const std::string& shown) {
    // O_NONBLOCK: if the file was swapped for a FIFO since lstat, opening must not hang.
    Fd fd(openat(at, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!fd) return errno_error(errno, "open " + shown);
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return errno_error(errno, "stat " + shown);
    if (!S_ISREG(st.st_mode)) return make_error(EAGAIN, shown + ": changed while being dumped");
    if (auto s = put_string("regular"); !s) return s;
    if ((st.st_mode & S_IXUSR) != 0) {
      if (auto s = put_strings({"executable", ""}); !s) return s;
    }
    if (auto s = put_string("contents"); !s) return s;
    auto size = static_cast<uint64_t>(st.st_size);
    if (auto s = put_u64(size); !s) return s;
    if (piece_.empty()) piece_.resize(kPiece);
    auto piece = std::span(piece_);
    for (uint64_t left = size; left > 0;) {
      auto want = static_cast<size_t>(std::min<uint64_t>(left, kPiece));
      ssize_t n = ::read(fd.get(), piece.data(), want);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error(errno, "read " + shown);
      if (n == 0) return make_error(EAGAIN, shown + ": shrank while being dumped");
      if (auto s = put(piece.first(static_cast<size_t>(n))); !s) return s;
      left -= static_cast<uint64_t>(n);
    }
    return put_padding(size);
  }

  Status dump_symlink(int at, const char* name, const std::string& shown) {
    std::array<char, 8192> target;  // more than Linux allows (PATH_MAX): a full buffer is an error
    ssize_t n = readlinkat(at, name, target.data(), target.size());
    if (n < 0) return errno_error(errno, "readlink " + shown);
    if (static_cast<size_t>(n) == target.size()) return make_error(ENAMETOOLONG, shown);
    std::string_view text(target.data(), static_cast<size_t>(n));
    return put_strings({"symlink", "target", text});
  }

  Status dump_directory(int at, const char* name, const std::string& shown, size_t depth) {
    Fd fd(openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return errno_error(errno, "open " + shown);
    auto names = dir_names(Fd(dup(fd.get())), shown);  // fd stays open for the entries
    if (!names) return names.error();
    // parse_nar would refuse deeper entries, so do not write them either.
    if (!names->empty() && depth + 1 > Tree::kMaxDepth) {
      return make_error(ELOOP, shown + ": directories nested deeper than " + std::to_string(Tree::kMaxDepth));
    }
    if (auto s = put_string("directory"); !s) return s;
    for (const std::string& entry : *names) {
      if (auto s = put_strings({"entry", "(", "name", entry, "node"}); !s) return s;
      auto s = dump(fd.get(), entry.c_str(), shown + "/" + entry, depth + 1);
      if (!s) return s;
      if (auto s = put_string(")"); !s) return s;
    }
    return {};
  }

  Status put(std::span<const std::byte> data) {
    while (!data.empty()) {
      size_t n = std::min(data.size(), kPiece - buffer_.size());
      buffer_.insert(buffer_.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(n));
      data = data.subspan(n);
      if (buffer_.size() == kPiece) {
        if (auto s = flush(); !s) return s;
      }
    }
    return {};
  }
  Status put_u64(uint64_t value) {
    std::array<std::byte, 8> bytes;
    put_u64_le(bytes.data(), value);
    return put(bytes);
  }
  Status put_padding(uint64_t size) {
    static constexpr std::array<std::byte, 8> kZeros{};
    return put(std::span(kZeros).first(padding_of(size)));
  }
  Status put_string(std::string_view text) {
    if (auto s = put_u64(text.size()); !s) return s;
    if (auto s = put(std::as_bytes(std::span(text))); !s) return s;
    return put_padding(text.size());
  }
  Status put_strings(std::initializer_list<std::string_view> texts) {
    for (std::string_view text : texts) {
      if (auto s = put_string(text); !s) return s;
    }
    return {};
  }

  const NarSink& sink_;
  std::vector<std::byte> buffer_;  // output not yet given to the sink
  std::vector<std::byte> piece_;   // file contents being read
};

}  // namespace

Status parse_nar(const NarSource& source, NarVisitor& visitor, const NarLimits& limits) {
  return NarReader(source, visitor, limits).parse();
}

Result<Tree> tree_from_nar(const NarSource& source, const NarLimits& limits) {
  TreeBuilder builder;
  if (auto s = parse_nar(source, builder, limits); !s) return s.error();
  return builder.take();
}

Status restore_nar(const NarSource& source, const std::filesystem::path& destination, const NarLimits& limits) {
  std::filesystem::path target = destination;
  if (!target.has_filename()) target = target.parent_path();  // "dir/" names "dir"
  std::filesystem::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  Fd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent_fd) return errno_error(errno, "restoring NAR: open " + parent.string());
  Restorer restorer(std::move(parent_fd), target.filename().string());
  if (auto s = parse_nar(source, restorer, limits); !s) return s;
  return restorer.finish();
}

Status dump_path(const std::filesystem::path& path, const NarSink& sink) {
  NarWriter writer(sink);
  if (auto s = writer.archive(path); !s) return s;
  return writer.flush();
}

NarSource nar_source_from(std::span<const std::byte> data) {
  return [data, pos = size_t{0}](std::span<std::byte> buf) mutable -> Result<size_t> {
    size_t n = std::min(buf.size(), data.size() - pos);
    if (n > 0) std::memcpy(buf.data(), data.data() + pos, n);
    pos += n;
    return n;
  };
}

}  // namespace lazystore
