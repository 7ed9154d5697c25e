#include "serve_protocol.h"

namespace lazystore::serve {

std::string encode_client_hello(uint64_t client_version) {
  return WireWriter().u64(kMagicClient).u64(client_version).take();
}

Result<uint64_t> decode_server_hello(WireReader& reader) {
  auto magic = reader.u64();
  if (!magic) return magic.error();
  if (*magic != kMagicServer) {
    return make_error(EPROTO, "serve protocol: the remote command did not answer as nix-store --serve");
  }
  auto version = reader.u64();
  if (!version) return version.error();
  if (version_major(*version) != 2) {
    return make_error(EPROTO, "serve protocol: unsupported server version " + std::to_string(version_major(*version)) +
                                  "." + std::to_string(version_minor(*version)));
  }
  return *version;
}

std::string encode_query_valid_paths(bool lock, bool substitute, std::span<const std::string> paths) {
  return WireWriter().op(Command::QueryValidPaths).boolean(lock).boolean(substitute).strings(paths).take();
}

std::string encode_query_path_infos(std::span<const std::string> paths) {
  return WireWriter().op(Command::QueryPathInfos).strings(paths).take();
}

std::string encode_query_closure(bool include_outputs, std::span<const std::string> paths) {
  return WireWriter().op(Command::QueryClosure).boolean(include_outputs).strings(paths).take();
}

std::string encode_dump_store_path(std::string_view path) {
  return WireWriter().op(Command::DumpStorePath).str(path).take();
}

std::string encode_add_to_store_nar(const PathInfo& info) {
  return WireWriter().op(Command::AddToStoreNar).path_info(info, info.nar_hash).take();
}

std::string encode_import_paths_begin() { return WireWriter().op(Command::ImportPaths).take(); }

std::string encode_import_path_begin() { return WireWriter().u64(1).take(); }

std::string encode_import_path_trailer(const PathInfo& info) {
  return WireWriter()
      .u64(kExportMagic)
      .str(info.path)
      .strings(info.references)
      .str(info.deriver)
      .u64(0)  // no signature follows
      .take();
}

std::string encode_import_paths_end() { return WireWriter().u64(0).take(); }

Result<std::vector<std::string>> decode_path_set(WireReader& reader) { return reader.strings(); }

Result<std::vector<PathInfo>> decode_path_infos(WireReader& reader, uint64_t version) {
  std::vector<PathInfo> infos;
  while (true) {
    auto path = reader.str();
    if (!path) return path.error();
    if (path->empty()) return infos;
    if (infos.size() >= kMaxListLength) return make_error(EINVAL, "serve protocol: too many paths");
    PathInfo info;
    info.path = std::move(*path);
    auto deriver = reader.str();
    if (!deriver) return deriver.error();
    info.deriver = std::move(*deriver);
    auto references = reader.strings();
    if (!references) return references.error();
    info.references = std::move(*references);
    auto download_size = reader.u64();
    if (!download_size) return download_size.error();
    info.download_size = *download_size;
    auto nar_size = reader.u64();
    if (!nar_size) return nar_size.error();
    info.nar_size = *nar_size;
    if (version_minor(version) >= 4) {
      auto nar_hash = reader.str();
      if (!nar_hash) return nar_hash.error();
      info.nar_hash = std::move(*nar_hash);
      auto ca = reader.str();
      if (!ca) return ca.error();
      info.ca = std::move(*ca);
      auto sigs = reader.strings();
      if (!sigs) return sigs.error();
      info.sigs = std::move(*sigs);
    }
    infos.push_back(std::move(info));
  }
}

Status decode_success(WireReader& reader) {
  auto value = reader.u64();
  if (!value) return value.error();
  if (*value != 1) {
    return make_error(EPROTO, "serve protocol: expected success (1), got " + std::to_string(*value));
  }
  return {};
}

}  // namespace lazystore::serve
