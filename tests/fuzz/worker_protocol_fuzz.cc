// Worker-protocol answers as lazystore-push reads them from the server's `nix-daemon --stdio`:
// the input is the daemon's output (corpus: what Nix 2.8 answered, tests/unit/data/), read
// through DaemonConnection like a real session: the hello, then answers whose kinds the first
// byte picks (path set, the 1 of AddTempRoot, the end of AddMultipleToStore).
#include <algorithm>
#include <cstring>
#include <string>

#include "byte_stream.h"
#include "daemon_connection.h"
#include "fuzz_check.h"

using namespace lazystore;

namespace {

// The daemon's output, handed out in pieces of varying size like a socket would.
class MemoryStream final : public ByteStream {
 public:
  MemoryStream(std::span<const uint8_t> data, uint8_t piece) : data_(data), piece_(piece) {}

  Result<size_t> read_some(std::span<std::byte> buffer) override {
    size_t n = std::min({buffer.size(), data_.size(), static_cast<size_t>(piece_) * 64 + 1});
    if (n) std::memcpy(buffer.data(), data_.data(), n);
    data_ = data_.subspan(n);
    return n;
  }
  Status write_all(std::span<const std::byte>) override { return {}; }
  Status close_write() override { return {}; }
  std::string stderr_tail() override { return "remote said something"; }

 private:
  std::span<const uint8_t> data_;
  uint8_t piece_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Byte 0 picks the answers expected, byte 1 the size of the pieces the stream hands out; the
  // daemon's output follows (the corpus files are recordings with these two bytes in front).
  if (size < 2) return 0;
  const uint8_t selector = data[0];
  MemoryStream stream(std::span(data + 2, size - 2), data[1]);
  DaemonConnection connection(stream, "server");
  if (!connection.read_hello()) return 0;
  FUZZ_CHECK(connection.version() <= worker::kClientVersion);
  FUZZ_CHECK(connection.server_version() >= worker::kMinServerVersion);
  for (int request = 0; request < 4; ++request) {
    switch ((selector >> (2 * request)) & 3) {
      case 0: {
        auto paths = connection.read_path_set();
        if (!paths) return 0;
        for (const auto& p : *paths) FUZZ_CHECK(p.size() <= wire::kMaxStringLength);
        break;
      }
      case 1:
        if (!connection.read_one()) return 0;
        break;
      default:
        if (!connection.read_until_last()) return 0;
        break;
    }
  }
  return 0;
}
