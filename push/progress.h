// What the user sees while a push runs: a one-line bar on a terminal, plain lines otherwise,
// nothing at all with --json (the summary is the output).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "format.h"

namespace lazystore {

std::string format_duration(double seconds);  // "1:02" or "1:02:03"

class Progress {
 public:
  enum class Mode { Bar, Lines, Quiet };
  explicit Progress(Mode mode, std::FILE* out = stderr) : mode_(mode), out_(out) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { clear_bar(); }

  void message(const std::string& line);  // a line of its own, above the bar
  void begin(uint64_t total_paths, uint64_t total_bytes);
  void path_started(const std::string& path, uint64_t nar_size);
  void transferred(uint64_t bytes);
  void path_done();
  void finish();

  uint64_t bytes_done() const { return bytes_done_; }
  double elapsed_seconds() const;

 private:
  void draw(bool force);
  void clear_bar();

  Mode mode_;
  std::FILE* out_;
  uint64_t total_paths_ = 0;
  uint64_t total_bytes_ = 0;
  uint64_t paths_done_ = 0;
  uint64_t bytes_done_ = 0;
  bool bar_visible_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace lazystore
