// Every option of `lazystore`, declared once: its name, value, default, help line and parser.
// The parser (options.cc, through fuse_opt), `--help`, and the documentation all come from this
// table: `lazystore --help-man` prints the OPTIONS section of packaging/man/lazystore.8 and
// `lazystore --help-markdown` the options table of docs/mounting.md (and of the README); a unit
// test (options_test.cc) fails when either file differs from what the table says.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "result.h"

namespace lazystore {

struct MountOptions;

struct OptionSpec {
  std::string_view name;          // as written after -o: "cache-size"
  std::string_view value;         // the value's placeholder, "SIZE"; empty for a flag
  std::string_view default_text;  // "10G", "off", "none", "CACHE/control.sock"
  std::string_view help;          // one line, no trailing period
  // Checks `value` and stores it in `options`; the Error's message says what is wrong with it.
  // nullptr: a libfuse option, left in the arguments for libfuse.
  Status (*parse)(std::string_view value, MountOptions& options);
  std::string_view alias = {};  // a second accepted name ("vers" for "nfsvers"), undocumented
};

// The -o options, in the order --help shows them.
std::span<const OptionSpec> option_table();

// Command-line flags (-f, -d, ...), parsed by libfuse's fuse_parse_cmdline.
struct FlagSpec {
  std::string_view flag;  // "-f"
  std::string_view help;
};
std::span<const FlagSpec> flag_table();

// The extended attributes the mount answers (documentation only; fuse/filesystem.cc serves them).
struct XattrSpec {
  std::string_view name;
  std::string_view help;
};
std::span<const XattrSpec> xattr_table();

// `lazystore --help` (without libfuse's own options, which main() prints after it).
std::string usage_text(std::string_view program);
// The options table of docs/mounting.md: `| option | default | meaning |` rows.
std::string options_markdown();
// The OPTIONS section of lazystore.8 (roff), after its .SH line.
std::string options_man();

}  // namespace lazystore
