// Hostile bytes (names from an upstream or the kernel) in log lines and error messages.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace lazystore {

// At most `max_chars` bytes of `text`, control and non-ASCII bytes as \xNN, "..." when cut.
std::string escape_for_message(std::string_view text, size_t max_chars = 80);

// `text` with every byte that `replacements` names replaced by its string: the escaping rule
// of one format (roff, a Markdown cell, a Prometheus label), given as its table.
std::string replace_bytes(std::string_view text, std::initializer_list<std::pair<char, std::string_view>> replacements);

}  // namespace lazystore
