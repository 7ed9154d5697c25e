// A small seeded-mutation driver with the shape of libFuzzer's command line, so every target
// runs under the normal gcc build (and as a meson test) without libFuzzer:
//
//   TARGET [--runs N] [--seed N] [--max-len N] CORPUS_DIR...    seeds, then N mutated inputs
//   TARGET FILE...                                              each file once (reproduce)
//
// The PRNG (splitmix64) is seeded by --seed: the same seed and corpus give the same inputs. Each
// input is a seed with 1-8 mutations: bit flips, byte sets, interesting integers (little-endian,
// as NAR and serve frames hold them), inserts, deletes, duplicated ranges, splices with another
// seed, truncation. No coverage feedback (that is what tests/fuzz/run_libfuzzer.sh is for). On a
// crash the input is written to ./fuzz-crash-<target>-<seed>-<run> before the process dies.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_check.h"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }

 private:
  uint64_t state_;
};

constexpr std::array<uint64_t, 14> kInteresting = {0,
                                                   1,
                                                   2,
                                                   7,
                                                   8,
                                                   0x7f,
                                                   0xff,
                                                   0x100,
                                                   0xffff,
                                                   0x7fffffff,
                                                   0xffffffff,
                                                   0x8000000000000000ull,
                                                   0x7fffffffffffffffull,
                                                   0xffffffffffffffffull};

void mutate_once(Bytes& input, const std::vector<Bytes>& corpus, SplitMix64& rng, size_t max_len) {
  switch (rng.below(8)) {
    case 0:  // flip a bit
      if (!input.empty()) input[rng.below(input.size())] ^= static_cast<uint8_t>(1u << rng.below(8));
      break;
    case 1:  // set a byte
      if (!input.empty()) input[rng.below(input.size())] = static_cast<uint8_t>(rng.next());
      break;
    case 2: {  // overwrite with an interesting little-endian integer of 1, 2, 4 or 8 bytes
      if (input.empty()) break;
      uint64_t value = kInteresting[rng.below(kInteresting.size())];
      size_t width = size_t{1} << rng.below(4);
      size_t at = rng.below(input.size());
      for (size_t i = 0; i < width && at + i < input.size(); ++i) {
        input[at + i] = static_cast<uint8_t>(value >> (8 * i));
      }
      break;
    }
    case 3: {  // insert random bytes
      size_t at = rng.below(input.size() + 1);
      size_t n = 1 + rng.below(16);
      Bytes bytes(n);
      for (auto& b : bytes) b = static_cast<uint8_t>(rng.next());
      input.insert(input.begin() + static_cast<ptrdiff_t>(at), bytes.begin(), bytes.end());
      break;
    }
    case 4: {  // delete a range
      if (input.empty()) break;
      size_t at = rng.below(input.size());
      size_t n = 1 + rng.below(std::min<size_t>(input.size() - at, 64));
      input.erase(input.begin() + static_cast<ptrdiff_t>(at), input.begin() + static_cast<ptrdiff_t>(at + n));
      break;
    }
    case 5: {  // duplicate a range of itself somewhere else
      if (input.empty()) break;
      size_t from = rng.below(input.size());
      size_t n = 1 + rng.below(std::min<size_t>(input.size() - from, 256));
      Bytes piece(input.begin() + static_cast<ptrdiff_t>(from), input.begin() + static_cast<ptrdiff_t>(from + n));
      size_t at = rng.below(input.size() + 1);
      input.insert(input.begin() + static_cast<ptrdiff_t>(at), piece.begin(), piece.end());
      break;
    }
    case 6: {  // splice: a prefix of this input, a suffix of another seed
      const Bytes& other = corpus[rng.below(corpus.size())];
      size_t keep = rng.below(input.size() + 1);
      size_t from = rng.below(other.size() + 1);
      input.resize(keep);
      input.insert(input.end(), other.begin() + static_cast<ptrdiff_t>(from), other.end());
      break;
    }
    default:  // truncate
      input.resize(rng.below(input.size() + 1));
      break;
  }
  if (input.size() > max_len) input.resize(max_len);
}

Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The input being run, for the crash handler (async-signal-safe: only write/open/_exit).
const uint8_t* g_current = nullptr;
size_t g_current_size = 0;
char g_crash_path[256] = "";

