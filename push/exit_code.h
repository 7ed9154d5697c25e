// Exit codes of lazystore-push (also in --help and push/README.md), and which one an SSH
// failure gets.
#pragma once

#include "result.h"
#include "ssh_session.h"

namespace lazystore {

enum class ExitCode : int {
  Ok = 0,
  Usage = 2,       // bad arguments, or an argument is not a store path
  LocalStore = 3,  // the local store could not be read (path not valid, nix-store failed)
  Connect = 4,     // alias/host unknown or unreachable, ssh config unreadable
  HostKey = 5,     // host key unknown (without --accept-new-host-key) or changed
  Auth = 6,        // no key was accepted
  Remote = 7,      // the remote command failed or speaks neither protocol
  Incomplete = 8,  // the transfer broke off: some paths are missing on the server; rerun
  Roots = 9,       // the paths were copied but the GC root could not be set / listed / deleted
};

inline ExitCode ssh_exit_code(const Error& error) {
  switch (error.code) {
    case kSshHostKeyRefused: return ExitCode::HostKey;
    case kSshAuthFailed: return ExitCode::Auth;
    default: return ExitCode::Connect;
  }
}

}  // namespace lazystore
