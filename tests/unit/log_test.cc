// Log lines are "PROGRAM: level: message", one write each, filtered by level; a log file gets
// them with time and pid; a detached process keeps stderr unless syslog or a file takes over.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <regex>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "log.h"
#include "test_support.h"

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
  EXPECT_EQ(capture.text(),
            "lazystore-test: error: disk /var/cache is full\n"
            "lazystore-test: warning: 3 retries\n"
            "lazystore-test: debug: trailing newline is not doubled\n"
            "lazystore-test: info: " +
                std::string(2000, 'x') + "\n");
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
    EXPECT_EQ(line, "lazystore: info: thread " + std::to_string(t) + " line " + std::to_string(i) + " payload payload");
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

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs `body` in a child process (detach_logging changes fds 0-2 for good); true if it exited 0.
template <class Body>
bool in_child(Body body) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST_F(LogTest, ALogFileGetsEveryLineWithTimeAndPid) {
  TempDir dir;
  std::string path = dir / "daemon.log";
  StderrCapture capture;
  ASSERT_TRUE(in_child([&] {
    if (!set_log_file(path)) _exit(1);
    LOG_WARNING("first %d", 1);
    LOG_ERROR("second");
  }));
  std::string text = read_all(path);
  std::regex lines(R"((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z lazystore\[\d+\]: )"
                   R"((warning: first 1|error: second)\n){2})");
  EXPECT_TRUE(std::regex_match(text, lines)) << text;
  // In the foreground the lines reach stderr as well.
  EXPECT_EQ(capture.text(), "lazystore: warning: first 1\nlazystore: error: second\n");
}

TEST_F(LogTest, AnUnwritableLogFileIsRefusedWithItsPath) {
  auto opened = set_log_file("/nonexistent-directory/daemon.log");
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message.find("/nonexistent-directory/daemon.log"), std::string::npos);
}

TEST_F(LogTest, DetachedWithALogFileOnlyTheFileGetsLines) {
  TempDir dir;
  std::string path = dir / "daemon.log";
  StderrCapture capture;
  ASSERT_TRUE(in_child([&] {
    if (!set_log_file(path)) _exit(1);
    LOG_WARNING("before");
    detach_logging();
    LOG_WARNING("after");
    if (log_destination() != path) _exit(2);
  }));
  EXPECT_EQ(capture.text(), "lazystore: warning: before\n");
  std::string text = read_all(path);
  EXPECT_NE(text.find("warning: before\n"), std::string::npos) << text;
  EXPECT_NE(text.find("warning: after\n"), std::string::npos) << text;
}

TEST_F(LogTest, DetachedWithoutSyslogStderrStays) {
  StderrCapture capture;
  bool syslog = syslog_available();
  ASSERT_TRUE(in_child([&] {
    detach_logging();
    LOG_WARNING("after detaching");
    if (log_destination() != (syslog ? "syslog" : "stderr")) _exit(2);
  }));
  // Where there is no /dev/log (most containers) the line must not vanish.
  EXPECT_EQ(capture.text(), syslog ? "" : "lazystore: warning: after detaching\n");
}

}  // namespace
}  // namespace lazystore
