// Hostile bytes (names from an upstream or the kernel) in log lines and error messages.
#pragma once

#include <string>
#include <string_view>

namespace lazystore {

// At most `max_chars` bytes of `text`, control and non-ASCII bytes as \xNN, "..." when cut.
std::string escape_for_message(std::string_view text, size_t max_chars = 80);

}  // namespace lazystore
