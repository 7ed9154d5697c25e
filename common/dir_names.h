// The entries of a directory as names: the one home of the fdopendir/readdir loop.
#pragma once

#include <string>
#include <vector>

#include "fd.h"
#include "result.h"

namespace lazystore {

// The names in the open directory `fd` (without "." and ".."), sorted bytewise as Nix orders a
// NAR's entries. Takes ownership of `fd`; errors say "opendir WHAT: …" or "readdir WHAT: …".
Result<std::vector<std::string>> dir_names(Fd fd, const std::string& what);

}  // namespace lazystore
