#include "ssh_session.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>

namespace lazystore {

namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// The directory "~" means: $HOME when set (so a test or a service can point it elsewhere),
// else the passwd entry.
std::string home_directory() {
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') return home;
  if (const passwd* pw = getpwuid(getuid()); pw != nullptr && pw->pw_dir != nullptr) return pw->pw_dir;
  return "/";
}

std::string expand_tilde(const std::string& path) {
  if (path == "~") return home_directory();
  if (path.starts_with("~/")) return home_directory() + path.substr(1);
  return path;
}

// libssh's chacha20-poly1305 is its own C code; AES-GCM goes through OpenSSL's AES-NI path and
// moves NARs several times faster where the CPU has it.
std::string default_ciphers() {
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("aes")) {
    return "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
           "aes128-ctr,aes256-ctr";
  }
#endif
  return "";
}

std::string option_string(ssh_session session, ssh_options_e option) {
  char* value = nullptr;
  if (ssh_options_get(session, option, &value) != SSH_OK || value == nullptr) return "";
  std::string out(value);
  ssh_string_free_char(value);
  return out;
}

std::string server_fingerprint(ssh_session session) {
  ssh_key key = nullptr;
  if (ssh_get_server_publickey(session, &key) != SSH_OK) return "(unknown key)";
  std::unique_ptr<ssh_key_struct, decltype(&ssh_key_free)> key_owner(key, &ssh_key_free);
  unsigned char* hash = nullptr;
  size_t length = 0;
  if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &length) != 0) {
    return "(unknown key)";
  }
  char* text = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, length);
  ssh_clean_pubkey_hash(&hash);
  if (text == nullptr) return "(unknown key)";
  std::string out = std::string(ssh_key_type_to_char(ssh_key_type(key))) + " " + text;
  ssh_string_free_char(text);
  return out;
}

Status verify_host_key(ssh_session session, const SshOptions& options, const std::string& where) {
  std::string known_hosts = option_string(session, SSH_OPTIONS_KNOWNHOSTS);
  if (known_hosts.empty()) known_hosts = "known_hosts";
  switch (ssh_session_is_known_server(session)) {
    case SSH_KNOWN_HOSTS_OK: return {};
    case SSH_KNOWN_HOSTS_CHANGED:
    case SSH_KNOWN_HOSTS_OTHER:
      return make_error(kSshHostKeyRefused, "host key of " + where + " has CHANGED (now " +
                                                server_fingerprint(session) +
                                                "); refusing to connect — someone may be intercepting; if the change "
                                                "is expected, remove the old entry from " +
                                                known_hosts);
    case SSH_KNOWN_HOSTS_UNKNOWN:
    case SSH_KNOWN_HOSTS_NOT_FOUND:
      if (!options.accept_new_host_key) {
        return make_error(kSshHostKeyRefused, "host key of " + where + " is unknown (" + server_fingerprint(session) +
                                                  ", not in " + known_hosts +
                                                  "); verify it and rerun with --accept-new-host-key to trust it");
      }
      if (ssh_session_update_known_hosts(session) != SSH_OK) {
        return make_error(kSshHostKeyRefused,
                          "cannot add the host key of " + where + " to " + known_hosts + ": " + ssh_get_error(session));
      }
      return {};
    case SSH_KNOWN_HOSTS_ERROR: break;
  }
  return make_error(kSshHostKeyRefused, "cannot check the host key of " + where + ": " + ssh_get_error(session));
}

}  // namespace

void SessionDeleter::operator()(ssh_session session) const {
  if (ssh_is_connected(session)) ssh_disconnect(session);
  ssh_free(session);
}

void ChannelDeleter::operator()(ssh_channel channel) const { ssh_channel_free(channel); }

Status apply_ssh_option(SshOptions& options, std::string_view option) {
  size_t split = option.find_first_of("= \t");
  if (split == std::string_view::npos) return make_error(EINVAL, "bad -o option '" + std::string(option) + "'");
  std::string key = lower(option.substr(0, split));
  std::string_view value = option.substr(split + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '=')) value.remove_prefix(1);
  if (value.empty()) return make_error(EINVAL, "-o " + std::string(option) + ": missing value");
  std::string v(value);
  if (key == "userknownhostsfile") {
    options.known_hosts_file = expand_tilde(v);
  } else if (key == "identityfile") {
    options.identity_files.push_back(expand_tilde(v));
  } else if (key == "user") {
    options.user = v;
  } else if (key == "port" || key == "connecttimeout") {
    unsigned number = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), number);
    if (ec != std::errc() || end != v.data() + v.size() || (key == "port" && (number == 0 || number > 65535))) {
      return make_error(EINVAL, "-o " + std::string(option) + ": not a valid number");
    }
    if (key == "port")
      options.port = number;
    else
      options.connect_timeout_seconds = number;
  } else if (key == "stricthostkeychecking") {
    std::string mode = lower(v);
    if (mode == "accept-new")
      options.accept_new_host_key = true;
    else if (mode == "yes")
      options.accept_new_host_key = false;
    else
      return make_error(EINVAL, "-o StrictHostKeyChecking: only 'yes' and 'accept-new' are supported");
  } else if (key == "ciphers") {
    options.ciphers = v;
  } else if (key == "batchmode") {
    // lazystore-push never prompts; nothing to change.
  } else {
    return make_error(EINVAL, "-o " + std::string(option) +
                                  ": unsupported option (supported: UserKnownHostsFile, IdentityFile, "
                                  "User, Port, ConnectTimeout, StrictHostKeyChecking, Ciphers, BatchMode)");
  }
  return {};
}

