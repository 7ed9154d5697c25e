// Lists a store path's tree over NFSv3 by file handle, with raw RPCs on one libnfs context and
// many in flight at once (nfs_tree_walk.h): LOOKUP of the store path in the export's root, one
// READDIRPLUS per page of each directory (entries come with their attributes and handles; one
// without gets a LOOKUP), one READLINK per symlink. Every handle learnt goes to `handles`, so
// that reads need no LOOKUP.
#pragma once

#include <string>

#include "nfs_tree_walk.h"
#include "result.h"
#include "upstream.h"

namespace lazystore {

// The errno of an NFSv3 status (EIO for what has no closer meaning among the answers the
// upstream passes on: ENOENT, ENOTDIR, EISDIR, EACCES, EPERM, ENAMETOOLONG; ESTALE stays).
int nfs3_errno(int status);

// root_fh: the export's root handle (nfs3_root_handle). name: the store path's base name.
Status nfs3_walk_tree(nfs_context* ctx, const std::string& root_fh, const std::string& name, TreeBuilder& builder,
                      const NfsPump& pump, NfsHandleSink handles);

}  // namespace lazystore
