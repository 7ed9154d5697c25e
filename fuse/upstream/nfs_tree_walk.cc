#include "nfs_tree_walk.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

namespace lazystore {

std::optional<NodeType> node_type_of_mode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return NodeType::Regular;
    case S_IFDIR: return NodeType::Directory;
    case S_IFLNK: return NodeType::Symlink;
    default: return std::nullopt;
  }
}

NfsTreeWalk::NfsTreeWalk(rpc_context* rpc, const std::string& name, TreeBuilder& builder, const NfsPump& pump,
                         NfsHandleSink handles)
    : rpc_(rpc), root_path_("/" + name), builder_(builder), pump_(pump), handles_(std::move(handles)) {}

bool NfsTreeWalk::send_lookup(size_t dir, size_t entry) {
  fail(EIO, where(dir, dirs_[dir].entries[entry].entry.name) + ": listed without attributes");
  return false;
}

void NfsTreeWalk::fail(int code, const std::string& message) {
  if (!error_) error_ = make_error(code, message);
}

std::string NfsTreeWalk::where(size_t dir, std::string_view name) const {
  std::string path = root_path_;
  if (dir != kNone && !dirs_[dir].relative.empty()) path += "/" + dirs_[dir].relative;
  if (!name.empty()) path += "/" + std::string(name);
  return path;
}

Error NfsTreeWalk::lost(int rc) const {
  // The pump gave up (what was in flight was cancelled): its reason, not the cancellations'.
  return make_error(
      rc == -ETIMEDOUT ? ETIMEDOUT : EIO,
      root_path_ + (rc == -ETIMEDOUT ? ": no answer within the deadline (upstream-timeout)" : ": connection lost"));
}

void NfsTreeWalk::replied() {
  in_flight_--;
  replies_++;
  if (urgent_in_flight_ == 0 && urgent_.empty() && window_ < kMaxInFlight) window_++;
  builder_.progressed();
}

void NfsTreeWalk::resolved(std::optional<NodeType> type, uint64_t size, bool executable, std::string fh) {
  if (!type) return fail(EIO, root_path_ + ": not a file, directory or symlink");
  if (*type == NodeType::Regular) {
    if (auto fits = Tree::check_file_size(size, root_path_); !fits) return fail(EIO, fits.error().message);
  }
  if (*type == NodeType::Symlink && size > Tree::kMaxTargetLength) {
    return fail(EIO, root_path_ + ": symlink target too long");
  }
  root_type_ = *type;
  root_size_ = size;
  root_executable_ = executable;
  root_fh_ = std::move(fh);
  resolved_ = true;
}

void NfsTreeWalk::add_entry(size_t dir_index, std::string name, std::optional<NodeType> type, uint64_t size,
                            bool executable, std::string fh, bool known) {
  if (name == "." || name == "..") return;
  if (++entries_ > Tree::kMaxNodes)
    return fail(EIO, root_path_ + ": more than " + std::to_string(Tree::kMaxNodes) + " entries");
  Dir& dir = dirs_[dir_index];
  Entry entry;
  entry.entry.name = std::move(name);
  entry.fh = std::move(fh);
  entry.known = known;
  dir.entries.push_back(std::move(entry));
  size_t index = dir.entries.size() - 1;
  if (!known) {
    dir.unsettled++;
    to_lookup_.emplace_back(dir_index, index);
    return;
  }
  entry_known(dir_index, index, type, size, executable, dir.entries[index].fh);
}

