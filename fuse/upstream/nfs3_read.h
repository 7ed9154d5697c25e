// NFSv3 reads by file handle as raw RPCs, many READs in flight (nfs_read_window.h), and the
// LOOKUP that finds a handle the walk did not give.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nfs_rpc.h"

namespace lazystore {

// Reads buf at offset from the file `fh` in pieces of at most `piece` bytes, `window` of them
// in flight. Returns the bytes read (short only at the end of the file), a negative errno with
// *error set (-ESTALE: the handle is no longer valid), or the pump's negative errno.
int64_t nfs3_read(nfs_context* ctx, const std::string& fh, uint64_t offset, std::span<std::byte> buf, size_t piece,
                  size_t window, std::string* error, const NfsPump& pump);

// What a LOOKUP answered: rc 0 with the handle and attributes, or a negative errno (-ENOENT:
// no such name) with `error`.
struct Nfs3Lookup {
  int rc = 0;
  std::string fh;
  uint32_t type = 0;  // ftype3; 0 when the reply had no attributes
  uint32_t mode = 0;
  uint64_t size = 0;
  std::string error;
};

// LOOKUPs of every name in directory `dir` at once (one round trip). Returns 0, or the pump's
// negative errno (then the answers are void).
int nfs3_lookup_all(nfs_context* ctx, const std::string& dir, const std::vector<std::string>& names,
                    std::vector<Nfs3Lookup>* answers, const NfsPump& pump);

}  // namespace lazystore
