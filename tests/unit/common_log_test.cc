// Log lines are "PROGRAM: level: message", one write each, filtered by level.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "log.h"

namespace lazystore {
namespace {

// Sends fd 2 to a temporary file for the lifetime of the object.
class StderrCapture {
 public:
  StderrCapture() {
    file_ = std::tmpfile();
    saved_ = dup(STDERR_FILENO);
    dup2(fileno(file_), STDERR_FILENO);
  }
  ~StderrCapture() {
    restore();
    std::fclose(file_);
  }
  std::string text() {
    restore();
    std::string out;
    std::rewind(file_);
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, file_)) out.append(buf, n);
    return out;
  }

 private:
  void restore() {
    if (saved_ >= 0) {
      dup2(saved_, STDERR_FILENO);
      close(saved_);
      saved_ = -1;
    }
  }
  FILE* file_ = nullptr;
  int saved_ = -1;
};

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_level_ = log_level(); }
  void TearDown() override {
    set_log_level(saved_level_);
    set_log_program("lazystore");
  }
  LogLevel saved_level_{};
};

TEST_F(LogTest, ParsesLevels) {
  LogLevel level = LogLevel::Error;
  EXPECT_TRUE(parse_log_level("debug", level));
  EXPECT_EQ(level, LogLevel::Debug);
  EXPECT_TRUE(parse_log_level("info", level));
  EXPECT_EQ(level, LogLevel::Info);
  EXPECT_TRUE(parse_log_level("warning", level));
  EXPECT_EQ(level, LogLevel::Warning);
  EXPECT_TRUE(parse_log_level("error", level));
  EXPECT_EQ(level, LogLevel::Error);
  for (const char* bad : {"", "Debug", "warn", "errors", "3", "info "}) {
    EXPECT_FALSE(parse_log_level(bad, level)) << bad;
  }
  EXPECT_EQ(level, LogLevel::Error);
}

TEST_F(LogTest, FormatsAndFilters) {
  StderrCapture capture;
  set_log_program("lazystore-test");
  set_log_level(LogLevel::Warning);
  LOG_ERROR("disk %s is full", "/var/cache");
  LOG_WARNING("%d retries", 3);
  LOG_INFO("not shown");
  LOG_DEBUG("not shown either");
  set_log_level(LogLevel::Debug);
  LOG_DEBUG("trailing newline is not doubled\n");
  LOG_INFO("%s", std::string(2000, 'x').c_str());
  EXPECT_EQ(capture.text(), "lazystore-test: error: disk /var/cache is full\n"
                            "lazystore-test: warning: 3 retries\n"
                            "lazystore-test: debug: trailing newline is not doubled\n"
                            "lazystore-test: info: " + std::string(2000, 'x') + "\n");
}

TEST_F(LogTest, ConcurrentLinesStayWhole) {
  StderrCapture capture;
  set_log_level(LogLevel::Info);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) LOG_INFO("thread %d line %d %s", t, i, "payload payload");
    });
  }
  for (auto& thread : threads) thread.join();
  std::istringstream lines(capture.text());
  std::string line;
  std::map<int, int> next;
  int count = 0;
  while (std::getline(lines, line)) {
    int t = -1, i = -1;
    ASSERT_EQ(std::sscanf(line.c_str(), "lazystore: info: thread %d line %d", &t, &i), 2) << line;
    EXPECT_EQ(line, "lazystore: info: thread " + std::to_string(t) + " line " + std::to_string(i) +
                        " payload payload");
    EXPECT_EQ(next[t]++, i);  // each thread's lines in order, none lost
    ++count;
  }
  EXPECT_EQ(count, 8 * 200);
}

TEST_F(LogTest, ObserverSeesWhatIsLoggedUntilRemoved) {
  StderrCapture capture;
  set_log_level(LogLevel::Warning);
  std::vector<std::pair<LogLevel, std::string>> seen;
  set_log_observer(
      [](void* context, LogLevel level, std::string_view message) {
        static_cast<std::vector<std::pair<LogLevel, std::string>>*>(context)->emplace_back(level, message);
      },
      &seen);
  LOG_WARNING("cache disk %s is full\n", "/var");
  LOG_INFO("below the level: not formatted, not observed");
  LOG_ERROR("upstream gone");
  set_log_observer(nullptr, nullptr);
  LOG_ERROR("after removal");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(LogLevel::Warning, std::string("cache disk /var is full")));
  EXPECT_EQ(seen[1], std::make_pair(LogLevel::Error, std::string("upstream gone")));
  EXPECT_EQ(log_level_name(LogLevel::Warning), "warning");
  EXPECT_NE(capture.text().find("after removal"), std::string::npos);  // stderr still gets all
}

}  // namespace
}  // namespace lazystore