void NfsTreeWalk::entry_known(size_t dir_index, size_t index, std::optional<NodeType> type, uint64_t size,
                              bool executable, std::string fh) {
  Dir& dir = dirs_[dir_index];
  Entry& e = dir.entries[index];
  bool was_unsettled = !e.known;
  e.known = true;
  e.fh = std::move(fh);
  if (!type) return fail(EIO, where(dir_index, e.entry.name) + ": not a file, directory or symlink");
  e.entry.type = *type;
  if (*type == NodeType::Regular) {
    if (auto fits = Tree::check_file_size(size, where(dir_index, e.entry.name)); !fits) {
      return fail(EIO, fits.error().message);
    }
    e.entry.size = size;
    e.entry.executable = executable;
    if (was_unsettled) dir.unsettled--;
  } else if (*type == NodeType::Symlink) {
    if (size == 0 || size > Tree::kMaxTargetLength) {
      return fail(EIO, where(dir_index, e.entry.name) + ": symlink target empty or too long");
    }
    e.entry.size = size;
    if (!was_unsettled) dir.unsettled++;
    to_readlink_.emplace_back(dir_index, index);
  } else {
    if (was_unsettled) dir.unsettled--;
    if (dir.depth + 1 > Tree::kMaxDepth)
      return fail(ELOOP, where(dir_index, e.entry.name) + ": directory tree too deep");
    e.dir = dirs_.size();
    Dir child;
    child.fh = e.fh;
    child.parent = dir_index;
    child.name = e.entry.name;
    child.relative = dir.relative.empty() ? e.entry.name : dir.relative + "/" + e.entry.name;
    child.depth = dir.depth + 1;
    dirs_.push_back(std::move(child));  // `dir` and `e` stay valid: a deque keeps its elements
    to_list_.push_back(e.dir);
  }
  try_deliver(dir_index);
}

void NfsTreeWalk::target_read(size_t dir_index, size_t index, std::string target) {
  if (dir_index == kNone) {
    root_target_ = std::move(target);
    root_target_read_ = true;
    return;
  }
  Dir& dir = dirs_[dir_index];
  Entry& e = dir.entries[index];
  if (target.empty() || target.size() > Tree::kMaxTargetLength || target.size() != e.entry.size) {
    return fail(
        EIO, where(dir_index, e.entry.name) + ": symlink target empty, too long or not as long as its attributes say");
  }
  e.entry.target = std::move(target);
  dir.unsettled--;
  try_deliver(dir_index);
}

void NfsTreeWalk::page_done(size_t dir_index, bool eof) {
  Dir& dir = dirs_[dir_index];
  if (dir.urgent_in_flight) {
    dir.urgent_in_flight = false;
    urgent_in_flight_--;
  }
  if (eof) {
    dir.read_all = true;
    try_deliver(dir_index);
  } else {
    // The rest of a listing first: it is the oldest work (and someone may wait for it).
    dir.page_due = true;
    (dir.urgent ? urgent_ : to_list_).push_front(dir_index);
  }
}

void NfsTreeWalk::try_deliver(size_t dir_index) {
  Dir& dir = dirs_[dir_index];
  if (failed() || dir.delivered || !dir.read_all || dir.unsettled > 0) return;
  if (dir.parent != kNone && !dirs_[dir.parent].delivered) return;  // the parent's listing goes first
  if (handles_) {
    for (const Entry& e : dir.entries) {
      if (!e.fh.empty()) handles_(dir.relative.empty() ? e.entry.name : dir.relative + "/" + e.entry.name, e.fh);
    }
  }
  std::vector<TreeBuilder::Entry> entries;
  entries.reserve(dir.entries.size());
  for (Entry& e : dir.entries) entries.push_back(std::move(e.entry));
  auto nodes = builder_.add_listing(dir.node, std::move(entries));
  if (!nodes) return fail(nodes.error().code == ELOOP ? ELOOP : EIO, nodes.error().message);
  dir.delivered = true;
  std::vector<size_t> children;
  for (size_t i = 0; i < dir.entries.size() && i < nodes->size(); ++i) {
    size_t child = dir.entries[i].dir;
    if (child == kNone) continue;
    dirs_[child].node = (*nodes)[i];
    dir_of_node_[(*nodes)[i]] = child;
    children.push_back(child);
  }
  std::vector<Entry>().swap(dir.entries);  // handed over: its memory goes
  for (size_t child : children) try_deliver(child);
}

void NfsTreeWalk::take_wanted() {
  auto wanted = builder_.take_wanted();
  if (!wanted.empty()) window_ = std::max(kMinInFlight, window_ / 2);
  for (uint32_t node : wanted) {
    auto it = dir_of_node_.find(node);
    if (it == dir_of_node_.end()) continue;
    Dir& dir = dirs_[it->second];
    if (dir.urgent || dir.delivered) continue;
    dir.urgent = true;
    if (dir.page_due) urgent_.push_back(it->second);
  }
}