namespace {

// Sets up `s` from the options and the ssh config, as OpenSSH would read them; what was read
// goes to `config_files`.
Status configure(ssh_session s, const SshOptions& options, std::vector<std::string>& config_files) {
  // We read the config files ourselves, so -F and $HOME decide which ones (never libssh's guess).
  bool process_config = false;
  ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &process_config);
  if (ssh_options_set(s, SSH_OPTIONS_HOST, options.destination.c_str()) != SSH_OK) {
    return make_error(EINVAL, "bad destination '" + options.destination + "': " + ssh_get_error(s));
  }
  std::string ssh_dir = home_directory() + "/.ssh";
  ssh_options_set(s, SSH_OPTIONS_SSH_DIR, ssh_dir.c_str());

  if (options.config_file) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*options.config_file, ec)) {
      return make_error(ENOENT, "cannot read ssh config " + *options.config_file);
    }
    if (ssh_options_parse_config(s, options.config_file->c_str()) != 0) {
      return make_error(EINVAL, "cannot parse ssh config " + *options.config_file + ": " + ssh_get_error(s));
    }
    config_files.push_back(*options.config_file);
  } else {
    for (const std::string& file : {ssh_dir + "/config", std::string("/etc/ssh/ssh_config")}) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(file, ec)) continue;
      if (ssh_options_parse_config(s, file.c_str()) != 0) {
        return make_error(EINVAL, "cannot parse ssh config " + file + ": " + ssh_get_error(s));
      }
      config_files.push_back(file);
    }
  }

  // Command-line options win over the config, as in OpenSSH.
  for (auto it = options.identity_files.rbegin(); it != options.identity_files.rend(); ++it) {
    std::error_code ec;
    if (!std::filesystem::exists(*it, ec)) return make_error(ENOENT, "identity file " + *it + " not found");
    ssh_options_set(s, SSH_OPTIONS_IDENTITY, it->c_str());
  }
  if (options.known_hosts_file) ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, options.known_hosts_file->c_str());
  if (options.user) ssh_options_set(s, SSH_OPTIONS_USER, options.user->c_str());
  if (options.port) {
    unsigned port = *options.port;
    ssh_options_set(s, SSH_OPTIONS_PORT, &port);
  }
  long timeout = options.connect_timeout_seconds;
  ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &timeout);
  std::string ciphers = options.ciphers.value_or(default_ciphers());
  if (!ciphers.empty()) {
    if (ssh_options_set(s, SSH_OPTIONS_CIPHERS_C_S, ciphers.c_str()) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_CIPHERS_S_C, ciphers.c_str()) != SSH_OK) {
      return make_error(EINVAL, "bad cipher list '" + ciphers + "': " + ssh_get_error(s));
    }
  }
  return {};
}

}  // namespace

Result<SshTarget> resolve_ssh_target(const SshOptions& options) {
  SessionHandle session(ssh_new());
  if (!session) return make_error(ENOMEM, "cannot create an ssh session");
  SshTarget target;
  if (auto status = configure(session.get(), options, target.config_files); !status) return status.error();
  target.host = option_string(session.get(), SSH_OPTIONS_HOST);
  ssh_options_get_port(session.get(), &target.port);
  target.user = option_string(session.get(), SSH_OPTIONS_USER);
  target.known_hosts = option_string(session.get(), SSH_OPTIONS_KNOWNHOSTS);
  target.identities = options.identity_files;
  if (std::string first = option_string(session.get(), SSH_OPTIONS_IDENTITY); !first.empty()) {
    target.identities.push_back(expand_tilde(first));
  }
  return target;
}

