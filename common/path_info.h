// What Nix knows about a valid store path (its ValidPathInfo), as the serve and the worker
// protocol carry it. Paths are absolute ("/nix/store/…").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lazystore {

struct PathInfo {
  std::string path;
  std::string deriver;                  // "" when unknown
  std::vector<std::string> references;  // may include the path itself
  uint64_t download_size = 0;
  uint64_t nar_size = 0;
  std::string nar_hash;  // "sha256:<nix32>" as Nix prints it; "" from servers older than 2.4
  std::string ca;        // content address, "" when input-addressed
  std::vector<std::string> sigs;
  uint64_t registration_time = 0;
  bool ultimate = false;
};

}  // namespace lazystore
