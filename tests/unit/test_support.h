// What unit tests share: a private temporary directory, and the bytes of a file under
// tests/unit/data (LAZYSTORE_TEST_DATA; data/http holds binary-cache files made by Nix, the
// rest golden bytes of the Nix protocols).
#pragma once

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace lazystore {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it — read-only
// directories included — when the object goes.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "lazystore-test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp " + pattern + " failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) chmod(it->path().c_str(), 0755);
    }
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The bytes of tests/unit/data/RELATIVE ("" if it cannot be read).
inline std::string test_data(const std::string& relative) {
  std::ifstream in(std::string(LAZYSTORE_TEST_DATA) + "/" + relative, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A binary-cache file of tests/unit/data/http.
inline std::string http_test_data(const std::string& name) { return test_data("http/" + name); }

}  // namespace lazystore
