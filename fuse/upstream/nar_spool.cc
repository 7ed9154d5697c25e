#include "nar_spool.h"

#include "format.h"
#include "nar.h"
#include "nar_listing.h"
#include "openssl_handles.h"

#include <fcntl.h>
#include <lzma.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <vector>

namespace lazystore {

// Streaming decompression into a sink; one implementation per Compression value.
class Decompressor {
 public:
  using Sink = std::function<bool(std::span<const std::byte>)>;
  virtual ~Decompressor() = default;
  virtual Status feed(std::span<const char> in, const Sink& out) = 0;
  virtual Status finish(const Sink& out) = 0;
};

namespace {

constexpr size_t kOutBuffer = 256 << 10;

class Identity final : public Decompressor {
 public:
  Status feed(std::span<const char> in, const Sink& out) override {
    if (!out(std::as_bytes(in))) return make_error(EIO, "cannot write the NAR spool");
    return {};
  }
  Status finish(const Sink&) override { return {}; }
};

struct LzmaEnd {
  void operator()(lzma_stream* s) const {
    lzma_end(s);
    delete s;
  }
};

class XzDecompressor final : public Decompressor {
 public:
  static Result<std::unique_ptr<Decompressor>> make() {
    std::unique_ptr<XzDecompressor> d(new XzDecompressor());
    d->stream_.reset(new lzma_stream(LZMA_STREAM_INIT));
    if (lzma_stream_decoder(d->stream_.get(), UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK) {
      return make_error(ENOMEM, "cannot start the xz decoder");
    }
    return std::unique_ptr<Decompressor>(std::move(d));
  }
  Status feed(std::span<const char> in, const Sink& out) override { return run(in, LZMA_RUN, out); }
  Status finish(const Sink& out) override { return run({}, LZMA_FINISH, out); }

 private:
  XzDecompressor() : buffer_(kOutBuffer) {}
  Status run(std::span<const char> in, lzma_action action, const Sink& out) {
    lzma_stream* s = stream_.get();
    s->next_in = reinterpret_cast<const uint8_t*>(in.data());
    s->avail_in = in.size();
    for (;;) {
      s->next_out = buffer_.data();
      s->avail_out = buffer_.size();
      lzma_ret rc = lzma_code(s, action);
      size_t produced = buffer_.size() - s->avail_out;
      if (produced && !out(std::as_bytes(std::span(buffer_.data(), produced)))) {
        return make_error(EIO, "cannot write the NAR spool");
      }
      if (rc == LZMA_STREAM_END) {
        ended_ = true;
        return {};
      }
      if (rc != LZMA_OK) return make_error(EIO, "xz: corrupt compressed NAR (lzma error " + std::to_string(rc) + ")");
      if (action == LZMA_RUN && s->avail_in == 0 && s->avail_out != 0) return {};
      if (action == LZMA_FINISH && produced == 0 && !ended_) {
        return make_error(EIO, "xz: truncated compressed NAR");
      }
    }
  }

  std::unique_ptr<lzma_stream, LzmaEnd> stream_;
  std::vector<uint8_t> buffer_;
  bool ended_ = false;
};

struct ZstdFree {
  void operator()(ZSTD_DStream* s) const { ZSTD_freeDStream(s); }
};

class ZstdDecompressor final : public Decompressor {
 public:
  static Result<std::unique_ptr<Decompressor>> make() {
    std::unique_ptr<ZstdDecompressor> d(new ZstdDecompressor());
    d->stream_.reset(ZSTD_createDStream());
    if (!d->stream_ || ZSTD_isError(ZSTD_initDStream(d->stream_.get()))) {
      return make_error(ENOMEM, "cannot start the zstd decoder");
    }
    return std::unique_ptr<Decompressor>(std::move(d));
  }
  Status feed(std::span<const char> in, const Sink& out) override {
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    // Until the input is used up and the decoder holds no more output (a full buffer may).
    for (bool full = true; input.pos < input.size || full;) {
      ZSTD_outBuffer output{buffer_.data(), buffer_.size(), 0};
      size_t rc = ZSTD_decompressStream(stream_.get(), &output, &input);
      if (ZSTD_isError(rc))
        return make_error(EIO, std::string("zstd: corrupt compressed NAR: ") + ZSTD_getErrorName(rc));
      if (output.pos && !out(std::as_bytes(std::span(buffer_.data(), output.pos)))) {
        return make_error(EIO, "cannot write the NAR spool");
      }
      last_ = rc;
      full = output.pos == output.size;
    }
    return {};
  }
  Status finish(const Sink&) override {
    // 0: the last frame ended exactly; anything else means a truncated file.
    if (last_ != 0) return make_error(EIO, "zstd: truncated compressed NAR");
    return {};
  }

