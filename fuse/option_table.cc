#include "option_table.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "options.h"
#include "printable.h"

namespace lazystore {
namespace {

Error invalid(std::string_view what, std::string_view value, std::string_view why) {
  return make_error(EINVAL, std::string(what) + "=" + std::string(value) + ": " + std::string(why));
}

Result<double> parse_seconds(std::string_view name, std::string_view text) {
  std::string copy(text);
  char* end = nullptr;
  double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || *end != '\0' || !(value >= 0) || value > 1e6) {
    return invalid(name, text, "expected seconds, e.g. 1 or 0.5");
  }
  return value;
}

// A whole number from 0 to `max`, e.g. of chunks or files.
Result<unsigned long> parse_count(std::string_view name, std::string_view text, unsigned long max,
                                  std::string_view unit) {
  std::string copy(text);
  char* end = nullptr;
  unsigned long n = std::strtoul(copy.c_str(), &end, 10);
  if (copy.empty() || copy[0] == '-' || *end != '\0' || n > max) {
    return invalid(name, text, "must be a number of " + std::string(unit) + ", 0 to " + std::to_string(max));
  }
  return n;
}

Result<bool> parse_bool(std::string_view name, std::string_view text) {
  if (text == "true") return true;
  if (text == "false") return false;
  return invalid(name, text, "must be true or false");
}

// The name of an option as a template argument.
template <size_t N>
struct OptionName {
  char text[N];
  constexpr OptionName(const char (&name)[N]) { std::copy_n(name, N, text); }
};

// A true|false option that sets one member.
template <OptionName name, bool MountOptions::*member>
Status set_bool(std::string_view text, MountOptions& options) {
  auto b = parse_bool(name.text, text);
  if (!b) return b.error();
  options.*member = *b;
  return {};
}

Status absolute_path(std::string_view name, std::string_view text, std::string& out) {
  if (text.empty() || text[0] != '/') return invalid(name, text, "must be an absolute path");
  out.assign(text);
  return {};
}

const OptionSpec kOptions[] = {
    {"cache", "DIR", "/var/cache/lazystore",
     "the local cache of content and metadata; one daemon per directory, locked",
     [](std::string_view v, MountOptions& o) { return absolute_path("cache", v, o.cache_dir); }},
    {"cache-size", "SIZE", "10G", "bound on the disk blocks of cached content; K, M, G, T suffixes",
     [](std::string_view v, MountOptions& o) -> Status {
       auto size = parse_size(v);
       if (!size) return invalid("cache-size", v, size.error().message);
       o.cache_size = *size;
       return {};
     }},
    {"chunk-size", "SIZE", "1M",
     "unit of fetching for sequential reads and read-ahead (a random small read fetches only its own "
     "4 KiB blocks, the unit of caching and verification); a power of two from 64K to 16M",
     [](std::string_view v, MountOptions& o) -> Status {
       auto size = parse_size(v);
       if (!size || *size < (64u << 10) || *size > (16u << 20) || (*size & (*size - 1)) != 0) {
         return invalid("chunk-size", v, "must be a power of two from 64K to 16M");
       }
       o.chunk_size = static_cast<uint32_t>(*size);
       return {};
     }},
    {"readahead", "N", "4",
     "read-ahead of sequential reads, in chunks fetched in the background: the window starts at one "
     "chunk and doubles per chunk read in order up to 4 times N; 0 (off) to 256",
     [](std::string_view v, MountOptions& o) -> Status {
       auto n = parse_count("readahead", v, 256, "chunks");
       if (!n) return n.error();
       o.readahead_chunks = static_cast<unsigned>(*n);
       return {};
     }},
    {"no-open", "true|false", "true",
     "open files without a round trip where the kernel allows it (Linux 4.19 on): no OPEN and no RELEASE "
     "per file; false: every open asks the daemon, which pins the file while it is open",
     set_bool<"no-open", &MountOptions::no_open>},
    {"read-pins", "N", "256",
     "files read without an open whose cache entries stay pinned, the most recently read (their sizes at most "
     "an eighth of cache-size together); 0 to 65536",
     [](std::string_view v, MountOptions& o) -> Status {
       auto n = parse_count("read-pins", v, 65536, "files");
       if (!n) return n.error();
       o.read_pins = *n;
       return {};
     }},
    {"negative-timeout", "SEC", "1", "how long \"no such store path\" at the top level is believed",
     [](std::string_view v, MountOptions& o) -> Status {
       auto t = parse_seconds("negative-timeout", v);
       if (!t) return t.error();
       o.negative_timeout = *t;
       return {};
     }},
    {"upstream-timeout", "SEC", "10", "deadline of one upstream request, also of the check of SOURCE before mounting",
     [](std::string_view v, MountOptions& o) -> Status {
       auto t = parse_seconds("upstream-timeout", v);
       if (!t) return t.error();
       if (*t == 0) return invalid("upstream-timeout", v, "must be more than 0");
       o.upstream_timeout = *t;
       return {};
     }},
    {"nfsvers", "3|4", "3", "NFS version of a HOST:/PATH source",
     [](std::string_view v, MountOptions& o) -> Status {
       if (v != "3" && v != "4") return invalid("nfsvers", v, "must be 3 or 4");
       o.nfs_version = v == "3" ? 3 : 4;
       return {};
     },
     "vers"},
    {"trusted-public-keys", "NAME:KEY[ NAME:KEY...]", "none",
     "HTTP SOURCE: keys that may sign narinfos, as in Nix; separate several by spaces or repeat the option",
     [](std::string_view v, MountOptions& o) -> Status {
       while (!v.empty()) {
         size_t space = v.find_first_of(" \t");
         if (space != 0) o.trusted_public_keys.emplace_back(v.substr(0, space));
         v = space == std::string_view::npos ? std::string_view() : v.substr(space + 1);
       }
       return {};
     }},
    {"require-sigs", "true|false", "true",
     "HTTP SOURCE: true (as Nix): serve only what a trusted key signed, each block checked against "
     "a signed manifest or the whole NAR against NarHash first; false: trust the cache (unsigned "
     "listings and Range reads served unchecked)",
     set_bool<"require-sigs", &MountOptions::require_sigs>},
    {"log-level", "LEVEL", "warning", "error, warning, info or debug",
     [](std::string_view v, MountOptions& o) -> Status {
       if (!parse_log_level(v, o.log_level)) return invalid("log-level", v, "must be error, warning, info or debug");
       return {};
     }},
    {"log", "FILE", "none", "also append every log line, with time and process id, to FILE, an absolute path",
     [](std::string_view v, MountOptions& o) { return absolute_path("log", v, o.log_file); }},
    {"control", "PATH", "CACHE/control.sock", "the unix socket of lazystore-ctl, mode 0600: root only",
     [](std::string_view v, MountOptions& o) -> Status {
       o.control_socket_given = true;
       return absolute_path("control", v, o.control_socket);
     }},
    {"supervise", "true|false", "true",
     "a supervisor process holds the mount and restarts a crashed server: a crash does not end the mount",
     set_bool<"supervise", &MountOptions::supervise>},
    {"allow_other", "", "off", "let other users read the store: build actions that run as another uid", nullptr},
    {"default_permissions", "", "off", "let the kernel check the permissions, which are all read-only", nullptr},
};

const FlagSpec kFlags[] = {
    {"-f", "stay in the foreground; logs go to stderr"},
    {"-d", "debug: foreground, log-level=debug and FUSE request tracing"},
    {"-s", "single-threaded"},
    {"-h, --help", "this text and libfuse's options"},
    {"-V, --version", "the version"},
};

const XattrSpec kXattrs[] = {
    {"user.lazystore.cached", "on a file: its bytes in the content cache"},
    {"user.lazystore.stats", "on the mount root: the counters, as JSON"},
};

constexpr size_t kHelpColumn = 29;
constexpr size_t kHelpWidth = 100;

std::string with_default(const OptionSpec& option) {
  std::string text(option.help);
  if (option.default_text != "off" && option.default_text != "none") {
    text += " (default " + std::string(option.default_text) + ")";
  }
  return text;
}

// "    LEFT   help…", the help starting at kHelpColumn and wrapped at kHelpWidth.
void append_help_line(std::string& out, const std::string& left, std::string_view help) {
  out += left;
  size_t column = left.size();
  if (column + 1 > kHelpColumn) {
    out += '\n';
    column = 0;
  }
  out.append(kHelpColumn - column, ' ');
  column = kHelpColumn;
  bool first = true;
  while (!help.empty()) {
    size_t space = help.find(' ');
    std::string_view word = help.substr(0, space);
    help = space == std::string_view::npos ? std::string_view() : help.substr(space + 1);
    if (!first && column + 1 + word.size() > kHelpWidth) {
      out += '\n';
      out.append(kHelpColumn, ' ');
      column = kHelpColumn;
    } else if (!first) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
    first = false;
  }
  out += '\n';
}

std::string option_text(const OptionSpec& option) {
  std::string text(option.name);
  if (!option.value.empty()) text += "=" + std::string(option.value);
  return text;
}

std::string markdown_cell(std::string_view text) { return replace_bytes(text, {{'|', "\\|"}}); }

// roff: a minus is "\-", a backslash "\e"; quotes keep an argument with spaces whole.
std::string roff(std::string_view text) { return replace_bytes(text, {{'-', "\\-"}, {'\\', "\\e"}}); }

std::string roff_argument(std::string_view text) {
  std::string escaped = roff(text);
  return escaped.find(' ') == std::string::npos ? escaped : "\"" + escaped + "\"";
}

}  // namespace

