#include "nfs3_read.h"

#include <nfsc/libnfs-raw-nfs.h>

#include <algorithm>
#include <cstring>

#include "nfs3_tree_walk.h"
#include "nfs_read_window.h"

namespace lazystore {
namespace {

nfs_fh3 fh3(const std::string& bytes) {
  return nfs_fh3{{static_cast<u_int>(bytes.size()), const_cast<char*>(bytes.data())}};
}

// libnfs' XDR decoder aligns to 4 bytes only; these replies hold 64-bit fields: copied out.
template <class T>
T copy_of(const void* data) {
  T out;
  std::memcpy(&out, data, sizeof out);
  return out;
}

std::string rpc_failure(int status, void* data) {
  return status == RPC_STATUS_ERROR && data ? static_cast<const char*>(data) : "cancelled";
}

void on_read(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto* piece = static_cast<NfsReadWindow::Piece*>(private_data);
  try {
    if (status != RPC_STATUS_SUCCESS) return NfsReadWindow::answered(piece, -EIO, false, rpc_failure(status, data));
    auto res = copy_of<READ3res>(data);
    if (res.status != NFS3_OK) {
      return NfsReadWindow::answered(piece, -nfs3_errno(res.status), false, nfsstat3_to_str(res.status));
    }
    const READ3resok& ok = res.READ3res_u.resok;
    size_t n = std::min<size_t>({ok.data.data_len, ok.count, piece->buf.size()});
    std::memcpy(piece->buf.data(), ok.data.data_val, n);
    NfsReadWindow::answered(piece, static_cast<int64_t>(n), ok.eof != 0);
  } catch (...) {
    NfsReadWindow::answered(piece, -ENOMEM, false, "out of memory");
  }
}

struct LookupCall {
  Nfs3Lookup* answer;
  size_t* answered;
};

void on_lookup(rpc_context*, int status, void* data, void* private_data) noexcept {
  auto& call = *static_cast<LookupCall*>(private_data);
  Nfs3Lookup& answer = *call.answer;
  (*call.answered)++;
  try {
    if (status != RPC_STATUS_SUCCESS) {
      answer.error = rpc_failure(status, data);
      answer.rc = -EIO;
      return;
    }
    auto res = copy_of<LOOKUP3res>(data);
    if (res.status != NFS3_OK) {
      answer.error = nfsstat3_to_str(res.status);
      answer.rc = -nfs3_errno(res.status);
      return;
    }
    const LOOKUP3resok& ok = res.LOOKUP3res_u.resok;
    answer.fh.assign(ok.object.data.data_val, ok.object.data.data_len);
    if (ok.obj_attributes.attributes_follow) {
      const fattr3& a = ok.obj_attributes.post_op_attr_u.attributes;
      answer.type = a.type;
      answer.mode = a.mode;
      answer.size = a.size;
    }
  } catch (...) {
    answer.error = "out of memory";
    answer.rc = -ENOMEM;
  }
}

}  // namespace

int64_t nfs3_read(nfs_context* ctx, const std::string& fh, uint64_t offset, std::span<std::byte> buf, size_t piece,
                  size_t window, std::string* error, const NfsPump& pump) {
  rpc_context* rpc = nfs_get_rpc_context(ctx);
  NfsReadWindow reads(offset, buf, piece, window);
  auto send = [&](NfsReadWindow::Piece* p) {
    READ3args args{};
    args.file = fh3(fh);
    args.offset = p->offset;
    args.count = static_cast<count3>(p->buf.size());
    if (rpc_nfs3_read_async(rpc, &on_read, &args, p) != 0) {
      *error = std::string("cannot queue an NFS request: ") + rpc_get_error(rpc);
      return false;
    }
    return true;
  };
  return reads.run(send, pump, error);
}

int nfs3_lookup_all(nfs_context* ctx, const std::string& dir, const std::vector<std::string>& names,
                    std::vector<Nfs3Lookup>* answers, const NfsPump& pump) {
  rpc_context* rpc = nfs_get_rpc_context(ctx);
  answers->assign(names.size(), Nfs3Lookup{});
  std::vector<std::string> owned = names;  // libnfs takes char*
  std::vector<LookupCall> calls(names.size());
  size_t answered = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    calls[i] = LookupCall{&(*answers)[i], &answered};
    LOOKUP3args args{};
    args.what.dir = fh3(dir);
    args.what.name = owned[i].data();
    if (rpc_nfs3_lookup_async(rpc, &on_lookup, &args, &calls[i]) != 0) {
      (*answers)[i].rc = -EIO;
      (*answers)[i].error = std::string("cannot queue an NFS request: ") + rpc_get_error(rpc);
      answered++;
    }
  }
  return pump([&answered, &names] { return answered == names.size(); }, answered);
}

}  // namespace lazystore
