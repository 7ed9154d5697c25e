#include "worker_protocol.h"

#include <array>

#include "format.h"
#include "narinfo.h"
#include "nix32.h"

namespace lazystore::worker {

namespace {

constexpr uint64_t kMaxFields = 1024;
constexpr uint64_t kMaxTraces = 1024;

Error protocol_error(const std::string& message) { return make_error(EPROTO, "daemon protocol: " + message); }

// An activity's fields: a count, then per field its type (0: u64, 1: string) and value.
Status skip_fields(WireReader& reader) {
  auto count = reader.u64();
  if (!count) return count.error();
  if (*count > kMaxFields) return protocol_error("too many fields in a log message");
  for (uint64_t i = 0; i < *count; ++i) {
    auto type = reader.u64();
    if (!type) return type.error();
    if (*type == 0) {
      if (auto v = reader.u64(); !v) return v.error();
    } else if (*type == 1) {
      if (auto v = reader.str(kMaxMessageLength); !v) return v.error();
    } else {
      return protocol_error("unknown field type " + std::to_string(*type));
    }
  }
  return {};
}

// An error as Nix ≥ 2.4 (protocol 1.26) serialises it.
Status read_error(WireReader& reader, LogMessage& message) {
  auto type = reader.str();
  if (!type) return type.error();
  if (*type != "Error") return protocol_error("unknown error type '" + *type + "'");
  auto level = reader.u64();
  if (!level) return level.error();
  auto name = reader.str();  // no longer used by Nix
  if (!name) return name.error();
  auto text = reader.str(kMaxMessageLength);
  if (!text) return text.error();
  message.text = std::move(*text);
  auto have_position = reader.u64();
  if (!have_position) return have_position.error();
  if (*have_position != 0) return protocol_error("error with a position (unsupported)");
  auto traces = reader.u64();
  if (!traces) return traces.error();
  if (*traces > kMaxTraces) return protocol_error("too many traces in an error");
  for (uint64_t i = 0; i < *traces; ++i) {
    auto trace_position = reader.u64();
    if (!trace_position) return trace_position.error();
    if (*trace_position != 0) return protocol_error("trace with a position (unsupported)");
    auto hint = reader.str(kMaxMessageLength);
    if (!hint) return hint.error();
  }
  return {};
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string encode_client_hello(uint64_t client_version) {
  return WireWriter().u64(kMagicClient).u64(client_version).u64(0).u64(0).take();
}

Status decode_server_magic(WireReader& reader) {
  auto magic = reader.u64();
  if (!magic) return magic.error();
  if (*magic != kMagicServer) return protocol_error("the remote command did not answer as nix-daemon");
  return {};
}

Result<ServerHello> decode_server_hello(WireReader& reader, uint64_t client_version) {
  ServerHello hello;
  auto version = reader.u64();
  if (!version) return version.error();
  if (version_major(*version) != 1) {
    return protocol_error("unsupported daemon version " + std::to_string(version_major(*version)) + "." +
                          std::to_string(version_minor(*version)));
  }
  hello.version = *version;
  if (version_minor(std::min(*version, client_version)) >= 33) {
    auto nix_version = reader.str();
    if (!nix_version) return nix_version.error();
    hello.nix_version = std::move(*nix_version);
  }
  return hello;
}

Result<LogMessage> decode_log_message(WireReader& reader, uint64_t version) {
  auto kind = reader.u64();
  if (!kind) return kind.error();
  LogMessage message;
  message.kind = static_cast<Stderr>(*kind);
  switch (message.kind) {
    case Stderr::Last: return message;
    case Stderr::Next: {
      auto text = reader.str(kMaxMessageLength);
      if (!text) return text.error();
      message.text = std::move(*text);
      return message;
    }
    case Stderr::Error: {
      if (version_minor(version) >= 26) {
        if (auto s = read_error(reader, message); !s) return s.error();
        return message;
      }
      auto text = reader.str(kMaxMessageLength);
      if (!text) return text.error();
      message.text = std::move(*text);
      auto status = reader.u64();
      if (!status) return status.error();
      message.status = *status;
      return message;
    }
    case Stderr::StartActivity: {
      auto activity = reader.u64();
      auto level = activity ? reader.u64() : Result<uint64_t>(activity.error());
      auto type = level ? reader.u64() : Result<uint64_t>(level.error());
      if (!type) return type.error();
      message.activity = *activity;
      message.activity_type = *type;
      auto text = reader.str(kMaxMessageLength);
      if (!text) return text.error();
      message.text = std::move(*text);
      if (auto s = skip_fields(reader); !s) return s.error();
      auto parent = reader.u64();
      if (!parent) return parent.error();
      return message;
    }
    case Stderr::StopActivity: {
      auto activity = reader.u64();
      if (!activity) return activity.error();
      message.activity = *activity;
      return message;
    }
    case Stderr::Result: {
      auto activity = reader.u64();
      auto type = activity ? reader.u64() : Result<uint64_t>(activity.error());
      if (!type) return type.error();
      message.activity = *activity;
      message.activity_type = *type;
      if (auto s = skip_fields(reader); !s) return s.error();
      return message;
    }
    case Stderr::Read:
    case Stderr::Write: return protocol_error("the daemon asked to tunnel data, which this client never offers");
  }
  return protocol_error(
      "unknown log message 0x" +
      to_hex(std::array<uint8_t, 4>{static_cast<uint8_t>(*kind >> 24), static_cast<uint8_t>(*kind >> 16),
                                    static_cast<uint8_t>(*kind >> 8), static_cast<uint8_t>(*kind)}));
}

std::string encode_query_valid_paths(std::span<const std::string> paths, bool substitute) {
  return WireWriter().op(Op::QueryValidPaths).strings(paths).boolean(substitute).take();
}

std::string encode_add_temp_root(std::string_view path) { return WireWriter().op(Op::AddTempRoot).str(path).take(); }

std::string encode_add_multiple_to_store(bool repair, bool dont_check_sigs) {
  return WireWriter().op(Op::AddMultipleToStore).boolean(repair).boolean(dont_check_sigs).take();
}

std::string encode_frame_header(uint64_t length) { return WireWriter().u64(length).take(); }

std::string encode_frames_end() { return WireWriter().u64(0).take(); }

Result<std::string> sha256_base16(std::string_view hash) {
  std::string_view digest = hash;
  bool sri = false;
  if (hash.starts_with("sha256:")) {
    digest.remove_prefix(7);
  } else if (hash.starts_with("sha256-")) {
    digest.remove_prefix(7);
    sri = true;
  } else if (hash.find(':') != std::string_view::npos || hash.find('-') != std::string_view::npos) {
    return make_error(EINVAL, "not a sha256 hash: '" + std::string(hash) + "'");
  }
  std::vector<uint8_t> bytes;
  if (!sri && digest.size() == 64) {
    for (size_t i = 0; i < 64; i += 2) {
      int high = hex_digit(digest[i]), low = hex_digit(digest[i + 1]);
      if (high < 0 || low < 0) return make_error(EINVAL, "bad base16 sha256 '" + std::string(hash) + "'");
      bytes.push_back(static_cast<uint8_t>(high * 16 + low));
    }
  } else if (!sri && digest.size() == nix32::encoded_length(32)) {
    auto decoded = nix32::decode(digest, 32);
    if (!decoded) return make_error(EINVAL, "bad nix32 sha256 '" + std::string(hash) + "'");
    bytes = std::move(*decoded);
  } else {
    auto decoded = base64_decode(digest);
    if (!decoded || decoded->size() != 32) return make_error(EINVAL, "bad sha256 '" + std::string(hash) + "'");
    bytes = std::move(*decoded);
  }
  return to_hex(bytes);
}

Result<std::string> encode_path_info(const PathInfo& info) {
  auto hash = sha256_base16(info.nar_hash);
  if (!hash) return make_error(EINVAL, info.path + ": " + hash.error().message);
  return WireWriter().path_info(info, *hash).take();
}

Result<std::vector<std::string>> decode_path_set(WireReader& reader) { return reader.strings(); }

std::string plain_message(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\x1b' && i + 1 < text.size() && text[i + 1] == '[') {
      // CSI: parameters and intermediates, then one final byte in 0x40..0x7e.
      i += 2;
      while (i < text.size() && !(text[i] >= 0x40 && text[i] <= 0x7e)) ++i;
      continue;
    }
    out += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

Status decode_one(WireReader& reader) {
  auto value = reader.u64();
  if (!value) return value.error();
  if (*value != 1) return protocol_error("expected 1, got " + std::to_string(*value));
  return {};
}

}  // namespace lazystore::worker
