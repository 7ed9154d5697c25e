// narinfo parsing, the fingerprint Nix signs, and ed25519 signatures against a key pair made by
// `nix-store --generate-binary-cache-key` (tests/unit/data/http, signed with `nix store sign`).
#include <gtest/gtest.h>

#include "test_support.h"
#include "narinfo.h"

namespace lazystore {
namespace {

std::string data(const std::string& name) { return http_test_data(name); }

std::string public_key() {
  std::string key = data("lazystore-test-1.pub");
  while (!key.empty() && (key.back() == '\n' || key.back() == ' ')) key.pop_back();
  return key;
}

TEST(NarInfo, ParsesWhatNixWrites) {
  auto info = parse_narinfo(data("signed.narinfo"));
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->store_path, "1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d");
  EXPECT_EQ(info->url, "nar/19w0faprn432gw32zzlxhgy62azxf7sfz1gh1j4azr8pp6rcwm2w.nar");
  EXPECT_EQ(info->compression, "none");
  EXPECT_EQ(info->nar_size, 480u);
  EXPECT_EQ(info->file_size, 480u);
  EXPECT_EQ(info->nar_sha256.size(), 32u);
  EXPECT_TRUE(info->references.empty());
  EXPECT_EQ(info->sigs.size(), 1u);
  EXPECT_EQ(info->ca, "fixed:r:sha256:19w0faprn432gw32zzlxhgy62azxf7sfz1gh1j4azr8pp6rcwm2w");
  EXPECT_EQ(info->fingerprint(),
            "1;/nix/store/1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d;"
            "sha256:19w0faprn432gw32zzlxhgy62azxf7sfz1gh1j4azr8pp6rcwm2w;480;");
}

TEST(NarInfo, FingerprintListsReferencesAsFullPaths) {
  auto info = parse_narinfo(
      "StorePath: /nix/store/1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d\n"
      "URL: nar/x.nar.xz\nCompression: xz\n"
      "NarHash: sha256:19w0faprn432gw32zzlxhgy62azxf7sfz1gh1j4azr8pp6rcwm2w\nNarSize: 480\n"
      "References: 0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-libc 1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d\n"
      "Deriver: 0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b-d.drv\n");
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->deriver, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b-d.drv");
  EXPECT_EQ(info->fingerprint(),
            "1;/nix/store/1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d;"
            "sha256:19w0faprn432gw32zzlxhgy62azxf7sfz1gh1j4azr8pp6rcwm2w;480;"
            "/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-libc,/nix/store/1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d");
}

TEST(NarInfo, DefaultsCompressionToBzip2LikeNix) {
  auto info = parse_narinfo(
      "StorePath: /nix/store/1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d\nURL: nar/x.nar.bz2\n"
      "NarHash: sha256:19w0faprn432gw32zzlxhgy62azxf7sfz1gh1j4azr8pp6rcwm2w\nNarSize: 1\n");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->compression, "bzip2");
}

TEST(NarInfo, RefusesInvalidInput) {
  const std::string good_hash = "NarHash: sha256:19w0faprn432gw32zzlxhgy62azxf7sfz1gh1j4azr8pp6rcwm2w\n";
  const std::string path = "StorePath: /nix/store/1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d\n";
  for (const std::string& text : {
           std::string(""),
           "URL: nar/x.nar\n" + good_hash + "NarSize: 1\n",  // no StorePath
           path + good_hash + "NarSize: 1\n",                // no URL
           path + "URL: nar/x.nar\nNarSize: 1\n",            // no NarHash
           path + "URL: nar/x.nar\n" + good_hash,            // no NarSize
           path + "URL: nar/x.nar\n" + good_hash + "NarSize: 0\n",
           path + "URL: nar/x.nar\n" + good_hash + "NarSize: -1\n",
           path + "URL: nar/x.nar\n" + good_hash + "NarSize: 12x\n",
           path + "URL: nar/x.nar\nNarHash: md5:abc\nNarSize: 1\n",
           path + "URL: nar/x.nar\nNarHash: sha256:tooshort\nNarSize: 1\n",
           path + "URL: ../../etc/passwd\n" + good_hash + "NarSize: 1\n",
           path + "URL: http://evil/x.nar\n" + good_hash + "NarSize: 1\n",
           path + "URL: /abs.nar\n" + good_hash + "NarSize: 1\n",
           "StorePath: /tmp/store/1hq2c3alzdkdh9rrs5i8ba8x7zdcfd61-d\nURL: nar/x\n" + good_hash + "NarSize: 1\n",
           "StorePath: /nix/store/eeee-d\nURL: nar/x\n" + good_hash + "NarSize: 1\n",
           path + "URL: nar/x\n" + good_hash + "NarSize: 1\nReferences: ../x\n",
           path + "no colon here\n",
       }) {
    EXPECT_FALSE(parse_narinfo(text)) << text;
  }
}

