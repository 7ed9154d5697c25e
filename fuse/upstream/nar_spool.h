// A whole NAR fetched from a binary cache, decompressed once into a file under the cache
// directory, and verified (NarSize and the sha256 NarHash) before anything is read from it. Once
// verified it may be kept (renamed to its final name) so that a restart does not download it
// again; a kept NAR is verified again when it is opened after a restart. Used when a file cannot
// be read with a verified range request: no manifest, or a compressed NAR.
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
  static Result<std::unique_ptr<NarSpool>> create(const std::string& directory, std::string_view compression,
                                                  uint64_t nar_size);
  ~NarSpool();
  NarSpool(const NarSpool&) = delete;
  NarSpool& operator=(const NarSpool&) = delete;

  // Takes the next piece of the compressed file; false on an error (see error()).
  bool append(std::span<const char> compressed);
  const std::string& error() const { return error_; }

  // Ends the stream, checks size and hash, and parses the archive. EBADMSG when the NAR is not
  // the one NarSize and NarHash describe (or not an archive); EIO when it could not be read.
  Status finish(uint64_t nar_size, std::span<const uint8_t> nar_sha256);

  // Keeps the verified file as `path` (same directory): it outlives this object.
  Status keep(const std::string& path);

  // A NAR kept before, verified again (size, sha256, archive); ENOENT when there is none, EBADMSG
  // (and the file is removed) when it no longer matches.
  static Result<std::unique_ptr<NarSpool>> open_kept(const std::string& path, uint64_t nar_size,
                                                     std::span<const uint8_t> nar_sha256);

  // The archive's own tree (valid after finish()).
  const Tree& tree() const { return tree_; }
  uint64_t size() const { return size_; }

  // Reads from the file at `relative_path` (as in the caller's tree) of this archive.
  Result<size_t> read(const std::string& relative_path, uint64_t offset, std::span<std::byte> buf) const;

 private:
  NarSpool() = default;
  bool write_out(std::span<const std::byte> data);

  Status check_digest(std::span<const uint8_t> nar_sha256);

  Fd fd_;
  std::string path_;   // the temporary file until keep(), then the kept one
  bool kept_ = false;  // a temporary file is removed with this object
  std::unique_ptr<Decompressor> decompressor_;
  struct Sha256;
  std::unique_ptr<Sha256> sha256_;
  uint64_t size_ = 0;
  uint64_t limit_ = UINT64_MAX;
  std::string error_;
  Tree tree_;
};

}  // namespace lazystore