std::span<const OptionSpec> option_table() { return kOptions; }
std::span<const FlagSpec> flag_table() { return kFlags; }
std::span<const XattrSpec> xattr_table() { return kXattrs; }

std::string usage_text(std::string_view program) {
  std::string out = "usage: " + std::string(program) +
                    " SOURCE MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d] [-s]\n"
                    "\n"
                    "Mounts a read-only Nix store at MOUNTPOINT that fetches store paths from SOURCE lazily\n"
                    "and keeps what it fetched in a verified local cache.\n"
                    "\n"
                    "SOURCE:\n"
                    "    HOST:/nix/store          an NFS export (NFSv3 unless -o nfsvers=4), as in fstab\n"
                    "    nfs://HOST[:PORT]/PATH?version=3|4[&nfsport=N&mountport=M]\n"
                    "                             an NFS export, libnfs URL options\n"
                    "    http(s)://URL[,http(s)://URL...]\n"
                    "                             a Nix binary cache; further URLs are fail-over mirrors\n"
                    "    file:///DIR or /DIR      a directory laid out like /nix/store\n"
                    "\n"
                    "Before mounting, SOURCE must answer one request (within upstream-timeout): a missing\n"
                    "directory, an NFS server that refuses or a host name that does not resolve, a binary cache\n"
                    "that does not answer fail the mount with the cause (exit status 1). When the cache already\n"
                    "holds store paths, the mount starts anyway, offline (a warning says so), and serves them\n"
                    "until SOURCE answers. MOUNTPOINT must be a directory and not a lazystore mount already;\n"
                    "a dead lazystore mount there is cleared first, any other dead FUSE mount refused.\n"
                    "\n"
                    "Options (-o NAME=VALUE, comma-separated):\n";
  for (const OptionSpec& option : kOptions)
    append_help_line(out, "    -o " + option_text(option), with_default(option));
  out +=
      "    The mount is always ro,nosuid,nodev (rw, suid and dev are ignored), and it goes away with\n"
      "    its daemon, also after a kill -9 (a small lazystore-unmount-guard process sees to it).\n"
      "\n";
  for (const FlagSpec& flag : kFlags) append_help_line(out, "    " + std::string(flag.flag), flag.help);
  out +=
      "\n"
      "Logs: in the foreground to stderr; in the background to syslog when /dev/log is there, else\n"
      "to the stderr lazystore was started with; with -o log=FILE to FILE (in the background only).\n"
      "\n"
      "Extended attributes:\n";
  for (const XattrSpec& xattr : kXattrs) append_help_line(out, "    " + std::string(xattr.name), xattr.help);
  return out;
}

