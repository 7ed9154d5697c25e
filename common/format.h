// Numbers for people: byte counts in binary units, bytes in hex.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace lazystore {

// 0 → "0 B", 1023 → "1023 B", 1536 → "1.5 KiB", 3 << 30 → "3.0 GiB".
std::string format_bytes(uint64_t bytes);

// Lower-case hex, two digits a byte: {0x0a, 0xff} → "0aff".
std::string to_hex(std::span<const uint8_t> bytes);

}  // namespace lazystore
