// Serve-protocol frames as lazystore-push reads them from the remote `nix-store --serve`: the
// first input byte picks what is expected (hello, path set, path infos, success, a raw NAR), the
// rest is the remote's answer, read through ServeConnection like a real session.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "byte_stream.h"
#include "fuzz_check.h"
#include "serve_connection.h"

using namespace lazystore;

// Every input makes a ServeConnection, whose two 256 KiB buffers are, under AddressSanitizer,
// an mmap and a munmap each (~5 ms in a VM: 180 inputs/s). Two such blocks are kept and handed
// out again instead; they come from malloc, so ASan still guards their bounds.
namespace {
constexpr size_t kRecycledSize = 256 * 1024;
struct Recycled {
  void* block = nullptr;
  bool in_use = false;
};
Recycled g_recycled[2];
}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new[](std::size_t size) {
  if (size == kRecycledSize) {
    for (Recycled& r : g_recycled) {
      if (!r.in_use && r.block == nullptr) r.block = std::malloc(kRecycledSize);
      if (!r.in_use && r.block != nullptr) {
        r.in_use = true;
        return r.block;
      }
    }
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete[](void* p) noexcept {
  for (Recycled& r : g_recycled) {
    if (p != nullptr && r.block == p) {
      r.in_use = false;
      return;
    }
  }
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept { operator delete[](p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

// The remote's output, handed out in pieces of varying size like a socket would.
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
  if (size < 2) return 0;
  const uint8_t selector = data[0];
  MemoryStream stream(std::span(data + 2, size - 2), data[1]);
  ServeConnection connection(stream, "server");
  // Bit 7: a hello comes first (as in every real session).
  if (selector & 0x80) {
    if (!connection.read_hello()) return 0;
    FUZZ_CHECK(serve::version_major(connection.version()) == 2);
    FUZZ_CHECK(connection.version() <= serve::kClientVersion);
  }
  for (int request = 0; request < 4; ++request) {
    switch ((selector >> (2 * (request % 3))) & 3) {
      case 0: {
        auto paths = connection.read_path_set();
        if (!paths) return 0;
        for (const auto& p : *paths) FUZZ_CHECK(p.size() <= serve::kMaxStringLength);
        break;
      }
      case 1: {
        auto infos = connection.read_path_infos();
        if (!infos) return 0;
        for (const auto& info : *infos) FUZZ_CHECK(!info.path.empty());
        break;
      }
      case 2:
        if (!connection.read_success()) return 0;
        break;
      default: {
        uint64_t want = selector, got = 0;
        auto status = connection.read_raw(want, [&](std::span<const std::byte> piece) -> Status {
          got += piece.size();
          return {};
        });
        if (!status) return 0;
        FUZZ_CHECK(got == want);
        break;
      }
    }
  }
  return 0;
}
