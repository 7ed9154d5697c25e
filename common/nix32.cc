#include "nix32.h"

#include <array>

namespace lazystore::nix32 {
namespace {

// Digit value of each byte, or -1: a table so decoding is one lookup per char.
constexpr std::array<int8_t, 256> kDigits = [] {
  std::array<int8_t, 256> digits{};
  digits.fill(-1);
  for (size_t i = 0; i < kAlphabet.size(); ++i) {
    digits[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
  }
  return digits;
}();

}  // namespace

bool is_char(char c) { return kDigits[static_cast<uint8_t>(c)] >= 0; }

size_t encoded_length(size_t bytes) { return bytes == 0 ? 0 : (bytes * 8 - 1) / 5 + 1; }

std::string encode(std::span<const uint8_t> bytes) {
  size_t len = encoded_length(bytes.size());
  std::string out;
  out.reserve(len);
  // Digit n holds bits [5n, 5n+5) of the little-endian number; the highest digit comes first.
  for (size_t n = len; n-- > 0;) {
    size_t b = n * 5;
    size_t i = b / 8;
    unsigned j = b % 8;
    unsigned c = static_cast<unsigned>(bytes[i]) >> j;
    if (i + 1 < bytes.size()) c |= static_cast<unsigned>(bytes[i + 1]) << (8 - j);
    out.push_back(kAlphabet[c & 0x1f]);
  }
  return out;
}

Result<std::vector<uint8_t>> decode(std::string_view text, size_t bytes) {
  if (text.size() != encoded_length(bytes)) {
    return make_error(EINVAL, "nix32 text of " + std::to_string(text.size()) + " chars, expected " +
                                  std::to_string(encoded_length(bytes)));
  }
  std::vector<uint8_t> out(bytes, 0);
  for (size_t n = 0; n < text.size(); ++n) {
    char c = text[text.size() - n - 1];
    int digit = kDigits[static_cast<uint8_t>(c)];
    if (digit < 0) {
      return make_error(EINVAL, "invalid nix32 character at position " + std::to_string(text.size() - n - 1));
    }
    size_t b = n * 5;
    size_t i = b / 8;
    unsigned j = b % 8;
    unsigned d = static_cast<unsigned>(digit);
    out[i] = static_cast<uint8_t>(out[i] | (d << j));
    unsigned high = d >> (8 - j);
    if (i + 1 < bytes) {
      out[i + 1] = static_cast<uint8_t>(out[i + 1] | high);
    } else if (high != 0) {
      // Set bits beyond the last byte: not text encode() makes, so not canonical.
      return make_error(EINVAL, "nix32 text has bits beyond " + std::to_string(bytes) + " bytes");
    }
  }
  return out;
}

}  // namespace lazystore::nix32
