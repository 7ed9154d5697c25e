// The SOURCE's form picks the backend.
#include <string>

#include "dir_upstream.h"
#include "http_upstream.h"
#include "log.h"
#include "nfs_source.h"
#include "nfs_upstream.h"
#include "upstream.h"

namespace lazystore {

Result<std::unique_ptr<Upstream>> make_upstream(std::string_view source, const UpstreamOptions& options) {
  if (is_http_source(source)) {
    if (options.nfs_version != 0) return make_error(EINVAL, "nfsvers= applies to an NFS SOURCE only");
    auto upstream = HttpUpstream::open(source, options);
    if (!upstream) return upstream.error();
    return std::unique_ptr<Upstream>(std::move(*upstream));
  }
  if (is_nfs_source(source)) {
    auto nfs_source = parse_nfs_source(source, options.nfs_version);
    if (!nfs_source) return nfs_source.error();
    auto upstream = NfsUpstream::open(std::move(*nfs_source), options);
    if (!upstream) return upstream.error();
    return std::unique_ptr<Upstream>(std::move(*upstream));
  }
  if (options.nfs_version != 0) return make_error(EINVAL, "nfsvers= applies to an NFS SOURCE only");
  std::string directory;
  if (source.starts_with("file://")) {
    directory = std::string(source.substr(7));
  } else if (source.starts_with("/")) {
    directory = std::string(source);
  } else {
    return make_error(EINVAL, "unsupported SOURCE '" + std::string(source) +
                                  "' (expected host:/path, nfs://host/path, http(s)://URL, file:///DIR or /DIR)");
  }
  if (directory.empty() || directory[0] != '/') {
    return make_error(EINVAL, "SOURCE '" + std::string(source) + "' must name an absolute directory");
  }
  while (directory.size() > 1 && directory.back() == '/') directory.pop_back();
  auto upstream = DirUpstream::open(directory);
  if (!upstream) return upstream.error();
  return std::unique_ptr<Upstream>(std::move(*upstream));
}

}  // namespace lazystore
