// A validated Nix store path name: "<32 nix32 chars>-<name>", the name 1..211 chars of
// [0-9a-zA-Z+-._?=], not "." or ".." and not starting with ".-" or "..-" (Nix's checkName; a
// leading '.' is otherwise valid, Nix 2.8 makes such paths). An invalid name cannot be a StorePath.
#pragma once

#include <compare>
#include <string>
#include <string_view>

#include "result.h"

namespace lazystore {

class StorePath {
 public:
  static constexpr size_t kHashLength = 32;
  static constexpr size_t kMaxNameLength = 211;
  static constexpr std::string_view kStoreDir = "/nix/store";

  // Throws std::invalid_argument for an invalid base name; use parse() where input is untrusted.
  explicit StorePath(std::string_view base_name);

  // "<hash>-<name>" → StorePath, or EINVAL-coded error saying what is wrong.
  static Result<StorePath> parse(std::string_view base_name);
  // "/nix/store/<hash>-<name>[/...]" → the store path it is in (the rest is ignored).
  static Result<StorePath> parse_absolute(std::string_view path);
  static bool is_valid(std::string_view base_name);

  const std::string& base_name() const { return base_; }  // "<hash>-<name>"
  std::string_view hash_part() const { return std::string_view(base_).substr(0, kHashLength); }
  std::string_view name() const { return std::string_view(base_).substr(kHashLength + 1); }
  std::string absolute() const { return std::string(kStoreDir) + "/" + base_; }

  // Nix's scratch directory of a sandboxed build, "<drv hash>-<name>.drv.chroot", which sits in
  // the real store directory while the build runs: a valid name, never a store path.
  static bool is_build_scratch(std::string_view base_name) { return base_name.ends_with(".drv.chroot"); }

  auto operator<=>(const StorePath&) const = default;

 private:
  struct Unchecked {};
  StorePath(Unchecked, std::string base) : base_(std::move(base)) {}
  std::string base_;
};

}  // namespace lazystore
