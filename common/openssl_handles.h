// RAII owners of OpenSSL libcrypto objects.
#pragma once

#include <openssl/evp.h>

#include <memory>

namespace lazystore {

struct EvpMdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using EvpMdCtx = std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree>;

inline EvpMdCtx make_evp_md_ctx() { return EvpMdCtx(EVP_MD_CTX_new()); }

}  // namespace lazystore
