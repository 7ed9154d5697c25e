#include "byte_stream.h"

namespace lazystore {

void TailBuffer::append(std::string_view data) {
  text_.append(data);
  if (text_.size() > limit_) text_.erase(0, text_.size() - limit_);
}

std::string TailBuffer::last_line() const {
  size_t end = text_.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return "";
  size_t begin = text_.find_last_of('\n', end);
  begin = begin == std::string::npos ? 0 : begin + 1;
  return text_.substr(begin, end - begin + 1);
}

}  // namespace lazystore
