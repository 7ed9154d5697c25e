#include "dir_upstream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "dir_names.h"
#include "io.h"
#include "open_beneath.h"

namespace lazystore {
namespace {

class TreeWalker {
 public:
  TreeWalker(Tree& tree, std::string root_name) : tree_(tree), root_name_(std::move(root_name)) {}

  Status walk(int dir_fd, uint32_t node, size_t depth) {
    if (depth > Tree::kMaxDepth) return make_error(ELOOP, root_name_ + ": directory tree too deep");
    Fd self(openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!self) return errno_error(errno, root_name_ + "/" + tree_.path_of(node));
    auto names = dir_names(std::move(self), root_name_ + "/" + tree_.path_of(node));
    if (!names) return names.error();
    for (const std::string& name : *names) {
      struct stat st {};
      if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return errno_error(errno, "stat " + root_name_ + "/" + tree_.path_of(node) + "/" + name);
      }
      auto child = add(node, name, st, dir_fd);
      if (!child) return child.error();
      if (S_ISDIR(st.st_mode)) {
        Fd sub(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub) return errno_error(errno, "open " + root_name_ + "/" + tree_.path_of(*child));
        if (auto st2 = walk(sub.get(), *child, depth + 1); !st2) return st2;
      }
    }
    return {};
  }

  // Fills in the attributes of node from `st`; for a symlink reads its target at (dir_fd, name).
  static Status describe(TreeNode& node, const struct stat& st, int dir_fd, const std::string& name,
                         const std::string& what) {
    if (S_ISREG(st.st_mode)) {
      // A sparse file may claim any size: past the largest served, the store path is refused.
      if (auto bounded = Tree::check_file_size(static_cast<uint64_t>(st.st_size), what); !bounded) {
        return bounded;
      }
      node.size = static_cast<uint64_t>(st.st_size);
      node.executable = (st.st_mode & S_IXUSR) != 0;
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(Tree::kMaxTargetLength + 1, '\0');
      ssize_t n = readlinkat(dir_fd, name.c_str(), target.data(), target.size());
      if (n < 0) return errno_error(errno, "readlink " + what);
      if (static_cast<size_t>(n) > Tree::kMaxTargetLength || n == 0) {
        return make_error(EIO, what + ": symlink target empty or too long");
      }
      target.resize(static_cast<size_t>(n));
      node.size = target.size();
      node.target = std::move(target);
    }
    return {};
  }

 private:
  Result<uint32_t> add(uint32_t parent, const std::string& name, const struct stat& st, int dir_fd) {
    NodeType type;
    if (S_ISREG(st.st_mode)) {
      type = NodeType::Regular;
    } else if (S_ISDIR(st.st_mode)) {
      type = NodeType::Directory;
    } else if (S_ISLNK(st.st_mode)) {
      type = NodeType::Symlink;
    } else {
      return make_error(EIO,
                        root_name_ + "/" + tree_.path_of(parent) + "/" + name + ": not a file, directory or symlink");
    }
    auto child = tree_.add_child(parent, name, type);
    if (!child) return child.error();
    auto described = describe(tree_.nodes[*child], st, dir_fd, name, root_name_ + "/" + tree_.path_of(*child));
    if (!described) return described.error();
    return *child;
  }

  Tree& tree_;
  std::string root_name_;
};

}  // namespace

Result<std::unique_ptr<DirUpstream>> DirUpstream::open(const std::string& directory) {
  return std::unique_ptr<DirUpstream>(new DirUpstream(directory));
}

Result<Fd> DirUpstream::open_root() const {
  Fd root(::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) {
    // The message says what is wrong (ENOENT's "No such file or directory"); the code is EIO so
    // that a lookup fails as "upstream unreachable", not as "no such store path".
    Error error = errno_error(errno, "upstream directory " + directory_);
    if (error.code == ENOENT) error.code = EIO;
    return error;
  }
  return root;
}

