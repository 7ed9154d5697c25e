// Which store paths a push is about: command-line arguments resolved to store paths, and a
// closure put in reference order (a path after everything it references).
#pragma once

#include <string>
#include <vector>

#include "result.h"
#include "serve_protocol.h"

namespace lazystore {

// "/nix/store/<hash>-<name>[/sub/path]" or a symlink chain that ends there (such as `result`,
// whose target need not exist on this host when the store lives under another root).
Result<std::string> resolve_store_path(const std::string& argument);

// Orders `infos` so that every path comes after the paths it references (self-references
// ignored); ties broken by path so the order is reproducible. EINVAL if a reference is missing
// from the set or the references form a cycle.
Result<std::vector<serve::PathInfo>> order_by_references(std::vector<serve::PathInfo> infos);

}  // namespace lazystore
