#include "inode_journal.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lazystore {
namespace {

constexpr size_t kHeader = sizeof(uint64_t) + sizeof(uint32_t);
constexpr uint32_t kLongestKey = 1u << 16;  // a store path name plus a relative path

Error io_error(const char* what) {
  int code = errno;
  return make_error(code, std::string("inode journal: ") + what + ": " + std::strerror(code));
}

}  // namespace

Result<int> InodeJournal::create_memfd() {
  int fd = memfd_create("lazystore-inodes", MFD_CLOEXEC);
  if (fd < 0) return io_error("memfd_create");
  return fd;
}

Result<InodeJournal> InodeJournal::open(int fd, std::vector<Record>& records) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return io_error("fstat");
  std::string data(static_cast<size_t>(st.st_size), '\0');
  size_t have = 0;
  while (have < data.size()) {
    ssize_t n = pread(fd, data.data() + have, data.size() - have, static_cast<off_t>(have));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error("read");
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  data.resize(have);

  size_t at = 0;
  while (data.size() - at >= kHeader) {
    uint64_t ino;
    uint32_t length;
    std::memcpy(&ino, data.data() + at, sizeof ino);
    std::memcpy(&length, data.data() + at + sizeof ino, sizeof length);
    if (length > kLongestKey || data.size() - at - kHeader < length) break;  // torn
    records.emplace_back(ino, data.substr(at + kHeader, length));
    at += kHeader + length;
  }
  if (at != data.size() && ftruncate(fd, static_cast<off_t>(at)) != 0) return io_error("truncate");
  return InodeJournal(fd, at);
}

Status InodeJournal::append(uint64_t ino, std::string_view key) {
  if (key.size() > kLongestKey) return make_error(ENAMETOOLONG, "inode journal: key too long");
  std::string record(kHeader + key.size(), '\0');
  auto length = static_cast<uint32_t>(key.size());
  std::memcpy(record.data(), &ino, sizeof ino);
  std::memcpy(record.data() + sizeof ino, &length, sizeof length);
  std::memcpy(record.data() + kHeader, key.data(), key.size());
  size_t done = 0;
  while (done < record.size()) {
    ssize_t n = pwrite(fd_, record.data() + done, record.size() - done, static_cast<off_t>(end_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error("write");
    done += static_cast<size_t>(n);
  }
  end_ += record.size();
  return {};
}

}  // namespace lazystore
