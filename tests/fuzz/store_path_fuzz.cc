// Store path names as they come from the kernel (FUSE lookups), narinfos and the serve protocol.
#include "fuzz_check.h"
#include "store_path.h"

using namespace lazystore;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  auto parsed = StorePath::parse(text);
  FUZZ_CHECK(parsed.ok() == StorePath::is_valid(text));
  if (parsed) {
    // A valid name is exactly what was given, with no way out of the store directory.
    FUZZ_CHECK(parsed->base_name() == text);
    FUZZ_CHECK(text.find('/') == std::string_view::npos);
    FUZZ_CHECK(text.find('\0') == std::string_view::npos);
    FUZZ_CHECK(parsed->name() != "." && parsed->name() != "..");
    FUZZ_CHECK(parsed->hash_part().size() == StorePath::kHashLength);
    auto again = StorePath::parse_absolute(parsed->absolute() + "/bin/x");
    FUZZ_CHECK(again.ok() && *again == *parsed);
  } else {
    FUZZ_CHECK(parsed.error().code == EINVAL);
    FUZZ_CHECK(parsed.error().message.find('\n') == std::string::npos);  // one log line
  }
  // The same bytes as an absolute path.
  auto absolute = StorePath::parse_absolute(text);
  if (absolute) FUZZ_CHECK(StorePath::is_valid(absolute->base_name()));
  return 0;
}
