#include "inode_journal.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "io.h"

namespace lazystore {
namespace {

constexpr uint64_t kMagic = 0x32306f6e692d7a6c;  // "lz-ino02"
constexpr uint64_t kHeader = 64;
constexpr uint32_t kCommitted = 0x314f4e49;  // "INO1"
constexpr uint64_t kRecordHeader = 24;
constexpr uint64_t kCommitAt = 0, kLengthAt = 4, kInoAt = 8, kLookupsAt = 16;
constexpr uint32_t kLongestKey = 1u << 16;  // a store path name plus a relative path
constexpr uint64_t kGrowth = 64 * 1024;
constexpr uint64_t kCompactAbove = 1u << 20;

uint64_t padded(uint64_t key_length) { return (kRecordHeader + key_length + 7) & ~uint64_t{7}; }
uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

template <class T>
T load(const unsigned char* at) {
  T value;
  std::memcpy(&value, at, sizeof value);
  return value;
}

std::atomic_ref<uint64_t> lookups_word(unsigned char* record) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(record + kLookupsAt));
}

// Writes one record at `to`; its commit word last.
void write_record(unsigned char* to, uint64_t ino, std::string_view key, uint64_t lookups) {
  auto length = static_cast<uint32_t>(key.size());
  std::memcpy(to + kLengthAt, &length, sizeof length);
  std::memcpy(to + kInoAt, &ino, sizeof ino);
  std::memcpy(to + kLookupsAt, &lookups, sizeof lookups);
  std::memcpy(to + kRecordHeader, key.data(), key.size());
  std::memset(to + kRecordHeader + key.size(), 0, padded(key.size()) - kRecordHeader - key.size());
  std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(to + kCommitAt)).store(kCommitted, std::memory_order_release);
}

struct FileState {
  bool valid = false;
  uint64_t epoch = 0;
  uint64_t size = 0;
};

Result<FileState> inspect(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return errno_error("inode journal: fstat");
  FileState state;
  state.size = static_cast<uint64_t>(st.st_size);
  if (state.size < kHeader) return state;
  unsigned char header[16];
  if (pread(fd, header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) {
    return errno_error("inode journal: read");
  }
  state.epoch = load<uint64_t>(header + 8);
  state.valid = load<uint64_t>(header) == kMagic && state.epoch > 0;
  return state;
}

Result<std::string> read_all(int fd, uint64_t size) {
  std::string data(size, '\0');
  size_t have = 0;
  while (have < data.size()) {
    ssize_t n = pread(fd, data.data() + have, data.size() - have, static_cast<off_t>(have));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("inode journal: read");
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  data.resize(have);
  return data;
}

}  // namespace

Result<InodeJournal::Files> InodeJournal::create_memfds() {
  Files files{-1, -1};
  for (int& fd : files) {
    fd = memfd_create("lazystore-inodes", MFD_CLOEXEC);
    if (fd < 0) {
      Error error = errno_error("inode journal: memfd_create");
      for (int other : files) {
        if (other >= 0) close(other);
      }
      return error;
    }
  }
  return files;
}

Result<InodeJournal> InodeJournal::open(Files files, std::vector<Record>& live) {
  std::array<FileState, 2> states;
  int active = -1;
  for (int i = 0; i < 2; ++i) {
    auto state = inspect(files[i]);
    if (!state) return state.error();
    states[i] = *state;
    if (states[i].valid && (active < 0 || states[i].epoch > states[active].epoch)) active = i;
  }
  InodeJournal journal(files, active < 0 ? 1 : active);  // compact() writes the other file
  if (active >= 0) {
    auto data = read_all(files[active], states[active].size);
    if (!data) return data.error();
    const auto* bytes = reinterpret_cast<const unsigned char*>(data->data());
    uint64_t size = data->size();
    for (uint64_t at = kHeader; size - at >= kRecordHeader;) {
      auto length = load<uint32_t>(bytes + at + kLengthAt);
      if (load<uint32_t>(bytes + at + kCommitAt) != kCommitted || length > kLongestKey || padded(length) > size - at) {
        break;  // the end, or a record torn by a kill
      }
      auto lookups = load<uint64_t>(bytes + at + kLookupsAt);
      if (lookups > 0) {
        live.push_back({load<uint64_t>(bytes + at + kInoAt), std::string(data->data() + at + kRecordHeader, length),
                        lookups, kNoRecord});
      }
      at += padded(length);
    }
    journal.epoch_ = states[active].epoch;
  }
  std::vector<Live> keep;
  keep.reserve(live.size());
  for (Record& record : live) keep.push_back({record.ino, record.key, record.lookups, &record.at});
  if (auto compacted = journal.compact(keep); !compacted) return compacted.error();
  return journal;
}

InodeJournal::InodeJournal(InodeJournal&& other) noexcept
    : files_(other.files_),
      active_(other.active_),
      base_(std::exchange(other.base_, nullptr)),
      mapped_(std::exchange(other.mapped_, 0)),
      end_(other.end_),
      epoch_(other.epoch_),
      live_bytes_(other.live_bytes_),
      dead_bytes_(other.dead_bytes_) {}

InodeJournal::~InodeJournal() { unmap(); }

void InodeJournal::unmap() {
  if (base_) munmap(base_, mapped_);
  base_ = nullptr;
  mapped_ = 0;
}

Status InodeJournal::compact(const std::vector<Live>& live) {
  int target = 1 - active_;
  int fd = files_[target];
  uint64_t size = kHeader;
  for (const Live& record : live) size += padded(record.key.size());
  uint64_t file_size = round_up(size + kRecordHeader, kGrowth);
  // Whatever the target held (a stale epoch, or a compaction a kill interrupted) goes first.
  if (ftruncate(fd, 0) != 0 || ftruncate(fd, static_cast<off_t>(file_size)) != 0) {
    return errno_error("inode journal: truncate");
  }
  void* mapped = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mapped == MAP_FAILED) {
    Error error = errno_error("inode journal: mmap");
    (void)!ftruncate(fd, 0);
    return error;
  }
  auto* base = static_cast<unsigned char*>(mapped);
  std::vector<uint64_t> places;
  places.reserve(live.size());
  uint64_t at = kHeader;
  for (const Live& record : live) {
    write_record(base + at, record.ino, record.key, record.lookups);
    places.push_back(at);
    at += padded(record.key.size());
  }
  std::memcpy(base, &kMagic, sizeof kMagic);
  // The switch: before this store the old file is the journal, after it this one.
  std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(base + 8)).store(epoch_ + 1, std::memory_order_release);
  unmap();
  (void)!ftruncate(files_[active_], 0);
  base_ = base;
  mapped_ = file_size;
  end_ = at;
  epoch_++;
  active_ = target;
  live_bytes_ = at - kHeader;
  dead_bytes_ = 0;
  for (size_t i = 0; i < live.size(); ++i) *live[i].at = places[i];
  return {};
}

