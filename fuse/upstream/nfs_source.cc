#include "nfs_source.h"

// GCC 12 with -fsanitize=address (tests/run.sh --sanitize) warns falsely that libstdc++'s regex
// automaton "may be used uninitialized"; GCC documents such false positives under sanitizers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <regex>

namespace lazystore {

bool is_nfs_source(std::string_view source) {
  if (source.starts_with("nfs://")) return true;
  // host:/path, but not a URL of another scheme ("http://...").
  size_t colon = source.find(":/");
  return colon != std::string_view::npos && colon > 0 && source.find("://") == std::string_view::npos;
}

Result<NfsSource> parse_nfs_source(std::string_view source, int nfsvers) {
  NfsSource out;
  out.display = std::string(source);
  if (nfsvers != 0 && nfsvers != 3 && nfsvers != 4) {
    return make_error(EINVAL, "nfsvers=" + std::to_string(nfsvers) + ": only 3 and 4 are supported");
  }
  std::string url;
  if (source.starts_with("nfs://")) {
    url = std::string(source);
  } else {
    size_t colon = source.find(":/");
    std::string_view host = source.substr(0, colon);
    std::string_view path = source.substr(colon + 1);
    if (host.empty() || host.find('/') != std::string_view::npos) {
      return make_error(EINVAL, "SOURCE '" + std::string(source) + "': expected host:/path");
    }
    url = "nfs://" + std::string(host) + std::string(path);
  }
  static const std::regex kUrl(R"(^nfs://([^/?]+)(/[^?]*)(\?(.*))?$)");
  std::smatch m;
  if (!std::regex_match(url, m, kUrl)) {
    return make_error(EINVAL, "SOURCE '" + std::string(source) + "': expected nfs://host/path[?options] or host:/path");
  }
  std::string query = m[4].str();
  static const std::regex kVersion(R"((^|&)version=([0-9]+))");
  std::smatch v;
  int url_version = 0;
  if (std::regex_search(query, v, kVersion)) url_version = std::stoi(v[2].str());
  if (url_version != 0 && url_version != 3 && url_version != 4) {
    return make_error(EINVAL, "SOURCE '" + std::string(source) + "': version must be 3 or 4");
  }
  if (nfsvers != 0 && url_version != 0 && nfsvers != url_version) {
    return make_error(EINVAL, "nfsvers=" + std::to_string(nfsvers) +
                                  " contradicts version=" + std::to_string(url_version) + " in SOURCE");
  }
  out.version = url_version ? url_version : (nfsvers ? nfsvers : 3);
  if (url_version == 0) query += std::string(query.empty() ? "" : "&") + "version=" + std::to_string(out.version);
  out.url = "nfs://" + m[1].str() + m[2].str() + "?" + query;
  return out;
}

}  // namespace lazystore

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
