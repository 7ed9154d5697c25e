#include "open_beneath.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io.h"

namespace lazystore {

Result<Fd> open_beneath(int dir_fd, const std::string& relative, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
  how.mode = (flags & O_CREAT) != 0 ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd;
  // EAGAIN: a rename raced with the resolution; the kernel asks for a retry.
  int tries = 0;
  do {
    fd = syscall(SYS_openat2, dir_fd, relative.c_str(), &how, sizeof how);
  } while (fd < 0 && (errno == EINTR || errno == EAGAIN) && ++tries < 16);
  if (fd < 0) return errno_error(relative);
  return Fd(static_cast<int>(fd));
}

}  // namespace lazystore
