// Verified Range reads of an uncompressed NAR described by a signed manifest (HttpUpstream).
//
// A read is rounded out to the manifest's leaf (or, without leaves, its block). A block fetched
// whole is checked from its bytes against its signed hash. A block fetched in part is checked
// leaf by leaf: its leaf hashes come from `<hash>.leaves` (fetched at the same time as the data,
// or kept from an earlier read), and are believed only once they hash to the signed block hash.
// A leaves file that is missing, short or wrong costs bytes, never correctness: the read then
// fetches whole blocks, and the path's leaves are left alone for a while.
#include <algorithm>
#include <cstring>
#include <optional>
#include <system_error>
#include <thread>

#include "http_upstream.h"
#include "log.h"
#include "scope_exit.h"
#include "stats.h"

namespace lazystore {
namespace {

constexpr size_t kMaxLeafBlocks = 16384;  // blocks whose leaf hashes are kept (8 MiB at 64K / 4K)
constexpr auto kLeavesRefusalTime = std::chrono::seconds(60);

// Runs `side` on a thread of its own while `here` runs on this one, and waits for both, also when
// `here` throws; when no thread can be made, one after the other. `side` must not throw (it
// answers errors as values); both are HTTP requests with deadlines.
template <class Side, class Here>
void run_together(Side& side, Here& here) {
  std::optional<std::thread> thread;
  try {
    thread.emplace([&side]() noexcept { side(); });
  } catch (const std::system_error&) {}
  ScopeExit join([&thread] {
    if (thread) thread->join();
  });
  here();
  if (!thread) side();
}

}  // namespace

bool HttpUpstream::leaves_refused(const StorePath& path) {
  std::lock_guard lock(mutex_);
  auto it = leaves_refused_.find(std::string(path.hash_part()));
  if (it == leaves_refused_.end()) return false;
  if (Clock::now() < it->second) return true;
  leaves_refused_.erase(it);
  return false;
}

uint32_t HttpUpstream::read_unit(const StorePath& path, const ManifestHeader& header) {
  return header.leaf_size != 0 && !leaves_refused(path) ? header.leaf_size : header.block_size;
}

Result<std::map<uint64_t, std::vector<uint8_t>>> HttpUpstream::leaves_of(const StorePath& path,
                                                                         const Manifest& manifest, uint32_t node,
                                                                         const std::vector<uint64_t>& blocks) {
  std::map<uint64_t, std::vector<uint8_t>> out;
  const std::string hash(path.hash_part());
  std::vector<uint64_t> missing;
  {
    std::lock_guard lock(mutex_);
    for (uint64_t b : blocks) {
      // Checked again (one SHA-256 of 512 bytes): they are believed only for this manifest.
      auto it = leaves_.find({hash, manifest.leaves_offset(node, b)});
      if (it != leaves_.end() && leaves_match(it->second, manifest.block_hash(node, b))) {
        out[b] = it->second;
      } else {
        missing.push_back(b);
      }
    }
  }
  if (missing.empty()) return out;
  const uint64_t slot_bytes = manifest.leaf_slots() * kLeafHashBytes;
  const uint64_t first = manifest.leaves_offset(node, missing.front());
  const uint64_t last = manifest.leaves_offset(node, missing.back()) + slot_bytes;
  std::string got;
  GetOptions how;
  how.range = std::make_pair(first, last - 1);
  how.max_body = static_cast<size_t>(last - first);
  auto fetched = get(hash + std::string(kLeavesSuffix), how);
  if (!fetched) return fetched.error();
  if (fetched->absent) return make_error(ENOENT, hash + std::string(kLeavesSuffix) + " is missing");
  if (fetched->body.size() != last - first) return make_error(EIO, hash + std::string(kLeavesSuffix) + ": short");
  std::lock_guard lock(mutex_);
  if (leaves_.size() + missing.size() > kMaxLeafBlocks) leaves_.clear();
  for (uint64_t b : missing) {
    const auto* at = reinterpret_cast<const uint8_t*>(fetched->body.data()) + (manifest.leaves_offset(node, b) - first);
    std::vector<uint8_t> leaves(at, at + manifest.leaves_of_block(node, b) * kLeafHashBytes);
    if (!leaves_match(leaves, manifest.block_hash(node, b))) {
      return make_error(EINVAL, hash + std::string(kLeavesSuffix) + ": the leaves of block " + std::to_string(b) +
                                    " of " + manifest.tree.path_of(node) + " do not match the manifest");
    }
    leaves_[{hash, manifest.leaves_offset(node, b)}] = leaves;
    out[b] = std::move(leaves);
  }
  return out;
}

Result<size_t> HttpUpstream::read_blocks(const StorePath& path, const NarInfo& info, const Manifest& manifest,
                                         uint32_t node, uint64_t offset, std::span<std::byte> buf) {
  const TreeNode& file = manifest.tree.nodes[node];
  const uint64_t block = manifest.header.block_size;
  const uint32_t leaf = manifest.header.leaf_size;
  const uint64_t unit = read_unit(path, manifest.header);
  const uint64_t begin = offset / unit * unit;
  const uint64_t end = std::min(file.size, (offset + buf.size() + unit - 1) / unit * unit);
  // The blocks of which only a part is read: at most the first and the last.
  std::vector<uint64_t> partial;
  for (uint64_t b : {begin / block, (end - 1) / block}) {
    bool whole = std::max(begin, b * block) == b * block &&
                 std::min(end, (b + 1) * block) == std::min(file.size, (b + 1) * block);
    if (!whole && (partial.empty() || partial.back() != b)) partial.push_back(b);
  }
  // What is fetched goes through memory unless the read is exactly it.
  std::vector<std::byte> scratch;
  std::span<std::byte> target = buf;
  if (begin != offset || end - begin != buf.size()) {
    scratch.resize(static_cast<size_t>(end - begin));
    target = scratch;
  }
  Status data;
  auto fetch_data = [&] { data = get_range(path, info, file.nar_offset + begin, target); };
  std::optional<Result<std::map<uint64_t, std::vector<uint8_t>>>> leaves;
  if (partial.empty()) {
    fetch_data();
  } else {
    // The leaves and the data at once: the leaves' round trip hides behind the data's.
    auto fetch_leaves = [&] {
      try {
        leaves.emplace(leaves_of(path, manifest, node, partial));
      } catch (const std::exception& e) {  // std::bad_alloc: whole blocks then
        leaves.emplace(make_error(ENOMEM, std::string("leaf hashes: ") + e.what()));
      }
    };
    run_together(fetch_leaves, fetch_data);
  }
  if (!data) return data.error();
  if (leaves && !*leaves) {
    // Costs bytes, never correctness: whole blocks are read instead, for a while.
    if (options_.stats) ++options_.stats->leaf_failures;
    {
      std::lock_guard lock(mutex_);
      leaves_refused_[std::string(path.hash_part())] = Clock::now() + kLeavesRefusalTime;
    }
    if (first_time("leaves", path)) {
      LOG_WARNING("%s: %s; reading whole blocks instead", path.base_name().c_str(), leaves->error().message.c_str());
    }
    return read_blocks(path, info, manifest, node, offset, buf);
  }
  for (uint64_t b = begin / block; b <= (end - 1) / block; ++b) {
    const uint64_t from = std::max(begin, b * block), to = std::min(end, (b + 1) * block);
    std::span<const std::byte> bytes = std::span<const std::byte>(target).subspan(from - begin, to - from);
    bool good = true;
    if (leaves && leaves->value().contains(b)) {
      // Part of the block, leaf by leaf: `from` and `to` are leaf boundaries (or the file's end).
      const std::vector<uint8_t>& hashes = leaves->value().at(b);
      for (uint64_t at = from; at < to && good; at += leaf) {
        uint64_t index = (at - b * block) / leaf;
        auto expected = std::span(hashes).subspan(static_cast<size_t>(index * kLeafHashBytes), kLeafHashBytes);
        good = sha256_matches(bytes.subspan(at - from, std::min<uint64_t>(leaf, to - at)), expected);
      }
    } else {
      uint8_t digest[32];
      good = block_digest(bytes, leaf, digest) && std::memcmp(digest, manifest.block_hash(node, b).data(), 32) == 0;
    }
    if (!good) {
      if (options_.stats) ++options_.stats->block_hash_failures;
      std::string where = manifest.tree.path_of(node) + " block " + std::to_string(b);
      if (first_time("block", path)) {
        LOG_WARNING("%s: %s: the NAR's bytes do not match the signed manifest: not served", path.base_name().c_str(),
                    where.c_str());
      }
      return make_error(EIO, path.base_name() + ": " + where + " does not match its manifest");
    }
  }
  if (!scratch.empty()) std::memcpy(buf.data(), scratch.data() + (offset - begin), buf.size());
  return buf.size();
}

}  // namespace lazystore
