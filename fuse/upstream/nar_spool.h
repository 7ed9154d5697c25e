// A whole NAR fetched from a binary cache, decompressed once into an anonymous file under the
// cache directory, and verified (NarSize and the sha256 NarHash) before anything is read from
// it. Used when a file cannot be read with a range request: compressed NARs, or no listing.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "fd.h"
#include "result.h"
#include "tree.h"

namespace lazystore {

class Decompressor;

class NarSpool {
 public:
  // An empty spool in `directory` for a NAR of nar_size bytes compressed with `compression`
  // ("none", "xz", "zstd"); ENOTSUP for others (bzip2, br).
  static Result<std::unique_ptr<NarSpool>> create(const std::string& directory,
                                                  std::string_view compression, uint64_t nar_size);
  ~NarSpool();
  NarSpool(const NarSpool&) = delete;
  NarSpool& operator=(const NarSpool&) = delete;

  // Takes the next piece of the compressed file; false on an error (see error()).
  bool append(std::span<const char> compressed);
  const std::string& error() const { return error_; }

  // Ends the stream, checks size and hash, and parses the archive. EIO on a mismatch.
  Status finish(uint64_t nar_size, std::span<const uint8_t> nar_sha256);

  // The archive's own tree (valid after finish()).
  const Tree& tree() const { return tree_; }
  uint64_t size() const { return size_; }

  // Reads from the file at `relative_path` (as in the caller's tree) of this archive.
  Result<size_t> read(const std::string& relative_path, uint64_t offset, std::span<std::byte> buf) const;

 private:
  NarSpool() = default;
  bool write_out(std::span<const std::byte> data);

  Fd fd_;
  std::unique_ptr<Decompressor> decompressor_;
  struct Sha256;
  std::unique_ptr<Sha256> sha256_;
  uint64_t size_ = 0;
  uint64_t limit_ = UINT64_MAX;
  std::string error_;
  Tree tree_;
};

// Lower-case hex, for messages.
std::string to_hex(std::span<const uint8_t> bytes);

}  // namespace lazystore
