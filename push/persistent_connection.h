// The persistent connection: a background process that keeps the SSH session, the server's
// store process and the local nix-store --serve open for a while (like OpenSSH's
// ControlPersist), so a later push, and above all a no-op push, costs one round trip on open
// connections instead of an SSH handshake and two process start-ups. Clients reach it over a
// unix socket (mode 0600 in a 0700 directory) and hand it their stdout/stderr, so progress
// appears on their terminal; the outcome comes back as the JSON of --json. Both ends check that
// the other is the same user (SO_PEERCRED).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "push.h"
#include "result.h"

namespace lazystore {

// $XDG_RUNTIME_DIR/lazystore-push (if that is this user's private directory), else
// /tmp/lazystore-push-UID. Either must be a directory of this user's, mode 0700, or it is not used.
std::string default_control_dir();

// The socket of the persistent connection for these settings: named by a hash of the
// destination as the ssh config resolves it, the options and commands, the contents of the ssh
// config and known_hosts files, the identity files and the lazystore-push binary. An error if
// the ssh config cannot be read (the push then reports it itself).
Result<std::string> control_socket_path(const std::string& control_dir, const PushOptions& options);

// Runs the push through the persistent connection at `socket`, starting one (that lives
// `persist_seconds` past its last request) if there is none. An error means none could be used.
Result<PushOutcome> push_over_persistent_connection(const std::string& socket, const PushOptions& options,
                                                    const PushRequest& request, int64_t persist_seconds);

// Asks the persistent connection at `socket` to end; true if one was running.
bool stop_persistent_connection(const std::string& socket);

}  // namespace lazystore
