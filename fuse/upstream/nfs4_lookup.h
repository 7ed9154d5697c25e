// LOOKUPs of names in one NFSv4 directory, all at once (one round trip), as raw COMPOUNDs:
// PUTROOTFH, LOOKUP every component of the directory, LOOKUP name, GETATTR type and size (no
// owner names, which libnfs 4.0 resolves through the user database).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nfs4_compound.h"

namespace lazystore {

struct Nfs4Lookup {
  int rc = 0;         // 0, or a negative errno (-ENOENT: no such name)
  uint32_t type = 0;  // nfs_ftype4
  uint64_t size = 0;
  std::string error;
};

// dir: the components from the server's root to the directory. Returns 0, or the pump's
// negative errno (then the answers are void).
int nfs4_lookup_all(nfs_context* ctx, const std::vector<std::string>& dir, const std::vector<std::string>& names,
                    std::vector<Nfs4Lookup>* answers, const NfsPump& pump);

}  // namespace lazystore
