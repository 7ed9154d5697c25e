#include "progress.h"

#include <algorithm>
#include <array>
#include <cinttypes>

namespace lazystore {

std::string format_duration(double seconds) {
  auto total = static_cast<uint64_t>(std::max(0.0, seconds) + 0.5);
  std::array<char, 32> text{};
  if (total >= 3600) {
    std::snprintf(text.data(), text.size(), "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, total / 3600, total / 60 % 60,
                  total % 60);
  } else {
    std::snprintf(text.data(), text.size(), "%" PRIu64 ":%02" PRIu64, total / 60, total % 60);
  }
  return text.data();
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::clear_bar() {
  if (bar_visible_) {
    std::fputs("\r\033[K", out_);
    std::fflush(out_);
    bar_visible_ = false;
  }
}

void Progress::message(const std::string& line) {
  if (mode_ == Mode::Quiet) return;
  clear_bar();
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
  if (mode_ == Mode::Bar) draw(true);
}

void Progress::begin(uint64_t total_paths, uint64_t total_bytes) {
  total_paths_ = total_paths;
  total_bytes_ = total_bytes;
  start_ = std::chrono::steady_clock::now();
  if (mode_ == Mode::Lines) {
    std::fprintf(out_, "copying %" PRIu64 " paths (%s)\n", total_paths, format_bytes(total_bytes).c_str());
    std::fflush(out_);
  }
  draw(true);
}

void Progress::path_started(const std::string& path, uint64_t nar_size) {
  if (mode_ == Mode::Lines) {
    std::fprintf(out_, "copying %s (%s)\n", path.c_str(), format_bytes(nar_size).c_str());
    std::fflush(out_);
  }
}

void Progress::transferred(uint64_t bytes) {
  bytes_done_ += bytes;
  draw(false);
}

void Progress::path_done() {
  ++paths_done_;
  draw(false);
}

void Progress::finish() {
  if (mode_ == Mode::Bar) {
    draw(true);
    std::fputc('\n', out_);
    std::fflush(out_);
    bar_visible_ = false;
  }
}

void Progress::draw(bool force) {
  if (mode_ != Mode::Bar) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? static_cast<double>(bytes_done_) / elapsed : 0;
  double fraction = total_bytes_ > 0
                        ? static_cast<double>(bytes_done_) / static_cast<double>(total_bytes_)
                        : (total_paths_ > 0 ? static_cast<double>(paths_done_) / static_cast<double>(total_paths_) : 1);
  fraction = std::clamp(fraction, 0.0, 1.0);
  constexpr int kWidth = 24;
  std::string bar(kWidth, ' ');
  int filled = static_cast<int>(fraction * kWidth);
  for (int i = 0; i < filled; ++i) bar[static_cast<size_t>(i)] = '=';
  if (filled < kWidth) bar[static_cast<size_t>(filled)] = '>';
  std::string eta = "--:--";
  if (rate > 0 && total_bytes_ >= bytes_done_) {
    eta = format_duration(static_cast<double>(total_bytes_ - bytes_done_) / rate);
  }
  std::fprintf(out_, "\r\033[K[%s] %" PRIu64 "/%" PRIu64 " paths  %s/%s  %s/s  ETA %s", bar.c_str(), paths_done_,
               total_paths_, format_bytes(bytes_done_).c_str(), format_bytes(total_bytes_).c_str(),
               format_bytes(static_cast<uint64_t>(rate)).c_str(), eta.c_str());
  std::fflush(out_);
  bar_visible_ = true;
}

}  // namespace lazystore
