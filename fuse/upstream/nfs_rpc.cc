#include "nfs_rpc.h"

// libnfs keeps the export's root handle private: nfs_get_rootfh() is exported by every libnfs
// from 4.0 to 7.0 but declared only in its private header, with this layout of struct nfs_fh
// (the public headers declare the struct without defining it).
extern "C" {
struct nfs_fh {
  int len;
  char* val;
};
const struct nfs_fh* nfs_get_rootfh(struct nfs_context* nfs);
}

namespace lazystore {

std::string nfs3_root_handle(nfs_context* ctx) {
  const nfs_fh* fh = nfs_get_rootfh(ctx);
  if (!fh || !fh->val || fh->len <= 0) return {};
  return std::string(fh->val, static_cast<size_t>(fh->len));
}

}  // namespace lazystore
