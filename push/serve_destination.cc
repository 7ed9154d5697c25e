#include "serve_destination.h"

namespace lazystore {

namespace {

// How many AddToStoreNar answers may be outstanding: enough to keep the link busy, few enough
// that the server's 8-byte answers never fill a channel window while we are writing.
constexpr size_t kMaxOutstanding = 64;

}  // namespace

ServeDestination::ServeDestination(SshChannel channel, bool import_paths)
    : channel_(std::make_unique<SshChannel>(std::move(channel))),
      connection_(std::make_unique<ServeConnection>(*channel_, "server")),
      import_paths_(import_paths) {}

Status ServeDestination::start() { return connection_->send_hello(); }

Status ServeDestination::send_query(const std::vector<std::string>& paths, bool lock) {
  return connection_->write(serve::encode_query_valid_paths(lock, false, paths));
}

Result<std::vector<std::string>> ServeDestination::read_valid() {
  if (hello_pending_) {
    if (auto s = connection_->read_hello(); !s) return s.error();
    hello_pending_ = false;
  }
  return connection_->read_path_set();
}

std::string ServeDestination::version() const {
  uint64_t v = connection_->server_version();
  return std::to_string(serve::version_major(v)) + "." + std::to_string(serve::version_minor(v));
}

bool ServeDestination::use_import_paths() const {
  return import_paths_ || serve::version_minor(connection_->version()) < 5;
}

Status ServeDestination::send(ServeConnection& local, const std::vector<PathInfo>& missing, Progress& progress,
                              uint64_t& confirmed_paths, uint64_t& bytes_sent) {
  if (missing.empty()) return {};
  ServeConnection& remote = *connection_;
  auto forward = [&](std::span<const std::byte> data) -> Status {
    if (auto s = remote.write(data); !s) return s;
    bytes_sent += data.size();
    progress.transferred(data.size());
    return {};
  };
  bool import_paths = use_import_paths();
  for (const auto& info : missing) import_paths |= info.nar_hash.empty();  // an old local store gave no hash
  if (import_paths) {
    // One ImportPaths for all: per path "1", the NAR, a trailer; then "0" and one answer.
    if (auto s = remote.write(serve::encode_import_paths_begin()); !s) return s;
    for (const auto& info : missing) {
      progress.path_started(info.path, info.nar_size);
      if (auto s = local.write(serve::encode_dump_store_path(info.path)); !s) return s;
      if (auto s = remote.write(serve::encode_import_path_begin()); !s) return s;
      if (auto s = local.read_raw(info.nar_size, forward); !s) return s;
      if (auto s = remote.write(serve::encode_import_path_trailer(info)); !s) return s;
    }
    if (auto s = remote.write(serve::encode_import_paths_end()); !s) return s;
    if (auto s = remote.read_success(); !s) return s;
    confirmed_paths = missing.size();
    for (size_t i = 0; i < missing.size(); ++i) progress.path_done();
    return {};
  }
  // One AddToStoreNar per path, pipelined; the next dump is queued before this one is read, so
  // the local side never idles.
  if (auto s = local.write(serve::encode_dump_store_path(missing[0].path)); !s) return s;
  size_t outstanding = 0;
  for (size_t i = 0; i < missing.size(); ++i) {
    const auto& info = missing[i];
    progress.path_started(info.path, info.nar_size);
    if (auto s = remote.write(serve::encode_add_to_store_nar(info)); !s) return s;
    if (i + 1 < missing.size()) {
      if (auto s = local.write(serve::encode_dump_store_path(missing[i + 1].path)); !s) return s;
    }
    if (auto s = local.read_raw(info.nar_size, forward); !s) return s;
    if (++outstanding > kMaxOutstanding) {
      if (auto s = remote.read_success(); !s) return s;
      --outstanding;
      ++confirmed_paths;
      progress.path_done();
    }
  }
  while (outstanding > 0) {
    if (auto s = remote.read_success(); !s) return s;
    --outstanding;
    ++confirmed_paths;
    progress.path_done();
  }
  return {};
}

void ServeDestination::close() { (void)channel_->close_write(); }

}  // namespace lazystore
