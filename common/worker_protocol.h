// Nix's worker protocol: what `nix-daemon` speaks, on its socket and over SSH (an ssh-ng://
// store runs `nix-daemon --stdio` on the server). The subset lazystore-push uses, on the shared
// wire (nix_wire.h). After the hello and after every request the daemon sends log messages
// (STDERR_*) up to STDERR_LAST, or STDERR_ERROR instead of the answer; then the answer.
// Pure encoding and decoding, no I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nix_wire.h"
#include "path_info.h"
#include "result.h"

namespace lazystore::worker {

using wire::WireReader;
using wire::WireWriter;

inline constexpr uint64_t kMagicClient = 0x6e697863;  // "cxin"
inline constexpr uint64_t kMagicServer = 0x6478696f;  // "oixd"
// 1.34, what Nix 2.8 speaks. AddMultipleToStore needs ≥ 1.32 on both sides.
inline constexpr uint64_t kClientVersion = 0x122;
inline constexpr uint64_t kMinServerVersion = 0x120;

using wire::version_major;
using wire::version_minor;

// The operations a push uses (Nix 2.8 knows 46).
enum class Op : uint64_t {
  AddTempRoot = 11,
  QueryValidPaths = 31,
  AddMultipleToStore = 44,
};

// What precedes an answer.
enum class Stderr : uint64_t {
  Next = 0x6f6c6d67,           // a log line
  Read = 0x64617461,           // the daemon asks for data (old protocols; never expected here)
  Write = 0x64617416,          // data for the client's sink (never expected here)
  Last = 0x616c7473,           // the answer follows
  Error = 0x63787470,          // the request failed; no answer follows
  StartActivity = 0x53545254,  // structured progress ("copying path …", "building …")
  StopActivity = 0x53544f50,
  Result = 0x52534c54,
};

// Log lines and error messages may be longer than the wire's usual string limit.
inline constexpr size_t kMaxMessageLength = 1 << 20;

struct LogMessage {
  Stderr kind = Stderr::Last;
  std::string text;            // Next: the line; Error: the message; StartActivity: its description
  uint64_t activity = 0;       // StartActivity, StopActivity, Result: the activity's id
  uint64_t activity_type = 0;  // StartActivity: Nix's ActivityType; Result: its ResultType
  uint64_t status = 0;         // Error before protocol 1.26: an exit status
};

// Magic, our version, no CPU affinity (≥ 1.14), no reserveSpace (≥ 1.11).
std::string encode_client_hello(uint64_t client_version = kClientVersion);

// The daemon's magic; EPROTO if the peer is not a Nix daemon.
Status decode_server_magic(WireReader& reader);
struct ServerHello {
  uint64_t version = 0;
  std::string nix_version;  // "" before protocol 1.33
};
// The daemon's version after its magic, then (both sides ≥ 1.33) Nix's version. The log
// messages up to STDERR_LAST follow.
Result<ServerHello> decode_server_hello(WireReader& reader, uint64_t client_version = kClientVersion);

// One log message; `version` is the negotiated (lower) version.
Result<LogMessage> decode_log_message(WireReader& reader, uint64_t version);

// QueryValidPaths: paths, then (≥ 1.27) whether to substitute. Answer: a path set.
std::string encode_query_valid_paths(std::span<const std::string> paths, bool substitute);
// AddTempRoot: the daemon holds a temporary root on the path for the session. Answer: 1.
std::string encode_add_temp_root(std::string_view path);
// AddMultipleToStore: the op and its flags. A framed stream follows (frames of a u64 length and
// that many bytes, unpadded, then a frame of length 0) that holds the path count, then per path
// its info (encode_path_info) and its NAR. No answer beyond STDERR_LAST.
std::string encode_add_multiple_to_store(bool repair, bool dont_check_sigs);
std::string encode_frame_header(uint64_t length);
std::string encode_frames_end();
// A ValidPathInfo as AddMultipleToStore reads it (format 16): path, deriver, narHash in base16,
// references, registration time, NAR size, ultimate, signatures, content address.
Result<std::string> encode_path_info(const PathInfo& info);

// "sha256:<nix32|base16|base64>", "sha256-<base64>" (SRI) or bare base16 → 64 hex digits.
Result<std::string> sha256_base16(std::string_view hash);

Result<std::vector<std::string>> decode_path_set(WireReader& reader);
// A daemon's message as one plain line: Nix colours names with terminal escapes
// ("\x1b[35;1m…\x1b[0m") and ends lines with '\n'; both go, other control bytes become ' '.
std::string plain_message(std::string_view text);
// The u64 "1" some requests (AddTempRoot) answer.
Status decode_one(WireReader& reader);

}  // namespace lazystore::worker
