#include "daemon_connection.h"

#include <algorithm>

#include "log.h"

namespace lazystore {

DaemonConnection::DaemonConnection(ByteStream& stream, std::string peer)
    : WireConnection(stream, std::move(peer), "daemon protocol") {}

Error DaemonConnection::explain(const Error& error) {
  if (error.code == kDaemonError) return error;
  return WireConnection::explain(error);
}

Status DaemonConnection::read_hello() {
  if (auto s = worker::decode_server_magic(reader_); !s) {
    if (buffered_.bytes_read() == 0 && s.error().code == EPROTO) {
      std::string tail = stream_.stderr_tail();
      return make_error(kNoDaemon, peer_ + ": no nix-daemon --stdio" + (tail.empty() ? "" : ": " + tail));
    }
    return explain(s.error());
  }
  auto hello = worker::decode_server_hello(reader_);
  if (!hello) return explain(hello.error());
  server_version_ = hello->version;
  version_ = std::min(hello->version, worker::kClientVersion);
  nix_version_ = hello->nix_version;
  if (auto s = read_until_last(); !s) return s;
  if (server_version_ < worker::kMinServerVersion) {
    return make_error(
        EPROTO, peer_ + ": nix-daemon speaks protocol " + std::to_string(worker::version_major(server_version_)) + "." +
                    std::to_string(worker::version_minor(server_version_)) + ", older than the 1.32 a push needs");
  }
  return {};
}

Status DaemonConnection::read_until_last() {
  while (true) {
    auto message = worker::decode_log_message(reader_, version_);
    if (!message) return explain(message.error());
    switch (message->kind) {
      case worker::Stderr::Last: return {};
      case worker::Stderr::Error: return make_error(kDaemonError, peer_ + ": " + worker::plain_message(message->text));
      case worker::Stderr::Next: LOG_INFO("%s: %s", peer_.c_str(), worker::plain_message(message->text).c_str()); break;
      case worker::Stderr::StartActivity:
        if (!message->text.empty()) LOG_INFO("%s: %s", peer_.c_str(), worker::plain_message(message->text).c_str());
        break;
      default: break;
    }
  }
}

Result<std::vector<std::string>> DaemonConnection::read_path_set() {
  if (auto s = read_until_last(); !s) return s.error();
  auto paths = worker::decode_path_set(reader_);
  if (!paths) return explain(paths.error());
  return paths;
}

Status DaemonConnection::read_one() {
  if (auto s = read_until_last(); !s) return s;
  if (auto s = worker::decode_one(reader_); !s) return explain(s.error());
  return {};
}

}  // namespace lazystore