Status InodeJournal::reserve(uint64_t bytes) {
  if (bytes <= mapped_) return {};
  uint64_t size = std::max(mapped_ * 2, round_up(bytes, kGrowth));
  if (ftruncate(files_[active_], static_cast<off_t>(size)) != 0) return errno_error("inode journal: grow");
  void* moved = mremap(base_, mapped_, size, MREMAP_MAYMOVE);
  if (moved == MAP_FAILED) return errno_error("inode journal: mremap");
  base_ = static_cast<unsigned char*>(moved);
  mapped_ = size;
  return {};
}

Result<uint64_t> InodeJournal::append(uint64_t ino, std::string_view key, uint64_t lookups) {
  if (key.size() > kLongestKey) return make_error(ENAMETOOLONG, "inode journal: key too long");
  uint64_t size = padded(key.size());
  // Room for the record and a zero commit word after it (the end a successor stops at).
  if (auto room = reserve(end_ + size + kRecordHeader); !room) return room.error();
  write_record(base_ + end_, ino, key, lookups);
  uint64_t at = end_;
  end_ += size;
  (lookups > 0 ? live_bytes_ : dead_bytes_) += size;
  return at;
}

void InodeJournal::set_lookups(uint64_t at, uint64_t lookups) {
  if (at == kNoRecord || at < kHeader || at + kRecordHeader > end_) return;
  auto word = lookups_word(base_ + at);
  uint64_t before = word.exchange(lookups, std::memory_order_release);
  if ((before > 0) == (lookups > 0)) return;
  uint64_t size = padded(load<uint32_t>(base_ + at + kLengthAt));
  if (lookups == 0) {
    live_bytes_ -= size;
    dead_bytes_ += size;
  } else {
    dead_bytes_ -= size;
    live_bytes_ += size;
  }
}

bool InodeJournal::wants_compaction() const { return dead_bytes_ > kCompactAbove && dead_bytes_ > live_bytes_; }

}  // namespace lazystore
