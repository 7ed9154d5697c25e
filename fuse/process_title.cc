#include "process_title.h"

#include <errno.h>  // program_invocation_name: argv[0], the start of the argument area

#include <cstring>
#include <fstream>
#include <iterator>

namespace lazystore {

bool set_process_title(const std::vector<std::string>& words) {
  // The kernel shows the argument area, argv[0]'s string to the end of the last argument.
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string area((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  char* start = program_invocation_name;
  if (area.size() < 2 || start == nullptr || std::memcmp(start, area.data(), area.size()) != 0) return false;
  std::string title(area.c_str());  // argv[0] as it is now
  for (const auto& word : words) title += '\0' + word;
  if (title.size() > area.size() - 1) title.resize(area.size() - 1);
  std::memset(start, 0, area.size());
  std::memcpy(start, title.data(), title.size());
  return true;
}

}  // namespace lazystore
