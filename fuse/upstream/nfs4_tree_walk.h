// Lists a store path's tree over NFSv4 with raw COMPOUNDs on one libnfs context, many
// directories and symlinks in flight at once (nfs_tree_walk.h): a directory's first page is
// PUTFH parent, LOOKUP name, GETFH, READDIR (later pages PUTFH dir, READDIR), a symlink PUTFH
// parent, LOOKUP name, READLINK. READDIR asks only for type, size and mode: no file handles, and
// no owner strings (libnfs' own GETATTR/READDIR ask for them and resolve every one through NSS,
// ~30 openat calls an entry).
#pragma once

#include <string>
#include <vector>

#include "nfs4_compound.h"
#include "result.h"
#include "upstream.h"

namespace lazystore {

// export_path: the components the mount LOOKUPs from the server's root (the URL's path).
// name: the store path's base name in the export. Errors carry an errno (ENOENT when the server
// says so); when the pump gives up, ETIMEDOUT or EIO.
Status nfs4_walk_tree(nfs_context* ctx, const std::vector<std::string>& export_path, const std::string& name,
                      TreeBuilder& builder, const NfsPump& pump);

}  // namespace lazystore
