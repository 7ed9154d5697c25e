#include "printable.h"

#include <algorithm>

namespace lazystore {

std::string escape_for_message(std::string_view text, size_t max_chars) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : text.substr(0, max_chars)) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  if (text.size() > max_chars) out += "...";
  return out;
}

std::string replace_bytes(std::string_view text,
                          std::initializer_list<std::pair<char, std::string_view>> replacements) {
  std::string out;
  for (char c : text) {
    auto it = std::find_if(replacements.begin(), replacements.end(), [c](const auto& r) { return r.first == c; });
    if (it == replacements.end())
      out += c;
    else
      out += it->second;
  }
  return out;
}

}  // namespace lazystore
