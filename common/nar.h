// Streaming reader and writer of Nix archives ("nix-archive-1"). The reader pulls from a source
// in bounded pieces and reports to a visitor; hostile or truncated input is an error value
// (EINVAL for malformed, EPROTO for truncated), never a crash, a hang or unbounded memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string_view>

#include "result.h"
#include "tree.h"

namespace lazystore {

// Fills up to buf.size() bytes; returns how many (0 = end of input) or an error.
using NarSource = std::function<Result<size_t>(std::span<std::byte> buf)>;
// Takes the next piece of output.
using NarSink = std::function<Status(std::span<const std::byte> data)>;

class NarVisitor {
 public:
  virtual ~NarVisitor() = default;
  // `path` is relative to the archive root, "" for the root itself, components joined by '/'.
  virtual Status directory(std::string_view path) = 0;
  virtual Status symlink(std::string_view path, std::string_view target) = 0;
  // nar_offset: offset of the first content byte in the archive.
  virtual Status file_begin(std::string_view path, bool executable, uint64_t size, uint64_t nar_offset) = 0;
  virtual Status file_data(std::span<const std::byte> data) = 0;
  virtual Status file_end() = 0;
};

struct NarLimits {
  size_t max_depth = Tree::kMaxDepth;
  size_t max_name = Tree::kMaxNameLength;
  size_t max_target = Tree::kMaxTargetLength;
  uint64_t max_entries = Tree::kMaxNodes;
};

// Parses one whole archive; directory entries must be strictly sorted and unique (as Nix writes).
Status parse_nar(const NarSource& source, NarVisitor& visitor, const NarLimits& limits = {});
// Parses an archive into its Tree (file contents are skipped, nar_offset recorded).
Result<Tree> tree_from_nar(const NarSource& source, const NarLimits& limits = {});
// Unpacks an archive to `destination`, which must not exist. Modes: 0444/0555 files, 0555 dirs.
Status restore_nar(const NarSource& source, const std::filesystem::path& destination, const NarLimits& limits = {});

// Writes the archive of `path` (a file, directory or symlink; symlinks are never followed) to the
// sink, entries in Nix's order; file contents streamed in bounded pieces.
Status dump_path(const std::filesystem::path& path, const NarSink& sink);

// A NarSource over a memory buffer, for tests and small archives.
NarSource nar_source_from(std::span<const std::byte> data);

}  // namespace lazystore