bool DirUpstream::is_lock_file(int root, const std::string& name) {
  constexpr std::string_view kLock = ".lock";
  if (!name.ends_with(kLock) || !StorePath::is_valid(name.substr(0, name.size() - kLock.size()))) {
    return false;
  }
  struct stat st {};
  // Nix's lock files are empty (one byte once abandoned); a real store path named *.lock is
  // told apart by not being one.
  return fstatat(root, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_size <= 1;
}

Result<Fd> DirUpstream::open_beneath(const Fd& root, const std::string& relative, int flags) const {
  auto fd = lazystore::open_beneath(root.get(), relative, flags);
  if (!fd) return errno_error(fd.error().code, directory_ + "/" + relative);
  return fd;
}

Result<bool> DirUpstream::exists(const StorePath& path) {
  if (StorePath::is_build_scratch(path.base_name())) return false;
  auto root = open_root();
  if (!root) return root.error();
  struct stat st {};
  std::string lock = path.base_name() + ".lock";
  if (fstatat(root->get(), lock.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return false;
  if (errno != ENOENT) return errno_error(errno, directory_ + "/" + lock);
  if (is_lock_file(root->get(), path.base_name())) return false;
  if (fstatat(root->get(), path.base_name().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
  if (errno == ENOENT) return false;
  return errno_error(errno, directory_ + "/" + path.base_name());
}

Result<std::vector<StorePath>> DirUpstream::list_store() {
  auto root = open_root();
  if (!root) return root.error();
  Fd self(openat(root->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!self) return errno_error(errno, directory_);
  auto names = dir_names(std::move(self), directory_);
  if (!names) return names.error();
  std::vector<StorePath> paths;
  for (const std::string& name : *names) {
    if (!StorePath::is_valid(name) || StorePath::is_build_scratch(name)) continue;
    // A "<name>.lock" sibling means Nix is still writing the path.
    if (std::binary_search(names->begin(), names->end(), name + ".lock")) continue;
    if (is_lock_file(root->get(), name)) continue;
    paths.emplace_back(name);
  }
  return paths;
}

Result<Tree> DirUpstream::list_tree(const StorePath& path) {
  auto root = open_root();
  if (!root) return root.error();
  struct stat st {};
  if (fstatat(root->get(), path.base_name().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno_error(errno, directory_ + "/" + path.base_name());
  }
  if (S_ISDIR(st.st_mode)) {
    Tree tree = Tree::with_root(NodeType::Directory);
    auto dir = open_beneath(*root, path.base_name(), O_RDONLY | O_DIRECTORY);
    if (!dir) return dir.error();
    TreeWalker walker(tree, directory_ + "/" + path.base_name());
    if (auto walked = walker.walk(dir->get(), Tree::kRoot, 0); !walked) return walked.error();
    return tree;
  }
  if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
    return make_error(EIO, directory_ + "/" + path.base_name() + ": not a file, directory or symlink");
  }
  Tree tree = Tree::with_root(S_ISREG(st.st_mode) ? NodeType::Regular : NodeType::Symlink);
  auto described = TreeWalker::describe(tree.nodes[Tree::kRoot], st, root->get(), path.base_name(),
                                        directory_ + "/" + path.base_name());
  if (!described) return described.error();
  return tree;
}

Result<size_t> DirUpstream::read(const StorePath& path, const Tree& tree, uint32_t node, uint64_t offset,
                                 std::span<std::byte> buf) {
  std::string relative = path.base_name();
  if (node != Tree::kRoot) relative += "/" + tree.path_of(node);
  auto root = open_root();
  if (!root) return root.error();
  auto fd = open_beneath(*root, relative, O_RDONLY);
  if (!fd) return fd.error();
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = pread(fd->get(), buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "read " + directory_ + "/" + relative);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<UpstreamStatfs> DirUpstream::statfs() {
  auto root = open_root();
  if (!root) return root.error();
  struct statvfs st {};
  if (fstatvfs(root->get(), &st) != 0) return errno_error(errno, "statfs " + directory_);
  return UpstreamStatfs::of(st);
}

}  // namespace lazystore