void on_crash(int signal_number) {
  if (g_current != nullptr && g_crash_path[0] != '\0') {
    int fd = open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      size_t done = 0;
      while (done < g_current_size) {
        ssize_t n = write(fd, g_current + done, g_current_size - done);
        if (n <= 0) break;
        done += static_cast<size_t>(n);
      }
      close(fd);
      static const char kMessage[] = "mutation driver: crashing input written to ";
      (void)!write(2, kMessage, sizeof kMessage - 1);
      (void)!write(2, g_crash_path, strlen(g_crash_path));
      (void)!write(2, "\n", 1);
    }
  }
  signal(signal_number, SIG_DFL);
  raise(signal_number);
}

void run_one(const Bytes& input) {
  // A copy of exactly the input's size, so an overread past it is caught by sanitizers.
  std::unique_ptr<uint8_t[]> copy(new uint8_t[input.size() + (input.empty() ? 1 : 0)]);
  if (!input.empty()) std::memcpy(copy.get(), input.data(), input.size());
  g_current = copy.get();
  g_current_size = input.size();
  LLVMFuzzerTestOneInput(copy.get(), input.size());
  g_current = nullptr;
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--runs N] [--seed N] [--max-len N] CORPUS_DIR|FILE...\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t runs = 0, seed = 1;
  size_t max_len = 1 << 20;
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto number = [&](uint64_t& out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      out = std::strtoull(argv[++i], &end, 10);
      return end != nullptr && *end == '\0';
    };
    uint64_t value = 0;
    if (arg == "--runs") {
      if (!number(runs)) return usage(argv[0]);
    } else if (arg == "--seed") {
      if (!number(seed)) return usage(argv[0]);
    } else if (arg == "--max-len") {
      if (!number(value)) return usage(argv[0]);
      max_len = static_cast<size_t>(value);
    } else if (arg.starts_with("--")) {
      return usage(argv[0]);
    } else {
      inputs.emplace_back(arg);
    }
  }
  if (inputs.empty()) return usage(argv[0]);

  std::vector<Bytes> corpus;
  for (const fs::path& input : inputs) {
    if (fs::is_directory(input)) {
      std::vector<fs::path> files;
      for (const auto& entry : fs::directory_iterator(input)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());  // the same order everywhere: determinism
      for (const fs::path& file : files) corpus.push_back(read_file(file));
    } else {
      corpus.push_back(read_file(input));
    }
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "mutation driver: empty corpus\n");
    return 2;
  }

  std::string target = fs::path(argv[0]).filename().string();
  for (int s : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) signal(s, on_crash);

  auto start = std::chrono::steady_clock::now();
  std::snprintf(g_crash_path, sizeof g_crash_path, "fuzz-crash-%s-seed", target.c_str());
  for (const Bytes& input : corpus) run_one(input);

  SplitMix64 rng(seed);
  Bytes input;
  for (uint64_t run = 0; run < runs; ++run) {
    std::snprintf(g_crash_path, sizeof g_crash_path, "fuzz-crash-%s-%llu-%llu", target.c_str(),
                  static_cast<unsigned long long>(seed), static_cast<unsigned long long>(run));
    input = corpus[rng.below(corpus.size())];
    size_t mutations = 1 + rng.below(8);
    for (size_t m = 0; m < mutations; ++m) mutate_once(input, corpus, rng, max_len);
    run_one(input);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %zu seeds + %llu mutated inputs (seed %llu) in %.2f s, %.0f exec/s, no crash\n", target.c_str(),
              corpus.size(), static_cast<unsigned long long>(runs), static_cast<unsigned long long>(seed), seconds,
              static_cast<double>(corpus.size() + runs) / std::max(seconds, 1e-9));
  return 0;
}