// Sizes must fit a signed 64-bit file size: NarSize 2^63 would show as a negative st_size.
TEST(NarInfo, RefusesAbsurdSizes) {
  std::string good = data("signed.narinfo");
  for (const char* size : {"9223372036854775808", "18446744073709551615", "4611686018427387905"}) {
    std::string text = good;
    text.replace(text.find("NarSize: 480"), 12, std::string("NarSize: ") + size);
    auto info = parse_narinfo(text);
    EXPECT_FALSE(info) << size;
    std::string file_size = good;
    file_size.replace(file_size.find("FileSize: 480"), 13, std::string("FileSize: ") + size);
    EXPECT_FALSE(parse_narinfo(file_size)) << size;
  }
  std::string at_cap = good;
  at_cap.replace(at_cap.find("NarSize: 480"), 12, "NarSize: " + std::to_string(kMaxNarSize));
  EXPECT_TRUE(parse_narinfo(at_cap));
  std::string negative = good;
  negative.replace(negative.find("NarSize: 480"), 12, "NarSize: -1");
  EXPECT_FALSE(parse_narinfo(negative));
}

TEST(NarInfo, VerifiesASignatureMadeByNix) {
  auto key = parse_public_key(public_key());
  ASSERT_TRUE(key) << key.error().message;
  EXPECT_EQ(key->name, "lazystore-test-1");
  auto info = parse_narinfo(data("signed.narinfo"));
  ASSERT_TRUE(info);
  EXPECT_TRUE(has_valid_signature(*info, {*key}));
}

TEST(NarInfo, RefusesTamperedUnsignedOrForeignlySigned) {
  auto key = parse_public_key(public_key());
  ASSERT_TRUE(key);
  auto info = parse_narinfo(data("signed.narinfo"));
  ASSERT_TRUE(info);

  NarInfo tampered = *info;
  tampered.nar_size += 1;
  EXPECT_FALSE(has_valid_signature(tampered, {*key}));
  tampered = *info;
  tampered.references.push_back("0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-evil");
  EXPECT_FALSE(has_valid_signature(tampered, {*key}));
  tampered = *info;
  tampered.nar_sha256[0] ^= 1;
  EXPECT_FALSE(has_valid_signature(tampered, {*key}));

  NarInfo unsigned_info = *info;
  unsigned_info.sigs.clear();
  EXPECT_FALSE(has_valid_signature(unsigned_info, {*key}));

  PublicKey other_name = *key;
  other_name.name = "someone-else";
  EXPECT_FALSE(has_valid_signature(*info, {other_name}));
  PublicKey other_key = *key;
  other_key.key[0] ^= 1;
  EXPECT_FALSE(has_valid_signature(*info, {other_key}));
  EXPECT_FALSE(has_valid_signature(*info, {}));

  NarInfo garbage = *info;
  garbage.sigs = {"lazystore-test-1:", "lazystore-test-1:@@@@", "nocolon", "lazystore-test-1:AAAA"};
  EXPECT_FALSE(has_valid_signature(garbage, {*key}));
}

TEST(NarInfo, PublicKeysAndBase64) {
  EXPECT_FALSE(parse_public_key("no-colon"));
  EXPECT_FALSE(parse_public_key(":AAAA"));
  EXPECT_FALSE(parse_public_key("name:AAAA"));  // 3 bytes, not 32
  EXPECT_FALSE(parse_public_key("name:not base64!"));
  auto decoded = base64_decode("aGVsbG8=");
  ASSERT_TRUE(decoded);
  EXPECT_EQ(std::string(decoded->begin(), decoded->end()), "hello");
  EXPECT_FALSE(base64_decode("aGVsbG8"));
  EXPECT_FALSE(base64_decode("a=Vs"));
}

}  // namespace
}  // namespace lazystore
