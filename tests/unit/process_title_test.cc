// What ps shows: the supervisor and the servers tell themselves apart, argv[0] stays.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>

#include "process_title.h"

namespace lazystore {
namespace {

std::string cmdline_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(ProcessTitle, ReplacesTheCommandLineKeepingArgv0) {
  std::string before = cmdline_of(getpid());
  std::string argv0 = before.c_str();
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool ok = set_process_title({"[server 2]", "/nix/store"});
    char byte = ok ? 1 : 0;
    (void)!write(ready[1], &byte, 1);
    pause();
    _exit(0);
  }
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  std::string title = cmdline_of(pid);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  close(ready[0]);
  close(ready[1]);
  ASSERT_EQ(byte, 1) << "set_process_title found no command line";
  EXPECT_EQ(title.size(), before.size());  // the same area, padded with NULs
  std::string expected = argv0 + '\0' + "[server 2]" + '\0' + "/nix/store";
  size_t n = std::min(expected.size(), title.size() - 1);  // a short command line cuts the title
  EXPECT_EQ(title.substr(0, n), expected.substr(0, n));
  EXPECT_EQ(title.find_first_not_of('\0', n), std::string::npos);
}

}  // namespace
}  // namespace lazystore
