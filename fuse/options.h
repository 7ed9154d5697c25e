// The daemon's command line: `lazystore SOURCE MOUNTPOINT [-o opts] [-f] [-d] [-s]`, the shape
// mount.fuse3 uses, so /etc/fstab type fuse.lazystore works.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuse_version.h"
#include "log.h"
#include "result.h"
#include "upstream/upstream.h"

namespace lazystore {

struct MountOptions {
  std::string source;
  std::string mountpoint;
  std::string cache_dir = "/var/cache/lazystore";
  std::string control_socket;         // lazystore-ctl's socket; default <cache_dir>/control.sock
  bool control_socket_given = false;  // -o control=PATH, else the default
  uint64_t cache_size = 10ull << 30;
  uint32_t chunk_size = 1u << 20;
  unsigned readahead_chunks = 4;
  // Files open without a round trip where the kernel allows (FUSE_CAP_NO_OPEN_SUPPORT).
  bool no_open = true;
  // Files read without an open whose cache entries stay pinned, the most recently read.
  size_t read_pins = 256;
  double negative_timeout = 1.0;
  double upstream_timeout = 10.0;
  int nfs_version = 0;  // 0: the SOURCE's, else 3
  // HTTP SOURCE: keys that may sign narinfos ("name:base64"), and whether a signature is needed.
  std::vector<std::string> trusted_public_keys;
  bool require_sigs = true;
  LogLevel log_level = LogLevel::Warning;
  std::string log_file;  // -o log=FILE: log lines are appended there too
  bool foreground = false;
  bool debug = false;
  bool single_thread = false;
  // -h/--help; --help-markdown and --help-man print the documentation generated from the
  // option table (option_table.h).
  enum class Help { None, Text, Markdown, Man };
  Help help = Help::None;
  bool show_version = false;
  unsigned max_threads = 64;
  bool clone_fd = true;
  // A supervisor process mounts and holds /dev/fuse; the serving process is restarted on a crash.
  bool supervise = true;
};

// A libfuse argument vector that owns its strings, made from a saved copy of the arguments:
// each fuse_session_new() consumes the options it knows, and a supervised mount makes several.
class FuseArgs {
 public:
  explicit FuseArgs(const std::vector<std::string>& argv);
  ~FuseArgs() { fuse_opt_free_args(&args_); }
  FuseArgs(const FuseArgs&) = delete;
  FuseArgs& operator=(const FuseArgs&) = delete;
  fuse_args* get() { return &args_; }
  static std::vector<std::string> save(const fuse_args& args);

 private:
  fuse_args args_ = FUSE_ARGS_INIT(0, nullptr);
};

// What the upstream backend gets of the options (its `stats` pointer is the caller's to set).
UpstreamOptions upstream_options(const MountOptions& options);

// "10G", "512M", "64K", "4096" → bytes (powers of 1024).
Result<uint64_t> parse_size(std::string_view text);

// Parses argv with the option table (option_table.h); on success `args` holds what libfuse's
// session needs (mount options with our defaults added: ro,nosuid,nodev,fsname=SOURCE,
// subtype=lazystore). An Error's message names the option and what is wrong with it.
Result<MountOptions> parse_mount_options(fuse_args& args);

}  // namespace lazystore
