// A binary cache's `<hash>.ls` NAR listing (`write-nar-listing=true`) → the Tree of a store path,
// with each regular file's `narOffset`, so a file can be read with one range request into the
// uncompressed NAR. The input is hostile: size, nesting depth, node count, names and targets are
// bounded and validated; anything malformed is EINVAL, never a crash or unbounded memory.
#pragma once

#include <string_view>

#include "result.h"
#include "tree.h"

namespace lazystore {

// A listing larger than this is refused before it is parsed (HTTP: before it is downloaded).
inline constexpr size_t kMaxNarListingBytes = 64u << 20;

// {"version":1,"root":{"type":"directory","entries":{"name":{"type":"regular","size":N,
//  "executable":true,"narOffset":N},"l":{"type":"symlink","target":"..."}}}}
Result<Tree> parse_nar_listing(std::string_view json);

}  // namespace lazystore
