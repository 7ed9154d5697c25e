#include "read_log.h"

namespace lazystore {

void ReadLog::note(uint64_t ino, const std::function<std::string()>& key) {
  std::lock_guard lock(mutex_);
  if (seen_.contains(ino)) return;
  if (full_) {
    dropped_++;  // not remembered either: the set stays as bounded as the list
    return;
  }
  std::string name = key();
  if (bytes_ + name.size() > max_bytes_ || keys_.size() >= max_files_) {
    full_ = true;
    dropped_++;
    return;
  }
  seen_.insert(ino);
  bytes_ += name.size();
  keys_.push_back(std::move(name));
}

ReadLog::Snapshot ReadLog::snapshot() const {
  std::lock_guard lock(mutex_);
  return {keys_, dropped_};
}

}  // namespace lazystore