bool NfsTreeWalk::can_issue() const {
  if (!to_readlink_.empty() || !to_lookup_.empty() || !urgent_.empty()) return true;
  // While a wanted directory is in flight nothing else is sent: its answer is not queued behind
  // a full window of others at the server and on the wire.
  return urgent_in_flight_ == 0 && !to_list_.empty();
}

// Sends the next page of a directory of `queue`; false when it has none due (or sending failed).
bool NfsTreeWalk::send_next_page(std::deque<size_t>& queue) {
  while (!queue.empty()) {
    size_t index = queue.front();
    queue.pop_front();
    Dir& dir = dirs_[index];
    // A directory may be in both queues (wanted): only a page due is sent, once.
    if (!dir.page_due) continue;
    dir.page_due = false;
    dir.started = true;
    if (dir.urgent) {
      dir.urgent_in_flight = true;
      urgent_in_flight_++;
    }
    return send_readdir(index);
  }
  return false;
}

// Sends the next request; false when there is nothing to send (or sending failed).
bool NfsTreeWalk::issue_one() {
  // Readlinks and lookups first: each completes a directory already read (one small round trip).
  if (!to_readlink_.empty()) {
    auto [dir, entry] = to_readlink_.front();
    to_readlink_.pop_front();
    return send_readlink(dir, entry);
  }
  if (!to_lookup_.empty()) {
    auto [dir, entry] = to_lookup_.front();
    to_lookup_.pop_front();
    return send_lookup(dir, entry);
  }
  if (send_next_page(urgent_)) return true;
  if (urgent_in_flight_ > 0) return false;
  return send_next_page(to_list_);
}

bool NfsTreeWalk::may_send() const {
  if (failed()) return false;
  if (in_flight_ < window_) return can_issue();
  // Over the window only a wanted directory goes out (a few more at most).
  return !urgent_.empty() && in_flight_ < kMaxInFlight + kMinInFlight;
}

void NfsTreeWalk::issue() {
  take_wanted();
  while (may_send()) {
    bool sent = in_flight_ < window_ ? issue_one() : send_next_page(urgent_);
    if (!sent && !may_send()) return;
  }
}

// Sends and services until nothing is left in flight; 0 or the pump's negative errno.
int NfsTreeWalk::drain() {
  for (;;) {
    issue();
    if (in_flight_ == 0) return 0;
    int rc = pump_([this] { return in_flight_ == 0 || may_send(); }, replies_);
    if (rc < 0) return rc;
  }
}

Status NfsTreeWalk::run() {
  if (!send_resolve()) return *error_;
  if (int rc = drain(); rc < 0) return lost(rc);
  if (error_) return *error_;
  if (!resolved_) return make_error(EIO, root_path_ + ": no answer about it");
  if (handles_ && !root_fh_.empty()) handles_("", root_fh_);
  if (root_type_ == NodeType::Regular) {
    return builder_.set_root({"", NodeType::Regular, root_size_, root_executable_, {}});
  }
  if (root_type_ == NodeType::Symlink) {
    to_readlink_.emplace_back(kNone, 0);
    if (int rc = drain(); rc < 0) return lost(rc);
    if (error_) return *error_;
    if (!root_target_read_ || root_target_.empty() || root_target_.size() > Tree::kMaxTargetLength ||
        root_target_.size() != root_size_) {
      return make_error(EIO, root_path_ + ": symlink target empty, too long or not as long as its attributes say");
    }
    return builder_.set_root({"", NodeType::Symlink, root_target_.size(), false, std::move(root_target_)});
  }
  if (auto set = builder_.set_root({"", NodeType::Directory, 0, false, {}}); !set) return set;
  Dir root;
  root.fh = root_fh_;
  root.node = Tree::kRoot;
  dirs_.push_back(std::move(root));
  dir_of_node_[Tree::kRoot] = 0;
  to_list_.push_back(0);
  if (int rc = drain(); rc < 0) return lost(rc);
  if (error_) return *error_;
  for (size_t i = 0; i < dirs_.size(); ++i) {
    if (!dirs_[i].delivered) return make_error(EIO, where(i) + ": listing ended unfinished");
  }
  return {};
}

}  // namespace lazystore
