#include "io.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "fd.h"
#include "unix_socket.h"
#include "test_support.h"

namespace lazystore {
namespace {

TEST(Io, PwriteAllWritesAtTheOffset) {
  char name[] = "/tmp/lazystore-io-XXXXXX";
  Fd fd(mkstemp(name));
  ASSERT_TRUE(fd);
  unlink(name);
  std::string data(100000, 'x');
  ASSERT_TRUE(pwrite_all(fd.get(), std::as_bytes(std::span(data)), 4096));
  struct stat st {};
  ASSERT_EQ(fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 4096 + 100000);
  EXPECT_FALSE(pwrite_all(-1, std::as_bytes(std::span(data)), 0));
}

TEST(Io, SendAllToAClosedPeerIsAnErrorNotASignal) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  Fd a(pair[0]);
  Fd b(pair[1]);
  ASSERT_TRUE(send_all(a.get(), "hello"));
  b.reset();
  auto sent = send_all(a.get(), std::string(1 << 20, 'y'));
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, EPIPE);
}

TEST(Io, WriteAllToAPipe) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  Fd r(pipe_fds[0]);
  Fd w(pipe_fds[1]);
  ASSERT_TRUE(write_all(w.get(), "abc"));
  char got[3];
  ASSERT_EQ(read(r.get(), got, 3), 3);
  EXPECT_EQ(std::string(got, 3), "abc");
}

TEST(UnixSocket, PathLengthIsChecked) {
  EXPECT_EQ(unix_socket_address("").error().code, EINVAL);
  EXPECT_EQ(unix_socket_address(std::string(108, 'a')).error().code, ENAMETOOLONG);
  EXPECT_TRUE(unix_socket_address(std::string(107, 'a')));
}

TEST(UnixSocket, ListenThenConnect) {
  TempDir dir("lazystore-sock");
  std::string path = dir / "s";
  EXPECT_EQ(connect_unix_socket(path).error().code, ENOENT);
  auto listener = listen_unix_socket(path, 4);
  ASSERT_TRUE(listener) << listener.error().message;
  EXPECT_EQ(listen_unix_socket(path, 4).error().code, EADDRINUSE);
  auto client = connect_unix_socket(path);
  ASSERT_TRUE(client) << client.error().message;
}

}  // namespace
}  // namespace lazystore