 private:
  ZstdDecompressor() : buffer_(kOutBuffer) {}
  std::unique_ptr<ZSTD_DStream, ZstdFree> stream_;
  std::vector<char> buffer_;
  size_t last_ = 0;
};

Result<std::unique_ptr<Decompressor>> make_decompressor(std::string_view compression) {
  if (compression == "none" || compression.empty()) return std::unique_ptr<Decompressor>(new Identity());
  if (compression == "xz") return XzDecompressor::make();
  if (compression == "zstd") return ZstdDecompressor::make();
  return make_error(ENOTSUP, "NAR compression '" + std::string(compression) +
                                 "' is not supported (use none, xz or zstd when publishing the cache)");
}

// A NAR that really holds a file past the cap is refused like any NAR that cannot be served.
Status within_file_size_cap(const Tree& tree) {
  for (uint32_t i = 0; i < tree.nodes.size(); ++i) {
    if (tree.nodes[i].type == NodeType::Regular && tree.nodes[i].size > kMaxFileSize) {
      return make_error(
          EBADMSG, "the NAR's file " + tree.path_of(i) + " is larger than " + std::to_string(kMaxFileSize) + " bytes");
    }
  }
  return {};
}

}  // namespace

struct NarSpool::Sha256 {
  EvpMdCtx ctx = make_evp_md_ctx();
};

NarSpool::~NarSpool() {
  if (!kept_ && !path_.empty()) ::unlink(path_.c_str());
}

Result<std::unique_ptr<NarSpool>> NarSpool::create(const std::string& directory, std::string_view compression,
                                                   uint64_t nar_size) {
  auto decompressor = make_decompressor(compression);
  if (!decompressor) return decompressor.error();
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  std::unique_ptr<NarSpool> spool(new NarSpool());
  spool->decompressor_ = std::move(*decompressor);
  spool->limit_ = nar_size;
  // A named temporary (".tmp-*": removed by the store's scan after a crash) that keep() renames.
  std::string name = directory + "/.tmp-XXXXXX";
  std::vector<char> path(name.begin(), name.end());
  path.push_back('\0');
  spool->fd_.reset(::mkostemp(path.data(), O_CLOEXEC));
  if (!spool->fd_) {
    return make_error(errno, "cannot create a NAR spool in " + directory + ": " + std::strerror(errno));
  }
  spool->path_ = path.data();
  spool->sha256_ = std::make_unique<Sha256>();
  if (!spool->sha256_->ctx || EVP_DigestInit_ex(spool->sha256_->ctx.get(), EVP_sha256(), nullptr) != 1) {
    return make_error(ENOMEM, "cannot start sha256");
  }
  return spool;
}

Status NarSpool::keep(const std::string& path) {
  if (::rename(path_.c_str(), path.c_str()) != 0) {
    return make_error(errno, "cannot keep the NAR spool as " + path + ": " + std::strerror(errno));
  }
  path_ = path;
  kept_ = true;
  return {};
}

Result<std::unique_ptr<NarSpool>> NarSpool::open_kept(const std::string& path, uint64_t nar_size,
                                                      std::span<const uint8_t> nar_sha256) {
  std::unique_ptr<NarSpool> spool(new NarSpool());
  spool->fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!spool->fd_) return make_error(errno, path + ": " + std::strerror(errno));
  spool->path_ = path;
  spool->kept_ = true;
  struct stat st {};
  if (::fstat(spool->fd_.get(), &st) != 0) return make_error(errno, path + ": " + std::strerror(errno));
  spool->size_ = static_cast<uint64_t>(st.st_size);
  spool->sha256_ = std::make_unique<Sha256>();
  if (!spool->sha256_->ctx || EVP_DigestInit_ex(spool->sha256_->ctx.get(), EVP_sha256(), nullptr) != 1) {
    return make_error(ENOMEM, "cannot start sha256");
  }
  Status verified = spool->size_ == nar_size ? spool->check_digest(nar_sha256)
                                             : make_error(EBADMSG, "kept NAR " + path + " has the wrong size");
  if (!verified) {
    if (verified.error().code == EBADMSG) ::unlink(path.c_str());
    return verified.error();
  }
  ::futimens(spool->fd_.get(), nullptr);  // recently used: the store's eviction order survives restarts
  return spool;
}

bool NarSpool::write_out(std::span<const std::byte> data) {
  if (size_ + data.size() > limit_) {
    error_ = "the NAR is larger than its NarSize";
    return false;
  }
  EVP_DigestUpdate(sha256_->ctx.get(), data.data(), data.size());
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd_.get(), data.data() + done, data.size() - done, static_cast<off_t>(size_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error_ = std::string("cannot write the NAR spool: ") + std::strerror(errno);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  size_ += data.size();
  return true;
}

bool NarSpool::append(std::span<const char> compressed) {
  auto st = decompressor_->feed(compressed, [this](std::span<const std::byte> d) { return write_out(d); });
  if (!st && error_.empty()) error_ = st.error().message;
  return st.ok();
}

Status NarSpool::finish(uint64_t nar_size, std::span<const uint8_t> nar_sha256) {
  if (!error_.empty()) return make_error(EIO, error_);
  auto st = decompressor_->finish([this](std::span<const std::byte> d) { return write_out(d); });
  if (!st) return make_error(EIO, error_.empty() ? st.error().message : error_);
  if (size_ != nar_size) {
    return make_error(EBADMSG, "NAR size " + std::to_string(size_) + " is not NarSize " + std::to_string(nar_size));
  }
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  if (EVP_DigestFinal_ex(sha256_->ctx.get(), digest, &length) != 1 || length != 32) {
    return make_error(EIO, "sha256 failed");
  }
  if (nar_sha256.size() != 32 || std::memcmp(digest, nar_sha256.data(), 32) != 0) {
    return make_error(EBADMSG, "NAR hash mismatch: sha256 " + to_hex(std::span<const uint8_t>(digest, 32)) +
                                   ", NarHash says " + to_hex(nar_sha256));
  }
  // The archive is verified; its own listing gives every file's offset.
  uint64_t position = 0;
  int fd = fd_.get();
  NarSource source = [fd, &position](std::span<std::byte> buf) -> Result<size_t> {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(position));
    if (n < 0) return make_error(errno, std::string("reading the NAR spool: ") + std::strerror(errno));
    position += static_cast<uint64_t>(n);
    return static_cast<size_t>(n);
  };
  auto tree = tree_from_nar(source);
  if (!tree) {
    return make_error(tree.error().code == EINVAL || tree.error().code == EPROTO ? EBADMSG : EIO,
                      "the NAR is not a valid archive: " + tree.error().message);
  }
  if (auto sizes = within_file_size_cap(*tree); !sizes) return sizes;
  tree_ = std::move(*tree);
  return {};
}

// One pass over a kept file: its archive parsed while its sha256 is taken.
Status NarSpool::check_digest(std::span<const uint8_t> nar_sha256) {
  uint64_t position = 0;
  int fd = fd_.get();
  EVP_MD_CTX* ctx = sha256_->ctx.get();
  bool read_failed = false;
  NarSource source = [&](std::span<std::byte> buf) -> Result<size_t> {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(position));
    if (n < 0) {
      read_failed = true;
      return make_error(errno, std::string("reading the kept NAR: ") + std::strerror(errno));
    }
    EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(n));
    position += static_cast<uint64_t>(n);
    return static_cast<size_t>(n);
  };
  auto tree = tree_from_nar(source);
  if (!tree) return make_error(read_failed ? EIO : EBADMSG, path_ + ": " + tree.error().message);
  std::vector<std::byte> rest(64 << 10);
  for (;;) {
    auto n = source(rest);
    if (!n) return make_error(EIO, n.error().message);
    if (*n == 0) break;
  }
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  if (EVP_DigestFinal_ex(ctx, digest, &length) != 1 || length != 32) return make_error(EIO, "sha256 failed");
  if (nar_sha256.size() != 32 || std::memcmp(digest, nar_sha256.data(), 32) != 0) {
    return make_error(EBADMSG, path_ + ": kept NAR no longer matches its NarHash");
  }
  tree_ = std::move(*tree);
  return {};
}

Result<size_t> NarSpool::read(const std::string& relative_path, uint64_t offset, std::span<std::byte> buf) const {
  auto node = tree_.resolve(relative_path);
  if (!node || tree_.nodes[*node].type != NodeType::Regular) {
    return make_error(EIO, "'" + relative_path + "' is not a file of the NAR");
  }
  const TreeNode& file = tree_.nodes[*node];
  if (offset >= file.size) return size_t{0};
  size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), file.size - offset));
  size_t done = 0;
  while (done < want) {
    ssize_t n = ::pread(fd_.get(), buf.data() + done, want - done, static_cast<off_t>(file.nar_offset + offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return make_error(EIO, "reading the NAR spool failed");
    done += static_cast<size_t>(n);
  }
  return done;
}

}  // namespace lazystore
