// The option table drives parsing, --help and the documentation: the man page's OPTIONS section
// and docs/mounting.md's table must be what the table generates, every option of --help must be
// in the man page, and each documented default must be what the parser leaves when the option
// is not given.
#include <gtest/gtest.h>

#include <fstream>
#include <cctype>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "option_table.h"
#include "options.h"

namespace lazystore {
namespace {

std::string read_source_file(const std::string& relative) {
  std::ifstream in(std::string(LAZYSTORE_SOURCE_ROOT) + "/" + relative);
  EXPECT_TRUE(in) << relative;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The text between the line holding `begin` and the line holding `end`.
std::string between(const std::string& text, const std::string& begin, const std::string& end) {
  size_t a = text.find(begin);
  if (a == std::string::npos) return "(no '" + begin + "' line)";
  a = text.find('\n', a);
  size_t b = text.find(end, a);
  if (a == std::string::npos || b == std::string::npos) return "(no '" + end + "' line)";
  b = text.rfind('\n', b);
  return text.substr(a + 1, b - a);
}

// Parses `lazystore /srv/store /mnt -o OPTIONS`.
Result<MountOptions> parse(const std::string& options) {
  std::vector<std::string> argv = {"lazystore", "/srv/store", "/tmp"};
  if (!options.empty()) {
    argv.push_back("-o");
    argv.push_back(options);
  }
  FuseArgs args(argv);
  return parse_mount_options(*args.get());
}

// The fields an option of the table sets, as text (to compare two parses).
std::string describe(const MountOptions& o) {
  std::ostringstream out;
  out << o.cache_dir << " " << o.cache_size << " " << o.chunk_size << " " << o.readahead_chunks << " "
      << o.negative_timeout << " " << o.upstream_timeout << " " << o.nfs_version << " " << o.require_sigs << " "
      << static_cast<int>(o.log_level) << " " << o.control_socket << " " << o.supervise << " " << o.no_open << " "
      << o.read_pins << " keys:";
  for (const std::string& key : o.trusted_public_keys) out << " " << key;
  return out.str();
}

TEST(OptionTableTest, ManPageOptionsAreTheGeneratedOnes) {
  std::string man = read_source_file("packaging/man/lazystore.8");
  EXPECT_EQ(between(man, "BEGIN GENERATED OPTIONS", "END GENERATED OPTIONS"), options_man())
      << "packaging/man/lazystore.8 differs from the option table: replace the lines between its "
         "BEGIN/END GENERATED OPTIONS comments with the output of `lazystore --help-man`";
}

TEST(OptionTableTest, DocsTableIsTheGeneratedOne) {
  std::string docs = read_source_file("docs/mounting.md");
  EXPECT_EQ(between(docs, "BEGIN GENERATED OPTIONS", "END GENERATED OPTIONS"), options_markdown())
      << "docs/mounting.md differs from the option table: replace the lines between its "
         "BEGIN/END GENERATED OPTIONS comments with the output of `lazystore --help-markdown`";
}

TEST(OptionTableTest, EveryOptionOfHelpIsInTheManPage) {
  std::string man = read_source_file("packaging/man/lazystore.8");
  std::string help = usage_text("lazystore");
  // Every "-o NAME" of the help (a scan, not std::regex: GCC 12's -Wmaybe-uninitialized fires
  // inside <regex> under the sanitizers, and warnings are errors).
  std::set<std::string> names;
  for (size_t at = help.find("-o "); at != std::string::npos; at = help.find("-o ", at + 1)) {
    size_t end = at + 3;
    while (end < help.size() &&
           (std::islower(static_cast<unsigned char>(help[end])) || help[end] == '_' || help[end] == '-')) {
      ++end;
    }
    if (end > at + 3) names.insert(help.substr(at + 3, end - at - 3));
  }
  EXPECT_GE(names.size(), option_table().size());
  for (const std::string& name : names) {
    std::string roff;
    for (char c : name) roff += c == '-' ? std::string("\\-") : std::string(1, c);
    EXPECT_TRUE(man.find(".BI " + roff + "= ") != std::string::npos ||
                man.find(".B " + roff + "\n") != std::string::npos)
        << "-o " << name << " of --help is not in packaging/man/lazystore.8";
  }
  for (const FlagSpec& flag : flag_table()) {
    EXPECT_NE(help.find("    " + std::string(flag.flag)), std::string::npos) << flag.flag;
  }
}

TEST(OptionTableTest, ExtendedAttributesAreDocumented) {
  std::string man = read_source_file("packaging/man/lazystore.8");
  std::string help = usage_text("lazystore");
  for (const XattrSpec& xattr : xattr_table()) {
    EXPECT_NE(man.find(".B " + std::string(xattr.name)), std::string::npos) << xattr.name;
    EXPECT_NE(help.find(std::string(xattr.name)), std::string::npos) << xattr.name;
  }
}

TEST(OptionTableTest, DocumentedDefaultsAreTheParsersDefaults) {
  auto plain = parse("");
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  for (const OptionSpec& option : option_table()) {
    std::string_view d = option.default_text;
    // Not values: "none"/"off", a placeholder path, and nfsvers' "3" (which is "the SOURCE's
    // version, else 3": a nfs://…?version=4 SOURCE keeps its 4).
    if (!option.parse || d == "none" || d == "off" || d.find('/') == 0 || d.starts_with("CACHE") ||
        option.name == "nfsvers") {
      continue;
    }
    auto given = parse(std::string(option.name) + "=" + std::string(d));
    ASSERT_TRUE(given.ok()) << option.name << ": " << given.error().message;
    EXPECT_EQ(describe(*given), describe(*plain)) << option.name << "=" << d << " is not the default";
  }
  EXPECT_EQ(plain->cache_dir, "/var/cache/lazystore");
  EXPECT_EQ(plain->control_socket, "/var/cache/lazystore/control.sock");
}

TEST(OptionTableTest, EveryOptionOfTheTableIsParsed) {
  auto o = parse(
      "cache=/c,cache-size=2G,chunk-size=64K,readahead=0,negative-timeout=0.25,upstream-timeout=3,"
      "nfsvers=4,require-sigs=false,log-level=debug,control=/run/s,supervise=false,no-open=false,read-pins=0,"
      "allow_other");
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->cache_dir, "/c");
  EXPECT_EQ(o->cache_size, 2ull << 30);
  EXPECT_EQ(o->chunk_size, 64u << 10);
  EXPECT_EQ(o->readahead_chunks, 0u);
  EXPECT_DOUBLE_EQ(o->negative_timeout, 0.25);
  EXPECT_DOUBLE_EQ(o->upstream_timeout, 3);
  EXPECT_EQ(o->nfs_version, 4);
  EXPECT_FALSE(o->require_sigs);
  EXPECT_EQ(o->log_level, LogLevel::Debug);
  EXPECT_EQ(o->control_socket, "/run/s");
  EXPECT_TRUE(o->control_socket_given);
  EXPECT_FALSE(o->supervise);
  EXPECT_FALSE(o->no_open);
  EXPECT_EQ(o->read_pins, 0u);
  auto alias = parse("vers=4");
  ASSERT_TRUE(alias.ok());
  EXPECT_EQ(alias->nfs_version, 4);
  auto other_cache = parse("cache=/c");
  ASSERT_TRUE(other_cache.ok());
  EXPECT_EQ(other_cache->control_socket, "/c/control.sock");  // the default follows cache=
}

TEST(OptionTableTest, TrustedKeysSplitAtSpacesAndAccumulate) {
  auto o = parse("trusted-public-keys=a:1 b:2,trusted-public-keys=c:3");
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->trusted_public_keys, (std::vector<std::string>{"a:1", "b:2", "c:3"}));
}

TEST(OptionTableTest, ABadValueNamesTheOptionAndTheValue) {
  for (const char* bad : {"require-sigs=yes", "supervise=1", "readahead=-1", "readahead=300", "upstream-timeout=0",
                          "control=relative", "cache-size=lots", "no-open=0", "read-pins=65537", "read-pins=-1"}) {
    auto o = parse(bad);
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_EQ(o.error().message.find(bad), 0u) << o.error().message;
  }
}

TEST(OptionTableTest, HelpFormatsNeedNoSourceOrMountpoint) {
  for (auto [flag, help] :
       {std::pair{"--help-markdown", MountOptions::Help::Markdown}, std::pair{"--help-man", MountOptions::Help::Man},
        std::pair{"--help", MountOptions::Help::Text}}) {
    FuseArgs args({"lazystore", flag});
    auto o = parse_mount_options(*args.get());
    ASSERT_TRUE(o.ok()) << flag << ": " << o.error().message;
    EXPECT_EQ(o->help, help) << flag;
  }
}

}  // namespace
}  // namespace lazystore
