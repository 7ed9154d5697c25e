// nix32 against values printed by Nix itself (`nix-hash --type T --to-base32 HEX`, Nix 2.8).
#include <gtest/gtest.h>

#include <random>

#include "nix32.h"

namespace lazystore {
namespace {

std::vector<uint8_t> from_hex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

struct Known {
  const char* hex;
  const char* nix32;
};

const Known kKnown[] = {
    // sha256 of "", "abc", "The quick brown fox jumps over the lazy dog"
    {"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
    {"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
     "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"},
    {"d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592",
     "14p5r4vvzl025mvdng3dwi8md3ag5q4b1g4sr9lr906p0yrzpa6p"},
    // sha1 (20 bytes, the length of a store path hash)
    {"da39a3ee5e6b4b0d3255bfef95601890afd80709", "143xibwh31h9bvxzalr0sjvbbvpa6ffs"},
    {"a9993e364706816aba3e25717850c26c9cd0d89d", "kpcd173cq987hw957sx6m0868wv3x6d9"},
    {"2fd4e1c67a2d28fced849ee1bb76e7391b93eb12", "2bmr66rrwxvbpqcyhknzqa1dgb3f3m1g"},
    // md5
    {"d41d8cd98f00b204e9800998ecf8427e", "3y8bwfr609h3lh9ch0izcqq7fl"},
    {"900150983cd24fb0d6963f7d28e17f72", "3jgzhjhz9zjvbb0kyj7jc500ch"},
    {"9e107d9d372bb6826bd81d3542a419d6", "6n36j44d8xv1mq5dib6yfps44y"},
    // sha512 of "abc"
    {"ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3"
     "feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam5ydvly1ai7xac99vxfc4ii84haw"
     "jbk876blyk1jfhkbbyx"},
};

TEST(Nix32, EncodesLikeNix) {
  for (const Known& k : kKnown) {
    auto bytes = from_hex(k.hex);
    EXPECT_EQ(nix32::encode(bytes), k.nix32) << k.hex;
    EXPECT_EQ(nix32::encoded_length(bytes.size()), std::string_view(k.nix32).size());
  }
}

TEST(Nix32, DecodesWhatNixPrints) {
  for (const Known& k : kKnown) {
    auto bytes = from_hex(k.hex);
    auto decoded = nix32::decode(k.nix32, bytes.size());
    ASSERT_TRUE(decoded) << k.nix32 << ": " << decoded.error().message;
    EXPECT_EQ(*decoded, bytes);
  }
}

TEST(Nix32, Lengths) {
  EXPECT_EQ(nix32::encoded_length(0), 0u);
  EXPECT_EQ(nix32::encoded_length(1), 2u);
  EXPECT_EQ(nix32::encoded_length(16), 26u);
  EXPECT_EQ(nix32::encoded_length(20), 32u);
  EXPECT_EQ(nix32::encoded_length(32), 52u);
  EXPECT_EQ(nix32::encoded_length(64), 103u);
  EXPECT_EQ(nix32::encode({}), "");
}

TEST(Nix32, Alphabet) {
  for (int c = 0; c < 256; ++c) {
    bool expected = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z' && c != 'e' && c != 'o' && c != 'u' && c != 't');
    EXPECT_EQ(nix32::is_char(static_cast<char>(c)), expected) << c;
  }
}

TEST(Nix32, RoundTripsRandomBytes) {
  std::mt19937 rng(42);
  for (size_t n = 1; n <= 70; ++n) {
    for (int round = 0; round < 20; ++round) {
      std::vector<uint8_t> bytes(n);
      for (auto& b : bytes) b = static_cast<uint8_t>(rng());
      std::string text = nix32::encode(bytes);
      ASSERT_EQ(text.size(), nix32::encoded_length(n));
      auto back = nix32::decode(text, n);
      ASSERT_TRUE(back) << back.error().message;
      EXPECT_EQ(*back, bytes);
    }
  }
}

TEST(Nix32, RejectsBadCharacters) {
  std::string good = "143xibwh31h9bvxzalr0sjvbbvpa6ffs";
  for (char bad : {'e', 'o', 'u', 't', 'A', 'Z', '-', ' ', '\0', '/', '\x80'}) {
    for (size_t pos : {size_t{0}, size_t{10}, good.size() - 1}) {
      std::string text = good;
      text[pos] = bad;
      auto decoded = nix32::decode(text, 20);
      ASSERT_FALSE(decoded) << text;
      EXPECT_EQ(decoded.error().code, EINVAL);
    }
  }
}

TEST(Nix32, RejectsWrongLength) {
  EXPECT_FALSE(nix32::decode("143xibwh31h9bvxzalr0sjvbbvpa6ff", 20));
  EXPECT_FALSE(nix32::decode("143xibwh31h9bvxzalr0sjvbbvpa6ffs0", 20));
  EXPECT_FALSE(nix32::decode("", 20));
  EXPECT_TRUE(nix32::decode("", 0));
}

TEST(Nix32, RejectsBitsBeyondTheLength) {
  // 52 digits hold 260 bits: for 32 bytes the first digit carries 4 bits that must be zero.
  std::string text(52, '0');
  for (char first : nix32::kAlphabet) {
    text[0] = first;
    EXPECT_EQ(nix32::decode(text, 32).ok(), first == '0' || first == '1') << first;
  }
  // 26 digits hold 130 bits for 16 bytes: the first digit must be below 8.
  std::string md5(26, '0');
  for (size_t d = 0; d < 32; ++d) {
    md5[0] = nix32::kAlphabet[d];
    EXPECT_EQ(nix32::decode(md5, 16).ok(), d < 8) << d;
  }
  // 2 digits hold 10 bits for 1 byte.
  EXPECT_TRUE(nix32::decode("7z", 1));
  EXPECT_FALSE(nix32::decode("8z", 1));
}

}  // namespace
}  // namespace lazystore
