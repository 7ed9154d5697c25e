// Nix's base-32 ("nix32"): alphabet 0123456789abcdfghijklmnpqrsvwxyz, least significant digit last.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace lazystore::nix32 {

inline constexpr std::string_view kAlphabet = "0123456789abcdfghijklmnpqrsvwxyz";

bool is_char(char c);
// Length of the nix32 text of n bytes: (n * 8 - 1) / 5 + 1.
size_t encoded_length(size_t bytes);
// Encodes like Nix's printHash32 (the digit for the highest bits first).
std::string encode(std::span<const uint8_t> bytes);
// Decodes text made by encode(); an error for a bad char or bits beyond `bytes`.
Result<std::vector<uint8_t>> decode(std::string_view text, size_t bytes);

}  // namespace lazystore::nix32
