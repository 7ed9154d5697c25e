// The HTTP unit tests' data files (tests/unit/data/http, made by Nix): one file's bytes.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace lazystore {

inline std::string http_test_data(const std::string& name) {
  std::ifstream in(std::string(HTTP_TEST_DATA) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace lazystore
