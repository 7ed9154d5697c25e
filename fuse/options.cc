#include "options.h"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace lazystore {
namespace {

// What fuse_opt fills in; converted and checked into MountOptions afterwards.
struct RawOptions {
  char* cache = nullptr;
  char* cache_size = nullptr;
  char* chunk_size = nullptr;
  char* readahead = nullptr;
  char* negative_timeout = nullptr;
  char* upstream_timeout = nullptr;
  char* log_level = nullptr;
  char* nfsvers = nullptr;
  char* require_sigs = nullptr;
  char* control = nullptr;
  char* supervise = nullptr;
  std::vector<std::string> trusted_public_keys;  // every trusted-public-keys= option, split
  std::string source;
  int nonopts = 0;
};

enum Key { kKeyForced = 1, kKeyTrustedKeys = 2 };

constexpr std::string_view kTrustedKeysPrefix = "trusted-public-keys=";

#define LZ_OPT(t, field) {t, offsetof(RawOptions, field), 0}
const fuse_opt kSpec[] = {
    LZ_OPT("cache=%s", cache),
    LZ_OPT("cache-size=%s", cache_size),
    LZ_OPT("chunk-size=%s", chunk_size),
    LZ_OPT("readahead=%s", readahead),
    LZ_OPT("negative-timeout=%s", negative_timeout),
    LZ_OPT("upstream-timeout=%s", upstream_timeout),
    LZ_OPT("log-level=%s", log_level),
    LZ_OPT("nfsvers=%s", nfsvers),
    LZ_OPT("vers=%s", nfsvers),
    LZ_OPT("control=%s", control),
    LZ_OPT("require-sigs=%s", require_sigs),
    LZ_OPT("supervise=%s", supervise),
    // fuse_opt splits -o at commas, so several keys are separated by spaces or the option repeats.
    FUSE_OPT_KEY("trusted-public-keys=", kKeyTrustedKeys),
    // mount.fuse3 passes "dev,suid" (and fstab defaults "rw"); the store is always ro,nosuid,nodev.
    FUSE_OPT_KEY("suid", kKeyForced),
    FUSE_OPT_KEY("dev", kKeyForced),
    FUSE_OPT_KEY("rw", kKeyForced),
    FUSE_OPT_END,
};
#undef LZ_OPT

int process_arg(void* data, const char* arg, int key, fuse_args* /*outargs*/) {
  auto* raw = static_cast<RawOptions*>(data);
  switch (key) {
    case FUSE_OPT_KEY_NONOPT:
      // The first positional argument is SOURCE (ours); the second, MOUNTPOINT, stays for libfuse.
      if (raw->nonopts++ == 0) {
        raw->source = arg;
        return 0;
      }
      return 1;
    case kKeyForced:
      return 0;  // overridden by the forced ro,nosuid,nodev
    case kKeyTrustedKeys: {
      std::string_view keys = std::string_view(arg).substr(kTrustedKeysPrefix.size());
      while (!keys.empty()) {
        size_t space = keys.find_first_of(" \t");
        if (space != 0) raw->trusted_public_keys.emplace_back(keys.substr(0, space));
        keys = space == std::string_view::npos ? std::string_view() : keys.substr(space + 1);
      }
      return 0;
    }
    default:
      return 1;
  }
}

Result<double> parse_seconds(const char* name, const char* text) {
  char* end = nullptr;
  double value = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(value >= 0) || value > 1e6) {
    return make_error(EINVAL, std::string("invalid ") + name + "='" + text + "' (expected seconds, e.g. 1 or 0.5)");
  }
  return value;
}

}  // namespace

Result<uint64_t> parse_size(std::string_view text) {
  if (text.empty()) return make_error(EINVAL, "empty size");
  uint64_t value = 0;
  size_t i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (value > (UINT64_MAX - 9) / 10) return make_error(EINVAL, "size too large: " + std::string(text));
    value = value * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  if (i == 0) return make_error(EINVAL, "invalid size '" + std::string(text) + "'");
  std::string_view suffix = text.substr(i);
  if (suffix.size() == 2 && (suffix[1] == 'B' || suffix[1] == 'b')) suffix = suffix.substr(0, 1);
  unsigned shift = 0;
  if (suffix.empty()) shift = 0;
  else if (suffix == "K" || suffix == "k") shift = 10;
  else if (suffix == "M" || suffix == "m") shift = 20;
  else if (suffix == "G" || suffix == "g") shift = 30;
  else if (suffix == "T" || suffix == "t") shift = 40;
  else return make_error(EINVAL, "invalid size suffix in '" + std::string(text) + "' (use K, M, G or T)");
  if (shift && value > (UINT64_MAX >> shift)) return make_error(EINVAL, "size too large: " + std::string(text));
  return value << shift;
}

