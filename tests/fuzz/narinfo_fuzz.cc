// `<hash>.narinfo` files from a binary cache, with their signatures checked against a real key
// (the unit tests' key pair, made by nix-store --generate-binary-cache-key).
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "narinfo.h"
#include "store_path.h"

using namespace lazystore;

namespace {

const std::vector<PublicKey>& trusted_keys() {
  static const std::vector<PublicKey> keys = [] {
    auto key = parse_public_key("lazystore-test-1:sEypGGDmbhQQSHoKjeAwsQBD1lp8pQY89srRQAuzWwk=");
    FUZZ_CHECK(key.ok());
    return std::vector<PublicKey>{*key};
  }();
  return keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  auto info = parse_narinfo(text);
  if (!info) {
    FUZZ_CHECK(info.error().code == EINVAL);
  } else {
    // Everything the upstream later builds paths and URLs from is validated.
    FUZZ_CHECK(StorePath::is_valid(info->store_path));
    for (const std::string& ref : info->references) FUZZ_CHECK(StorePath::is_valid(ref));
    FUZZ_CHECK(info->deriver.empty() || StorePath::is_valid(info->deriver));
    FUZZ_CHECK(info->nar_sha256.size() == 32);
    FUZZ_CHECK(info->nar_size > 0);
    FUZZ_CHECK(!info->url.empty() && !info->url.starts_with('/'));
    FUZZ_CHECK(info->url.find("..") == std::string::npos);
    FUZZ_CHECK(info->fingerprint().starts_with("1;/nix/store/" + info->store_path + ";sha256:"));
    (void)has_valid_signature(*info, trusted_keys());
  }
  // The same bytes as a trusted key and as base64.
  auto key = parse_public_key(text);
  if (key) FUZZ_CHECK(key->key.size() == 32 && !key->name.empty());
  auto decoded = base64_decode(text);
  if (decoded) FUZZ_CHECK(decoded->size() <= size / 4 * 3);
  return 0;
}
