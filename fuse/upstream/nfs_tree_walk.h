// What the NFSv3 and NFSv4 tree walks share (nfs3_tree_walk.h, nfs4_tree_walk.h): many requests
// in flight on one connection, breadth-first, the directories someone waits for first (the
// TreeBuilder's wanted ones), symlinks read as soon as they are seen; and each directory handed
// to the builder once every entry of it is known (its parent's listing handed first), so that a
// lookup is answered long before the walk ends. Sizes are bounded where they enter: a file
// larger than Tree::kMaxFileSize, a symlink longer than Tree::kMaxTargetLength, more than
// Tree::kMaxNodes entries or a tree deeper than Tree::kMaxDepth end the walk with EIO.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "nfs_rpc.h"
#include "result.h"
#include "upstream.h"

namespace lazystore {

// Called with each entry's relative path inside the store path ("" for the store path itself)
// and its file handle, when a walk learns one (NFSv3: for reads by handle later).
using NfsHandleSink = std::function<void(const std::string& relative, const std::string& fh)>;

class NfsTreeWalk {
 public:
  virtual ~NfsTreeWalk() = default;
  NfsTreeWalk(const NfsTreeWalk&) = delete;
  NfsTreeWalk& operator=(const NfsTreeWalk&) = delete;

  // Lists the store path; the builder gets it directory by directory. Errors carry an errno
  // (ENOENT when the server says so); when the pump gives up, ETIMEDOUT or EIO.
  Status run();

 protected:
  static constexpr size_t kNone = static_cast<size_t>(-1);
  // Requests outstanding on the connection: one more per answer up to kMaxInFlight while nobody
  // waits, halved (down to kMinInFlight) whenever someone starts waiting, so that a wanted
  // directory's answer is queued behind few others at the server and on the wire, and a walk
  // whose every directory is wanted in turn (find) still keeps many requests in flight.
  static constexpr size_t kMaxInFlight = 48;
  static constexpr size_t kMinInFlight = 8;

  struct Entry {
    TreeBuilder::Entry entry;
    std::string fh;      // its handle, when the protocol gave one
    size_t dir = kNone;  // a directory: its index in dirs_
    bool known = true;   // type and attributes known (false: a LOOKUP is due)
  };
  struct Dir {
    std::string fh;         // empty until known (NFSv4: from its first READDIR)
    size_t parent = kNone;  // kNone for the store path itself
    std::string name;       // in the parent
    std::string relative;   // inside the store path: "" or "a/b"
    size_t depth = 0;
    uint64_t cookie = 0;
    std::array<char, 8> verifier{};
    std::vector<Entry> entries;
    size_t unsettled = 0;           // entries waiting for a LOOKUP or READLINK
    bool started = false;           // its first READDIR went out
    bool page_due = true;           // a READDIR of its next page is to be sent
    bool read_all = false;          // every page is in
    bool delivered = false;         // handed to the builder
    bool urgent = false;            // someone waits for it
    bool urgent_in_flight = false;  // a READDIR of it, sent while it was wanted, is out
    uint32_t node = Tree::kRoot;    // in the builder's tree, once the parent was delivered
  };

  NfsTreeWalk(rpc_context* rpc, const std::string& name, TreeBuilder& builder, const NfsPump& pump,
              NfsHandleSink handles = {});

  // One request in flight, the private data of its RPC: the walk, what it asked (a Kind of the
  // protocol's, with a Resolve), about which directory (kNone: the store path) and entry.
  template <class Walk, class Kind>
  struct WalkRequest {
    Walk* walk;
    Kind kind;
    size_t dir;
    size_t entry;
  };

