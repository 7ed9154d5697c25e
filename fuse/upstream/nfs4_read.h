// NFSv4 reads as raw COMPOUNDs, many in flight (nfs_read_window.h): PUTFH + READ when the file's
// handle is known, else PUTROOTFH, LOOKUP every component, GETFH, READ (the first piece alone,
// which learns the handle). They read with a special stateid (the READ-bypass one, RFC 7530
// 9.1.4.3: no OPEN, OPEN_CONFIRM or CLOSE round trips, no owner strings resolved through NSS,
// and no wait for the server's grace period after a restart).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nfs4_compound.h"

namespace lazystore {

// The server refused a READ without OPEN state: the caller reads through OPEN instead.
constexpr int kNfs4AnonymousReadRefused = -10000;

// components: from the server's root to the file (export path, store path, path inside).
// *fh: the file's handle, used when not empty and filled in when it is. Reads buf at offset in
// pieces of at most `piece` bytes, `window` of them in flight. Returns the bytes read (short
// only at the end of the file), a negative errno with *error set, kNfs4AnonymousReadRefused, or
// the pump's negative errno.
int64_t nfs4_read(nfs_context* ctx, std::vector<std::string> components, std::string* fh, uint64_t offset,
                  std::span<std::byte> buf, size_t piece, size_t window, std::string* error, const NfsPump& pump);

}  // namespace lazystore
