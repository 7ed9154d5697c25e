// Numbers for people: byte counts in binary units.
#pragma once

#include <cstdint>
#include <string>

namespace lazystore {

// 0 → "0 B", 1023 → "1023 B", 1536 → "1.5 KiB", 3 << 30 → "3.0 GiB".
std::string format_bytes(uint64_t bytes);

}  // namespace lazystore