std::string options_markdown() {
  std::string out = "| option | default | meaning |\n|---|---|---|\n";
  for (const OptionSpec& option : kOptions) {
    std::string_view d = option.default_text;
    std::string shown = d == "off" || d == "none" ? std::string(d) : "`" + markdown_cell(d) + "`";
    out += "| `" + markdown_cell(option_text(option)) + "` | " + shown + " | " + markdown_cell(option.help) + " |\n";
  }
  for (const FlagSpec& flag : kFlags) {
    std::string names;
    for (std::string_view rest = flag.flag; !rest.empty();) {
      size_t comma = rest.find(", ");
      if (!names.empty()) names += ", ";
      names += "`" + std::string(rest.substr(0, comma)) + "`";
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 2);
    }
    out += "| " + names + " | | " + markdown_cell(flag.help) + " |\n";
  }
  return out;
}

std::string options_man() {
  std::string out;
  for (const OptionSpec& option : kOptions) {
    out += ".TP\n";
    if (option.value.empty()) {
      out += ".B " + roff(option.name) + "\n";
    } else {
      out += ".BI " + roff(option.name) + "= " + roff_argument(option.value) + "\n";
    }
    out += roff(with_default(option)) + ".\n";
  }
  for (const FlagSpec& flag : kFlags) {
    out += ".TP\n.B " + roff_argument(flag.flag) + "\n" + roff(flag.help) + ".\n";
  }
  return out;
}

}  // namespace lazystore
