// Nix's serve protocol ("nix-store --serve", what ssh:// stores speak) on the shared wire
// (nix_wire.h). Pure encoding and decoding, no I/O: encoders append to a buffer, decoders pull
// from a WireReader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nix_wire.h"
#include "path_info.h"
#include "result.h"

namespace lazystore::serve {

inline constexpr uint64_t kMagicClient = 0x390c9deb;  // client hello
inline constexpr uint64_t kMagicServer = 0x5452eecb;  // server answer
inline constexpr uint64_t kExportMagic = 0x4558494e;  // "NIXE", after each NAR of ImportPaths
// 2.6: QueryPathInfos answers carry narHash, ca and sigs (≥ 2.4); AddToStoreNar needs ≥ 2.5.
inline constexpr uint64_t kClientVersion = 0x206;

using wire::version_major;
using wire::version_minor;

enum class Command : uint64_t {
  QueryValidPaths = 1,
  QueryPathInfos = 2,
  DumpStorePath = 3,
  ImportPaths = 4,
  ExportPaths = 5,
  BuildPaths = 6,
  QueryClosure = 7,
  BuildDerivation = 8,
  AddToStoreNar = 9,
};

using PathInfo = lazystore::PathInfo;
using wire::kMaxListLength;
using wire::kMaxStringLength;
using wire::WireReader;
using wire::WireWriter;

// Client hello: magic then our version.
std::string encode_client_hello(uint64_t client_version = kClientVersion);
// The server's answer: its magic then its version. Returns the server version.
Result<uint64_t> decode_server_hello(WireReader& reader);

std::string encode_query_valid_paths(bool lock, bool substitute, std::span<const std::string> paths);
std::string encode_query_path_infos(std::span<const std::string> paths);
std::string encode_query_closure(bool include_outputs, std::span<const std::string> paths);
std::string encode_dump_store_path(std::string_view path);
// Command and path info of AddToStoreNar; exactly info.nar_size bytes of NAR must follow.
std::string encode_add_to_store_nar(const PathInfo& info);

// ImportPaths framing: the command, then per path "1" + NAR + trailer, then "0".
std::string encode_import_paths_begin();
std::string encode_import_path_begin();
std::string encode_import_path_trailer(const PathInfo& info);
std::string encode_import_paths_end();

// A set of paths (QueryValidPaths, QueryClosure answers).
Result<std::vector<std::string>> decode_path_set(WireReader& reader);
// QueryPathInfos answer: entries until an empty path. `version` (the lower of the two sides'
// versions) decides whether narHash, ca and sigs are present (≥ 2.4).
Result<std::vector<PathInfo>> decode_path_infos(WireReader& reader, uint64_t version);
// The "1" that ImportPaths and AddToStoreNar answer on success.
Status decode_success(WireReader& reader);

}  // namespace lazystore::serve
