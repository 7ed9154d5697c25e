// The daemon protocol to the server's `nix-daemon --stdio` (what ssh-ng:// stores speak): temporary
// roots with AddTempRoot, one QueryValidPaths, then every missing NAR in one framed
// AddMultipleToStore.
#pragma once

#include <memory>

#include "daemon_connection.h"
#include "destination.h"

namespace lazystore {

class DaemonDestination final : public Destination {
 public:
  explicit DaemonDestination(SshChannel channel);

  const char* protocol() const override { return "daemon"; }
  Status start() override;
  Status send_query(const std::vector<std::string>& paths, bool lock) override;
  // kNoDaemon if the server answered nothing at all (see daemon_connection.h).
  Result<std::vector<std::string>> read_valid() override;
  std::string version() const override;
  std::string nix_version() const override { return connection_->nix_version(); }
  Status send(ServeConnection& local, const std::vector<PathInfo>& missing, Progress& progress,
              uint64_t& confirmed_paths, uint64_t& bytes_sent) override;
  void close() override;

  // Frames of the AddMultipleToStore stream: at most this much, or one NAR piece as it came.
  static constexpr size_t kFrameSize = 256 * 1024;

 private:
  // Writes before the daemon's hello: a command the server refused may close the channel before
  // or after they go out. Their failure waits for read_valid, whose read of the hello tells a
  // refusal (kNoDaemon) from a lost connection, whichever of the two raced ahead.
  Status write_before_hello(std::string_view bytes);

  std::unique_ptr<SshChannel> channel_;
  std::unique_ptr<DaemonConnection> connection_;
  bool hello_pending_ = true;
  Status early_write_;  // the first failed write_before_hello
  size_t temp_roots_pending_ = 0;
};

}  // namespace lazystore
