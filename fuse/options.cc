#include "options.h"

#include <cstdlib>
#include <new>
#include <optional>

#include "option_table.h"

namespace lazystore {
namespace {

// fuse_opt calls process_arg with these keys; an option of the table gets kTableKey + its index.
enum Key { kKeyForced = 1, kKeyHelpMarkdown = 2, kKeyHelpMan = 3, kTableKey = 100 };

// What process_arg collects while fuse_opt walks the arguments.
struct ParseContext {
  MountOptions options;
  std::string source;
  int nonopts = 0;
  std::optional<Error> error;  // the first bad option
};

// The fuse_opt spec made from the option table: "name=" (and "alias=") keyed by table index.
class OptSpec {
 public:
  OptSpec() {
    auto table = option_table();
    templates_.reserve(2 * table.size());
    for (size_t i = 0; i < table.size(); ++i) {
      const OptionSpec& option = table[i];
      if (!option.parse) continue;  // libfuse's: stays in the arguments
      int key = kTableKey + static_cast<int>(i);
      add(std::string(option.name) + (option.value.empty() ? "" : "="), key);
      if (!option.alias.empty()) add(std::string(option.alias) + (option.value.empty() ? "" : "="), key);
    }
    // mount.fuse3 passes "dev,suid" (and fstab defaults "rw"); the store is always ro,nosuid,nodev.
    for (const char* forced : {"suid", "dev", "rw"}) add(forced, kKeyForced);
    add("--help-markdown", kKeyHelpMarkdown);
    add("--help-man", kKeyHelpMan);
    for (size_t i = 0; i < templates_.size(); ++i) {
      spec_.push_back(fuse_opt{templates_[i].c_str(), -1U, keys_[i]});  // as FUSE_OPT_KEY()
    }
    spec_.push_back(FUSE_OPT_END);
  }
  const fuse_opt* get() const { return spec_.data(); }

 private:
  void add(std::string templ, int key) {
    templates_.push_back(std::move(templ));
    keys_.push_back(key);
  }
  std::vector<std::string> templates_;
  std::vector<int> keys_;
  std::vector<fuse_opt> spec_;
};

int process_arg(void* data, const char* arg, int key, fuse_args* /*outargs*/) {
  auto* context = static_cast<ParseContext*>(data);
  switch (key) {
    case FUSE_OPT_KEY_NONOPT:
      // The first positional argument is SOURCE (ours); the second, MOUNTPOINT, stays for libfuse.
      if (context->nonopts++ == 0) {
        context->source = arg;
        return 0;
      }
      return 1;
    case kKeyForced: return 0;  // overridden by the forced ro,nosuid,nodev
    case kKeyHelpMarkdown: context->options.help = MountOptions::Help::Markdown; return 0;
    case kKeyHelpMan: context->options.help = MountOptions::Help::Man; return 0;
    default: break;
  }
  auto table = option_table();
  if (key < kTableKey || static_cast<size_t>(key - kTableKey) >= table.size()) return 1;
  const OptionSpec& option = table[static_cast<size_t>(key - kTableKey)];
  std::string_view text(arg);
  size_t equals = text.find('=');
  std::string_view value = equals == std::string_view::npos ? std::string_view() : text.substr(equals + 1);
  if (auto parsed = option.parse(value, context->options); !parsed) {
    if (!context->error) context->error = parsed.error();
    return -1;
  }
  return 0;
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
  if (suffix.empty())
    shift = 0;
  else if (suffix == "K" || suffix == "k")
    shift = 10;
  else if (suffix == "M" || suffix == "m")
    shift = 20;
  else if (suffix == "G" || suffix == "g")
    shift = 30;
  else if (suffix == "T" || suffix == "t")
    shift = 40;
  else
    return make_error(EINVAL, "invalid size suffix in '" + std::string(text) + "' (use K, M, G or T)");
  if (shift && value > (UINT64_MAX >> shift)) return make_error(EINVAL, "size too large: " + std::string(text));
  return value << shift;
}

UpstreamOptions upstream_options(const MountOptions& options) {
  UpstreamOptions out;
  out.timeout_seconds = options.upstream_timeout;
  out.nfs_version = options.nfs_version;
  out.trusted_public_keys = options.trusted_public_keys;
  out.require_sigs = options.require_sigs;
  out.spool_dir = options.cache_dir + "/http-spool";
  out.spool_max_bytes = std::min<uint64_t>(options.cache_size, out.spool_max_bytes);
  return out;
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
  static const OptSpec spec;
  ParseContext context;
  if (fuse_opt_parse(&args, &context, spec.get(), process_arg) != 0) {
    if (context.error) return *context.error;
    return make_error(EINVAL, "invalid arguments (see --help)");
  }
  MountOptions options = std::move(context.options);
  if (options.help != MountOptions::Help::None) return options;

  fuse_cmdline_opts cmdline{};
  if (fuse_parse_cmdline(&args, &cmdline) != 0) return make_error(EINVAL, "invalid arguments (see --help)");
  if (cmdline.show_help) options.help = MountOptions::Help::Text;
  options.show_version = cmdline.show_version;
  if (cmdline.mountpoint) {
    options.mountpoint = cmdline.mountpoint;
    std::free(cmdline.mountpoint);
  }
  if (options.help != MountOptions::Help::None || options.show_version) return options;

  options.source = context.source;
  options.foreground = cmdline.foreground || cmdline.debug;
  options.debug = cmdline.debug;
  options.single_thread = cmdline.singlethread;
  options.clone_fd = true;
  if (cmdline.max_threads > 0) options.max_threads = cmdline.max_threads;
  if (options.source.empty()) return make_error(EINVAL, "missing SOURCE (see --help)");
  if (options.mountpoint.empty()) return make_error(EINVAL, "missing MOUNTPOINT (see --help)");
  if (context.nonopts > 2) return make_error(EINVAL, "too many arguments (see --help)");
  if (!options.control_socket_given) options.control_socket = options.cache_dir + "/control.sock";
  if (options.debug) options.log_level = LogLevel::Debug;

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
