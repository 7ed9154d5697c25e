// Opening a path beneath a directory without following any symlink on the way (openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): the one home of that call.
#pragma once

#include <sys/types.h>

#include <string>

#include "fd.h"
#include "result.h"

namespace lazystore {

// `relative` beneath `dir_fd`; ELOOP when a component is a symlink, EXDEV when it escapes.
// O_CLOEXEC and O_NOFOLLOW are added to `flags`. The error's message is "RELATIVE: strerror".
Result<Fd> open_beneath(int dir_fd, const std::string& relative, int flags, mode_t mode = 0);

}  // namespace lazystore
