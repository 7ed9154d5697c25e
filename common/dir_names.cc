#include "dir_names.h"

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string_view>

#include "io.h"

namespace lazystore {
namespace {

struct DirCloser {
  void operator()(DIR* dir) const { closedir(dir); }
};

}  // namespace

Result<std::vector<std::string>> dir_names(Fd fd, const std::string& what) {
  std::unique_ptr<DIR, DirCloser> dir(fdopendir(fd.get()));
  if (!dir) return errno_error("opendir " + what);
  fd.release();
  std::vector<std::string> names;
  errno = 0;
  while (dirent* entry = readdir(dir.get())) {
    std::string_view name(entry->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  if (errno != 0) return errno_error("readdir " + what);
  std::sort(names.begin(), names.end());  // std::string orders bytewise
  return names;
}

}  // namespace lazystore
