#include "daemon_destination.h"

#include "worker_protocol.h"

namespace lazystore {

namespace {

// The framed stream of AddMultipleToStore (u64 length, that many bytes, unpadded): small items
// are gathered into frames of up to kFrameSize, large NAR pieces go out as frames of their own.
class FrameWriter {
 public:
  FrameWriter(DaemonConnection& connection, size_t frame_size) : connection_(connection), frame_size_(frame_size) {
    pending_.reserve(8 + frame_size);
    pending_.resize(8);
  }

  Status append(std::string_view data) { return append(std::as_bytes(std::span(data.data(), data.size()))); }

  Status append(std::span<const std::byte> data) {
    if (data.size() >= frame_size_ / 4) {
      if (auto s = flush(); !s) return s;
      if (auto s = connection_.write(worker::encode_frame_header(data.size())); !s) return s;
      return connection_.write(data);
    }
    if (pending_.size() - 8 + data.size() > frame_size_) {
      if (auto s = flush(); !s) return s;
    }
    pending_.append(reinterpret_cast<const char*>(data.data()), data.size());
    return {};
  }

  Status flush() {
    size_t length = pending_.size() - 8;
    if (length == 0) return {};
    std::string header = worker::encode_frame_header(length);
    pending_.replace(0, 8, header);
    auto status = connection_.write(pending_);
    pending_.resize(8);
    return status;
  }

  Status finish() {
    if (auto s = flush(); !s) return s;
    return connection_.write(worker::encode_frames_end());
  }

 private:
  DaemonConnection& connection_;
  size_t frame_size_;
  std::string pending_;  // 8 bytes for the header, then the frame
};

}  // namespace

DaemonDestination::DaemonDestination(SshChannel channel)
    : channel_(std::make_unique<SshChannel>(std::move(channel))),
      connection_(std::make_unique<DaemonConnection>(*channel_, "server")) {}

Status DaemonDestination::start() { return write_before_hello(worker::encode_client_hello()); }

Status DaemonDestination::write_before_hello(std::string_view bytes) {
  if (!early_write_) return {};  // the channel already failed: read_valid reports it
  early_write_ = connection_->write(bytes);
  return {};
}

Status DaemonDestination::send_query(const std::vector<std::string>& paths, bool lock) {
  // Temporary roots first, then the query: no path the server has can go between the two.
  std::string requests;
  if (lock) {
    for (const auto& path : paths) requests += worker::encode_add_temp_root(path);
    temp_roots_pending_ += paths.size();
  }
  requests += worker::encode_query_valid_paths(paths, false);
  if (hello_pending_) return write_before_hello(requests);
  return connection_->write(requests);
}

Result<std::vector<std::string>> DaemonDestination::read_valid() {
  if (hello_pending_) {
    if (auto s = connection_->read_hello(); !s) return s.error();
    hello_pending_ = false;
    if (!early_write_) return early_write_.error();
  }
  for (; temp_roots_pending_ > 0; --temp_roots_pending_) {
    if (auto s = connection_->read_one(); !s) return s.error();
  }
  return connection_->read_path_set();
}

std::string DaemonDestination::version() const {
  uint64_t v = connection_->server_version();
  return std::to_string(worker::version_major(v)) + "." + std::to_string(worker::version_minor(v));
}

Status DaemonDestination::send(ServeConnection& local, const std::vector<PathInfo>& missing, Progress& progress,
                               uint64_t& confirmed_paths, uint64_t& bytes_sent) {
  if (missing.empty()) return {};
  // Every info is encoded before the stream starts: a bad one must not cut a stream short.
  std::vector<std::string> infos;
  for (const auto& info : missing) {
    auto encoded = worker::encode_path_info(info);
    if (!encoded) return encoded.error();
    infos.push_back(std::move(*encoded));
  }
  // dontCheckSigs: a trusted client's paths go in unsigned, as with nix-store --serve --write;
  // an untrusted client's are checked by the daemon whatever we say (docs/server.md).
  if (auto s = connection_->write(worker::encode_add_multiple_to_store(false, true)); !s) return s;
  FrameWriter frames(*connection_, kFrameSize);
  if (auto s = frames.append(wire::WireWriter().u64(missing.size()).bytes()); !s) return s;
  auto forward = [&](std::span<const std::byte> data) -> Status {
    if (auto s = frames.append(data); !s) return s;
    bytes_sent += data.size();
    progress.transferred(data.size());
    return {};
  };
  // The next dump is queued before this one is read, so the local side never idles. The
  // daemon answers only once the stream has ended (also when it failed early: it reads the
  // rest first), and it logs little meanwhile, well within a channel window.
  if (auto s = local.write(serve::encode_dump_store_path(missing[0].path)); !s) return s;
  for (size_t i = 0; i < missing.size(); ++i) {
    progress.path_started(missing[i].path, missing[i].nar_size);
    if (auto s = frames.append(infos[i]); !s) return s;
    if (i + 1 < missing.size()) {
      if (auto s = local.write(serve::encode_dump_store_path(missing[i + 1].path)); !s) return s;
    }
    if (auto s = local.read_raw(missing[i].nar_size, forward); !s) return s;
  }
  if (auto s = frames.finish(); !s) return s;
  if (auto s = connection_->read_until_last(); !s) return s;
  confirmed_paths = missing.size();
  for (size_t i = 0; i < missing.size(); ++i) progress.path_done();
  return {};
}

void DaemonDestination::close() { (void)channel_->close_write(); }

}  // namespace lazystore
