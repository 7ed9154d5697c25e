// The process's limit on open descriptors. systemd starts services with a soft limit of 1024
// (and a hard one far above): a daemon that holds files open raises its soft limit first.
#pragma once

#include <cstdint>

namespace lazystore {

// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit in force after.
uint64_t raise_fd_limit() noexcept;

}  // namespace lazystore