Result<SshSession> SshSession::connect(const SshOptions& options) {
  SessionHandle session(ssh_new());
  if (!session) return make_error(ENOMEM, "cannot create an ssh session");
  ssh_session s = session.get();
  std::vector<std::string> config_files;
  if (auto status = configure(s, options, config_files); !status) return status.error();
  std::string config_description = config_files.empty() ? home_directory() + "/.ssh/config" : config_files.front();

  std::string host = option_string(s, SSH_OPTIONS_HOST);
  unsigned port = 22;
  ssh_options_get_port(s, &port);
  std::string user = option_string(s, SSH_OPTIONS_USER);
  std::string where = (user.empty() ? "" : user + "@") + host + " port " + std::to_string(port);
  if (host != options.destination) where = "'" + options.destination + "' (" + where + ")";

  if (ssh_connect(s) != SSH_OK) {
    std::string reason = ssh_get_error(s);
    std::string hint;
    if (host == options.destination && reason.find("resolve") != std::string::npos) {
      hint = "; no Host entry in " + config_description + " gives it a Hostname";
    }
    return make_error(kSshConnectFailed, "cannot connect to " + where + ": " + reason + hint);
  }
  if (auto status = verify_host_key(s, options, where); !status) return status.error();

  int auth = ssh_userauth_publickey_auto(s, nullptr, nullptr);
  if (auth != SSH_AUTH_SUCCESS) {
    std::string reason = auth == SSH_AUTH_ERROR
                             ? std::string(": ") + ssh_get_error(s)
                             : ": the server accepted none of the offered keys (ssh-agent, IdentityFile)";
    return make_error(kSshAuthFailed, "authentication to " + where + " failed" + reason);
  }
  return SshSession(std::move(session), where, options.io_timeout_seconds);
}

Result<SshChannel> SshSession::exec(const std::string& command) {
  ssh_session s = session_.get();
  ChannelHandle channel(ssh_channel_new(s));
  if (!channel) return make_error(EPROTO, "cannot create an ssh channel: " + std::string(ssh_get_error(s)));
  if (ssh_channel_open_session(channel.get()) != SSH_OK) {
    return make_error(EPROTO, "cannot open an ssh channel on " + description_ + ": " + ssh_get_error(s));
  }
  if (ssh_channel_request_exec(channel.get(), command.c_str()) != SSH_OK) {
    return make_error(EPROTO, "the server refused to run '" + command + "': " + ssh_get_error(s));
  }
  return SshChannel(std::move(channel), io_timeout_seconds_);
}

void SshChannel::drain_stderr() {
  std::array<char, 4096> buffer{};
  while (true) {
    int n = ssh_channel_read_nonblocking(channel_.get(), buffer.data(), buffer.size(), 1);
    if (n <= 0) break;
    stderr_.append(std::string_view(buffer.data(), static_cast<size_t>(n)));
  }
}

Result<size_t> SshChannel::read_some(std::span<std::byte> buffer) {
  uint32_t count = static_cast<uint32_t>(std::min<size_t>(buffer.size(), 1u << 20));
  // Waits at most read_timeout_seconds_ for the next byte (libssh's own default waits for ever).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(read_timeout_seconds_);
  auto lost = [&] {
    return make_error(ECONNRESET,
                      std::string("ssh connection lost: ") + ssh_get_error(ssh_channel_get_session(channel_.get())));
  };
  while (true) {
    // Bytes waiting on stdout, SSH_EOF once the remote closed it (whatever its stderr holds).
    int available = ssh_channel_poll_timeout(channel_.get(), 1000, 0);
    if (available == SSH_ERROR) return lost();
    if (available == SSH_EOF) return size_t{0};
    if (available > 0) {
      int n = ssh_channel_read(channel_.get(), buffer.data(),
                               std::min<uint32_t>(count, static_cast<uint32_t>(available)), 0);
      if (n == SSH_ERROR) return lost();
      return static_cast<size_t>(n);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(ETIMEDOUT, "the server sent nothing for " + std::to_string(read_timeout_seconds_) + " s");
    }
  }
}

Status SshChannel::write_all(std::span<const std::byte> data) {
  while (!data.empty()) {
    uint32_t count = static_cast<uint32_t>(std::min<size_t>(data.size(), 1u << 20));
    int n = ssh_channel_write(channel_.get(), data.data(), count);
    if (n == SSH_ERROR || n < 0) {
      return make_error(ECONNRESET,
                        std::string("ssh connection lost: ") + ssh_get_error(ssh_channel_get_session(channel_.get())));
    }
    if (n == 0 && (ssh_channel_is_closed(channel_.get()) || ssh_channel_is_eof(channel_.get()))) {
      return make_error(EPIPE, "the remote command closed its input");
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return {};
}

Status SshChannel::close_write() {
  if (ssh_channel_send_eof(channel_.get()) != SSH_OK) {
    return make_error(ECONNRESET,
                      std::string("ssh connection lost: ") + ssh_get_error(ssh_channel_get_session(channel_.get())));
  }
  return {};
}

std::string SshChannel::stderr_tail() {
  drain_stderr();
  return stderr_.last_line();
}

Result<int> SshChannel::finish(std::string* output) {
  std::array<std::byte, 16384> buffer{};
  while (true) {
    auto n = read_some(buffer);
    if (!n) return n.error();
    if (*n == 0) break;
    if (output != nullptr) output->append(reinterpret_cast<const char*>(buffer.data()), *n);
  }
  drain_stderr();
  return ssh_channel_get_exit_status(channel_.get());
}

}  // namespace lazystore
