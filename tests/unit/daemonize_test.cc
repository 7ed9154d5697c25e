// No thread may run when the daemon forks (a child keeps only the forking thread), and the
// process that started the daemon exits with the status the background process reports.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "daemonize.h"

namespace lazystore {
namespace {

TEST(DaemonizeTest, AThreadRunningBeforeAForkAbortsWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        std::thread([] { std::this_thread::sleep_for(std::chrono::minutes(1)); }).detach();
        require_single_thread("a test fork");
      },
      "2 threads run before a test fork");
}

TEST(DaemonizeTest, AJoinedThreadIsNoThread) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // a fresh single-threaded process, whatever other tests left running
    for (int i = 0; i < 20; ++i) std::thread([] {}).join();
    require_single_thread("a test fork");
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// Runs `background` in a daemonized process; returns the exit status of the process that
// started it (what `lazystore` without -f exits with).
int status_of_daemon(void (*background)(Fd&)) {
  pid_t pid = fork();
  if (pid == 0) {
    auto report = daemonize();
    if (!report) _exit(99);
    background(*report);
    _exit(0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(DaemonizeTest, TheStarterExitsWithTheReportedStatus) {
  EXPECT_EQ(status_of_daemon([](Fd& report) { report_status(report, 0); }), 0);
  EXPECT_EQ(status_of_daemon([](Fd& report) { report_status(report, 3); }), 3);
  EXPECT_EQ(status_of_daemon([](Fd& report) {
              report_status(report, 0);
              report_status(report, 5);  // only the first word counts
            }),
            0);
  EXPECT_EQ(status_of_daemon([](Fd&) { _exit(7); }), 1);  // died without a word: a failure
}

}  // namespace
}  // namespace lazystore
