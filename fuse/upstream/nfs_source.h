// SOURCE forms of the NFS upstream: "host:/nix/store" (the fstab form) and libnfs URLs
// "nfs://host[:port]/path?version=3|4&nfsport=N&mountport=M...".
#pragma once

#include <string>
#include <string_view>

#include "result.h"

namespace lazystore {

struct NfsSource {
  std::string url;      // a complete libnfs URL, version included
  std::string display;  // for logs and fsname: what the user wrote
  int version = 3;
};

bool is_nfs_source(std::string_view source);
// default_version: from -o nfsvers (0 = not given → 3, like the seed's nfsvers=3); a version in
// the URL wins over it only when nfsvers was not given.
Result<NfsSource> parse_nfs_source(std::string_view source, int default_version);

}  // namespace lazystore
