#include "nfs4_lookup.h"

#include <arpa/inet.h>

#include <cstring>

namespace lazystore {
namespace {

constexpr uint32_t kAttrs[1] = {(1u << FATTR4_TYPE) | (1u << FATTR4_SIZE)};

struct Call {
  Nfs4Lookup* answer;
  size_t* answered;
};

// type (u32) then size (u64), big-endian: the two attributes asked for, in attribute order.
bool parse(const fattr4& attrs, Nfs4Lookup* out) {
  const char* data = attrs.attr_vals.attrlist4_val;
  if (attrs.attr_vals.attrlist4_len != 12 || attrs.attrmask.bitmap4_len < 1) return false;
  uint32_t words[3];
  std::memcpy(words, data, sizeof words);
  out->type = ntohl(words[0]);
  out->size = (uint64_t{ntohl(words[1])} << 32) | ntohl(words[2]);
  return true;
}

void on_reply(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto& call = *static_cast<Call*>(private_data);
  Nfs4Lookup& answer = *call.answer;
  (*call.answered)++;
  try {
    if (status != RPC_STATUS_SUCCESS) {
      answer.error = status == RPC_STATUS_ERROR && data ? static_cast<const char*>(data) : "cancelled";
      answer.rc = -EIO;
      return;
    }
    const auto& res = *static_cast<const COMPOUND4res*>(data);
    if (res.status != NFS4_OK) {
      nfsstat4 failed = nfs4_failed_status(res);
      answer.error = nfsstat4_to_str(failed);
      answer.rc = -nfs4_errno(failed);
      return;
    }
    auto getattr = nfs4_result(res, OP_GETATTR);
    if (!getattr || !parse(getattr->nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes, &answer)) {
      answer.error = "malformed GETATTR reply";
      answer.rc = -EIO;
    }
  } catch (...) {
    answer.error = "out of memory";
    answer.rc = -ENOMEM;
  }
}

}  // namespace

int nfs4_lookup_all(nfs_context* ctx, const std::vector<std::string>& dir, const std::vector<std::string>& names,
                    std::vector<Nfs4Lookup>* answers, const NfsPump& pump) {
  rpc_context* rpc = nfs_get_rpc_context(ctx);
  answers->assign(names.size(), Nfs4Lookup{});
  std::vector<std::string> components = dir;
  std::vector<std::string> owned = names;  // the arguments point into them
  std::vector<Call> calls(names.size());
  size_t answered = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    calls[i] = Call{&(*answers)[i], &answered};
    std::vector<nfs_argop4> ops{nfs4_op(OP_PUTROOTFH)};
    for (std::string& component : components) ops.push_back(nfs4_lookup(component));
    ops.push_back(nfs4_lookup(owned[i]));
    ops.push_back(nfs4_op(OP_GETATTR));
    ops.back().nfs_argop4_u.opgetattr.attr_request = {1, const_cast<uint32_t*>(kAttrs)};
    COMPOUND4args args{};
    args.argarray.argarray_len = static_cast<u_int>(ops.size());
    args.argarray.argarray_val = ops.data();
    // libnfs encodes the arguments before it returns: they may live on this stack.
    if (rpc_nfs4_compound_async(rpc, &on_reply, &args, &calls[i]) != 0) {
      (*answers)[i].rc = -EIO;
      (*answers)[i].error = std::string("cannot queue an NFS request: ") + rpc_get_error(rpc);
      answered++;
    }
  }
  return pump([&answered, &names] { return answered == names.size(); }, answered);
}

}  // namespace lazystore