void print_usage(const char* program) {
  std::printf(
      "usage: %s SOURCE MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d] [-s]\n"
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
      "lazystore options:\n"
      "    -o cache=DIR             cache directory (default /var/cache/lazystore)\n"
      "    -o cache-size=SIZE       bound of the content cache, K/M/G/T suffixes (default 10G)\n"
      "    -o chunk-size=SIZE       unit of fetching and caching, 64K..16M, a power of two (default 1M)\n"
      "    -o readahead=N           chunks fetched ahead of sequential reads (default 4)\n"
      "    -o negative-timeout=SEC  how long a missing store path is believed missing (default 1)\n"
      "    -o upstream-timeout=SEC  deadline of one upstream request (default 10)\n"
      "    -o nfsvers=3|4           NFS version for a HOST:/PATH source (default 3)\n"
      "    -o trusted-public-keys=NAME:KEY[ NAME:KEY...]\n"
      "                             keys that sign an HTTP binary cache's narinfos (repeatable)\n"
      "    -o require-sigs=true|false  true (default, as Nix): serve only what a trusted key signed:\n"
      "                             each block checked against a signed manifest, or the whole NAR\n"
      "                             against NarHash first; false: trust the cache (unsigned listings\n"
      "                             and Range reads served unchecked)\n"
      "    -o log-level=LEVEL       error, warning, info or debug (default warning)\n"
      "    -o control=PATH          lazystore-ctl's unix socket (default CACHE/control.sock)\n"
      "    -o supervise=true|false  keep the mount alive across a crash of the serving process:\n"
      "                             a supervisor holds /dev/fuse and restarts it (default true)\n"
      "    -o allow_other           let other users (build actions) read the store\n"
      "    -o default_permissions   let the kernel check permissions\n"
      "    The mount is always ro,nosuid,nodev (rw, suid and dev are ignored).\n"
      "\n"
      "    -f                       stay in the foreground\n"
      "    -d                       debug: foreground, log-level=debug and FUSE request tracing\n"
      "    -s                       single-threaded\n"
      "    -h, --help               this text and libfuse's options\n"
      "    -V, --version            version\n"
      "\n"
      "Extended attributes: user.lazystore.cached (a file's bytes in the cache),\n"
      "user.lazystore.stats (counters, on the mount root).\n",
      program);
}

FuseArgs::FuseArgs(const std::vector<std::string>& argv) {
  for (const std::string& arg : argv) {
    if (fuse_opt_add_arg(&args_, arg.c_str()) != 0) throw std::bad_alloc();
  }
}

std::vector<std::string> FuseArgs::save(const fuse_args& args) {
  return std::vector<std::string>(args.argv, args.argv + args.argc);
}