  // The callback of every RPC of a walk: takes its WalkRequest back, then, unless the walk failed
  // already or the RPC itself did (EIO), hands the reply to Walk::handle(request, data).
  template <class Walk, class Kind>
  static void on_reply(rpc_context*, int status, void* data, void* private_data) noexcept {
    std::unique_ptr<WalkRequest<Walk, Kind>> request(static_cast<WalkRequest<Walk, Kind>*>(private_data));
    Walk& walk = *request->walk;
    NfsTreeWalk& base = walk;
    try {
      base.replied();
      if (base.failed()) return;
      if (status != RPC_STATUS_SUCCESS) {
        return base.fail(
            EIO, base.where(request->kind == Kind::Resolve ? kNone : request->dir) + ": " + rpc_failure(status, data));
      }
      walk.handle(*request, data);
    } catch (...) {
      base.fail(ENOMEM, "out of memory while listing " + base.where(kNone));
    }
  }

  // The protocol's requests: each queues one RPC (through sent()) or calls fail() and returns
  // false. Every reply calls replied() first, then the handlers below.
  virtual bool send_resolve() = 0;                           // the store path: resolved() on reply
  virtual bool send_readdir(size_t dir) = 0;                 // the next page of dirs_[dir]
  virtual bool send_readlink(size_t dir, size_t entry) = 0;  // dir kNone: the store path itself
  virtual bool send_lookup(size_t dir, size_t entry);        // an entry listed without attributes

  void sent() { in_flight_++; }
  void replied();
  // The store path itself: its type, attributes and handle.
  void resolved(std::optional<NodeType> type, uint64_t size, bool executable, std::string fh);
  // An entry of a directory page; the type is a NodeType or nullopt (not a file, directory or
  // symlink). `known` false: only its name and handle are known, a LOOKUP follows.
  void add_entry(size_t dir, std::string name, std::optional<NodeType> type, uint64_t size, bool executable,
                 std::string fh, bool known = true);
  // A page of dirs_[dir] is in; eof: the last one.
  void page_done(size_t dir, bool eof);
  // A LOOKUP for an entry listed without attributes answered.
  void entry_known(size_t dir, size_t entry, std::optional<NodeType> type, uint64_t size, bool executable,
                   std::string fh);
  // A READLINK answered (dir kNone: the store path itself).
  void target_read(size_t dir, size_t entry, std::string target);
  void fail(int code, const std::string& message);
  bool failed() const { return error_.has_value(); }
  // "/<store path>[/relative][/name]" for messages.
  std::string where(size_t dir, std::string_view name = {}) const;

  rpc_context* rpc_;
  std::deque<Dir> dirs_;  // stable addresses: replies refer to them by index
  std::string root_fh_;   // the store path's handle, once resolved
  NodeType root_type_ = NodeType::Regular;

 private:
  void issue();
  bool issue_one();
  bool send_next_page(std::deque<size_t>& queue);
  bool may_send() const;
  int drain();
  void queue_entry_work(size_t dir, size_t entry);
  void try_deliver(size_t dir);
  void take_wanted();
  bool can_issue() const;
  Error lost(int rc) const;

  std::string root_path_;  // "/<store path>"
  TreeBuilder& builder_;
  const NfsPump& pump_;
  NfsHandleSink handles_;
  std::deque<size_t> to_list_;                         // breadth-first; may hold directories already started
  std::deque<size_t> urgent_;                          // wanted directories, and the later pages of wanted ones
  std::deque<std::pair<size_t, size_t>> to_readlink_;  // (dir, entry); (kNone, 0) the store path
  std::deque<std::pair<size_t, size_t>> to_lookup_;
  std::unordered_map<uint32_t, size_t> dir_of_node_;
  size_t in_flight_ = 0;
  size_t window_ = kMinInFlight;  // the cap on in_flight_ now
  size_t urgent_in_flight_ = 0;   // READDIRs of wanted directories out
  size_t replies_ = 0;
  size_t entries_ = 0;
  bool resolved_ = false;
  uint64_t root_size_ = 0;
  bool root_executable_ = false;
  std::string root_target_;
  bool root_target_read_ = false;
  std::optional<Error> error_;
};

// The NodeType of a POSIX file type (S_IFMT bits of a mode), nullopt for anything else.
std::optional<NodeType> node_type_of_mode(uint32_t mode);

}  // namespace lazystore
