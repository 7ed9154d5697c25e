// One libssh session to the server (config, host-key check, public-key/agent auth) and the
// channels that run remote commands over it. Every libssh handle is owned by a unique_ptr.
#pragma once

#include <libssh/libssh.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "byte_stream.h"
#include "result.h"

namespace lazystore {

// Error codes that say which stage failed (the caller maps them to exit codes).
inline constexpr int kSshConnectFailed = EHOSTUNREACH;
inline constexpr int kSshHostKeyRefused = EKEYREJECTED;
inline constexpr int kSshAuthFailed = EACCES;

struct SshOptions {
  std::string destination;                  // a Host alias of the ssh config, or [user@]host
  std::optional<std::string> config_file;   // -F; default $HOME/.ssh/config and /etc/ssh/ssh_config
  std::vector<std::string> identity_files;  // -i, tried before the config's IdentityFile
  std::optional<std::string> known_hosts_file;
  std::optional<std::string> user;
  std::optional<unsigned> port;
  long connect_timeout_seconds = 30;
  std::optional<std::string> ciphers;  // -o Ciphers=…; default prefers AES-GCM where the CPU has AES
  bool accept_new_host_key = false;    // add an unknown host's key to known_hosts (never a changed one)
  // How long a read may wait for the server's next byte. Generous: the daemon answers a long
  // AddMultipleToStore only at its end.
  long io_timeout_seconds = 600;
};

// Applies one OpenSSH-style "-o Key=Value" (or "Key Value") to the options; EINVAL if unsupported.
Status apply_ssh_option(SshOptions& options, std::string_view option);

struct SessionDeleter {
  void operator()(ssh_session session) const;
};
struct ChannelDeleter {
  void operator()(ssh_channel channel) const;
};
using SessionHandle = std::unique_ptr<ssh_session_struct, SessionDeleter>;
using ChannelHandle = std::unique_ptr<ssh_channel_struct, ChannelDeleter>;

// A remote command's stdin/stdout over one channel. Must not outlive its SshSession.
class SshChannel final : public ByteStream {
 public:
  // A read that gets nothing for `read_timeout_seconds` fails (ETIMEDOUT): a server process
  // that hangs does not hang the push.
  SshChannel(ChannelHandle channel, long read_timeout_seconds)
      : channel_(std::move(channel)), read_timeout_seconds_(read_timeout_seconds) {}

  Result<size_t> read_some(std::span<std::byte> buffer) override;
  Status write_all(std::span<const std::byte> data) override;
  using ByteStream::write_all;
  Status close_write() override;
  std::string stderr_tail() override;
  // Reads stdout to EOF, then returns the remote exit status (-1 if the server sent none).
  Result<int> finish(std::string* output = nullptr);

 private:
  void drain_stderr();
  ChannelHandle channel_;
  long read_timeout_seconds_;
  TailBuffer stderr_;
};

// Where the ssh config sends a destination, resolved as connect() would (no network).
struct SshTarget {
  std::string host;
  unsigned port = 22;
  std::string user;
  std::string known_hosts;                // the file host keys are checked against
  std::vector<std::string> config_files;  // the ssh config files read
  std::vector<std::string> identities;    // -i files and the config's first IdentityFile
};
Result<SshTarget> resolve_ssh_target(const SshOptions& options);

class SshSession {
 public:
  // Resolves the destination through the ssh config, connects, verifies the host key, authenticates.
  static Result<SshSession> connect(const SshOptions& options);

  // Runs `command` on the server (through its forced command, if any).
  Result<SshChannel> exec(const std::string& command);

  // "user@host:port" for messages.
  const std::string& description() const { return description_; }

 private:
  SshSession(SessionHandle session, std::string description, long io_timeout_seconds)
      : session_(std::move(session)), description_(std::move(description)), io_timeout_seconds_(io_timeout_seconds) {}
  SessionHandle session_;
  std::string description_;
  long io_timeout_seconds_;
};

}  // namespace lazystore