Result<MountOptions> parse_mount_options(fuse_args& args) {
  RawOptions raw;
  if (fuse_opt_parse(&args, &raw, kSpec, process_arg) != 0) {
    return make_error(EINVAL, "invalid arguments (see --help)");
  }
  auto free_raw = [&raw] {
    for (char* p : {raw.cache, raw.cache_size, raw.chunk_size, raw.readahead, raw.negative_timeout,
                    raw.upstream_timeout, raw.log_level, raw.nfsvers, raw.require_sigs, raw.control,
                    raw.supervise}) {
      std::free(p);
    }
  };
  struct Freer {
    decltype(free_raw)& f;
    ~Freer() { f(); }
  } freer{free_raw};

  fuse_cmdline_opts cmdline{};
  if (fuse_parse_cmdline(&args, &cmdline) != 0) return make_error(EINVAL, "invalid arguments (see --help)");
  MountOptions options;
  options.show_help = cmdline.show_help;
  options.show_version = cmdline.show_version;
  if (cmdline.mountpoint) {
    options.mountpoint = cmdline.mountpoint;
    std::free(cmdline.mountpoint);
  }
  if (options.show_help || options.show_version) return options;

  options.source = raw.source;
  options.foreground = cmdline.foreground || cmdline.debug;
  options.debug = cmdline.debug;
  options.single_thread = cmdline.singlethread;
  options.clone_fd = true;
  if (cmdline.max_threads > 0) options.max_threads = cmdline.max_threads;
  if (options.source.empty()) return make_error(EINVAL, "missing SOURCE (see --help)");
  if (options.mountpoint.empty()) return make_error(EINVAL, "missing MOUNTPOINT (see --help)");
  if (raw.nonopts > 2) return make_error(EINVAL, "too many arguments (see --help)");

  if (raw.cache) {
    options.cache_dir = raw.cache;
    if (options.cache_dir.empty() || options.cache_dir[0] != '/') {
      return make_error(EINVAL, "cache=" + options.cache_dir + " must be an absolute directory");
    }
  }
  options.control_socket = options.cache_dir + "/control.sock";
  if (raw.control) {
    options.control_socket = raw.control;
    options.control_socket_given = true;
    if (options.control_socket.empty() || options.control_socket[0] != '/') {
      return make_error(EINVAL, "control=" + options.control_socket + " must be an absolute path");
    }
  }
  if (raw.cache_size) {
    auto size = parse_size(raw.cache_size);
    if (!size) return make_error(EINVAL, "cache-size: " + size.error().message);
    options.cache_size = *size;
  }
  if (raw.chunk_size) {
    auto size = parse_size(raw.chunk_size);
    if (!size || *size < (64u << 10) || *size > (16u << 20) || (*size & (*size - 1)) != 0) {
      return make_error(EINVAL, std::string("chunk-size=") + raw.chunk_size + " must be a power of two from 64K to 16M");
    }
    options.chunk_size = static_cast<uint32_t>(*size);
  }
  if (raw.readahead) {
    char* end = nullptr;
    unsigned long n = std::strtoul(raw.readahead, &end, 10);
    if (end == raw.readahead || *end != '\0' || n > 256) {
      return make_error(EINVAL, std::string("readahead=") + raw.readahead + " must be a number of chunks, 0..256");
    }
    options.readahead_chunks = static_cast<unsigned>(n);
  }
  if (raw.negative_timeout) {
    auto t = parse_seconds("negative-timeout", raw.negative_timeout);
    if (!t) return t.error();
    options.negative_timeout = *t;
  }
  if (raw.upstream_timeout) {
    auto t = parse_seconds("upstream-timeout", raw.upstream_timeout);
    if (!t) return t.error();
    if (*t == 0) return make_error(EINVAL, "upstream-timeout must be more than 0");
    options.upstream_timeout = *t;
  }
  if (raw.log_level && !parse_log_level(raw.log_level, options.log_level)) {
    return make_error(EINVAL, std::string("log-level=") + raw.log_level + " must be error, warning, info or debug");
  }
  if (options.debug) options.log_level = LogLevel::Debug;
  if (raw.nfsvers) {
    std::string_view v(raw.nfsvers);
    if (v != "3" && v != "4") return make_error(EINVAL, std::string("nfsvers=") + raw.nfsvers + " must be 3 or 4");
    options.nfs_version = v == "3" ? 3 : 4;
  }

  options.trusted_public_keys = raw.trusted_public_keys;
  if (raw.require_sigs) {
    std::string_view v(raw.require_sigs);
    if (v != "true" && v != "false") {
      return make_error(EINVAL, std::string("require-sigs=") + raw.require_sigs + " must be true or false");
    }
    options.require_sigs = v == "true";
  }
  if (raw.supervise) {
    std::string_view v(raw.supervise);
    if (v != "true" && v != "false") {
      return make_error(EINVAL, std::string("supervise=") + raw.supervise + " must be true or false");
    }
    options.supervise = v == "true";
  }

  // Forced and default mount options; fsname shows SOURCE in /proc/mounts (commas escaped).
  std::string fsname;
  for (char c : options.source) {
    if (c == ',' || c == '\\') fsname += '\\';
    fsname += c;
  }
  std::string defaults = "-oro,nosuid,nodev,subtype=lazystore,fsname=" + fsname;
  if (fuse_opt_add_arg(&args, defaults.c_str()) != 0) return make_error(ENOMEM, "out of memory");
  return options;
}

}  // namespace lazystore
