// The serve protocol to the server's `nix-store --serve --write` (what ssh:// stores speak): one
// AddToStoreNar per path, pipelined; ImportPaths for servers older than protocol 2.5.
#pragma once

#include <memory>

#include "destination.h"

namespace lazystore {

class ServeDestination final : public Destination {
 public:
  ServeDestination(SshChannel channel, bool import_paths);

  const char* protocol() const override { return "serve"; }
  Status start() override;
  Status send_query(const std::vector<std::string>& paths, bool lock) override;
  Result<std::vector<std::string>> read_valid() override;
  std::string version() const override;
  Status send(ServeConnection& local, const std::vector<PathInfo>& missing, Progress& progress,
              uint64_t& confirmed_paths, uint64_t& bytes_sent) override;
  void close() override;

 private:
  bool use_import_paths() const;

  std::unique_ptr<SshChannel> channel_;
  std::unique_ptr<ServeConnection> connection_;
  bool import_paths_;
  bool hello_pending_ = true;
};

}  // namespace lazystore
