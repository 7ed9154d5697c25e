// The request journal against a fake kernel (a SOCK_SEQPACKET socket pair keeps the message
// boundaries /dev/fuse has): a request read and not answered by a server that dies is taken over
// by the next, exactly once, with its bytes; one answered is not; FORGET never is; one larger
// than a slot keeps its header; and a replay goes through libfuse and answers the kernel.
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fake_fuse_kernel.h"
#include "fd.h"
#include "request_journal.h"

namespace lazystore {
namespace {

void answer(RequestJournal& journal, int fd, uint64_t unique, int error = 0) {
  fuse_out_header h{sizeof(fuse_out_header), error, unique};
  iovec part{&h, sizeof h};
  ASSERT_EQ(journal.write_reply(fd, &part, 1), static_cast<ssize_t>(sizeof h));
}

// Runs `server` in a child process that then dies without cleaning up (as a kill -9 does).
void in_a_server_that_dies(const std::function<void()>& server) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    server();
    _exit(testing::Test::HasFailure() ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the server process failed";
}

TEST(RequestJournal, ARequestReadAndNotAnsweredIsTakenOverOnceWithItsBytes) {
  auto journal = RequestJournal::create(4);
  ASSERT_TRUE(journal.ok());
  FakeKernel kernel;
  std::string answered_one = kernel.send(FUSE_GETATTR, 10, std::string(16, '\0'));
  std::string in_flight = kernel.send(FUSE_LOOKUP, 12, lookup_args("bin"));
  in_a_server_that_dies([&] {
    journal->take_over(1);
    std::vector<char> buf(kLibfuseBuffer);
    ASSERT_EQ(journal->read_request(kernel.server.get(), buf.data(), buf.size()),
              static_cast<ssize_t>(answered_one.size()));
    EXPECT_EQ(std::string(buf.data(), answered_one.size()), answered_one);
    answer(*journal, kernel.server.get(), 10);
    std::thread other([&] {  // another reader thread, with its own slot
      std::vector<char> mine(kLibfuseBuffer);
      ASSERT_EQ(journal->read_request(kernel.server.get(), mine.data(), mine.size()),
                static_cast<ssize_t>(in_flight.size()));
      EXPECT_EQ(std::string(mine.data(), in_flight.size()), in_flight);
      EXPECT_EQ(journal->slots_in_use(), 2u);
      _exit(testing::Test::HasFailure() ? 1 : 0);  // killed while the upstream is asked
    });
    other.join();
  });
  EXPECT_EQ(kernel.reply().unique, 10u);

  journal->take_over(2);
  EXPECT_FALSE(journal->take_init().has_value());
  auto pending = journal->take_pending();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].unique, 12u);
  EXPECT_EQ(pending[0].opcode, static_cast<uint32_t>(FUSE_LOOKUP));
  EXPECT_TRUE(pending[0].fits());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(pending[0].bytes.data()), in_flight.size()), in_flight);
  EXPECT_EQ(journal->slots_in_use(), 1u);  // held until it is answered
  journal->discard(pending[0]);
  EXPECT_EQ(journal->slots_in_use(), 0u);
  journal->take_over(3);
  EXPECT_TRUE(journal->take_pending().empty());  // once
}

TEST(RequestJournal, ASplicedReplyClearsTheRequestOfItsThread) {
  auto journal = RequestJournal::create(4);
  ASSERT_TRUE(journal.ok());
  FakeKernel kernel;
  kernel.send(FUSE_READ, 14, std::string(40, '\0'));
  kernel.send(FUSE_READ, 16, std::string(40, '\0'));
  int to_kernel[2];
  ASSERT_EQ(pipe(to_kernel), 0);
  Fd kernel_end(to_kernel[0]), device_end(to_kernel[1]);
  in_a_server_that_dies([&] {
    journal->take_over(1);
    std::vector<char> buf(kLibfuseBuffer);
    ASSERT_GT(journal->read_request(kernel.server.get(), buf.data(), buf.size()), 0);
    // As libfuse answers a read from a cache file: header and data in a pipe, spliced on.
    int spliced[2];
    ASSERT_EQ(pipe(spliced), 0);
    fuse_out_header h{sizeof(fuse_out_header) + 5, 0, 14};
    ASSERT_EQ(write(spliced[1], &h, sizeof h), static_cast<ssize_t>(sizeof h));
    ASSERT_EQ(write(spliced[1], "bytes", 5), 5);
    EXPECT_EQ(journal->splice_reply(spliced[0], nullptr, device_end.get(), nullptr, h.len, 0),
              static_cast<ssize_t>(h.len));
    std::thread other([&] {  // another thread's request stays
      std::vector<char> mine(kLibfuseBuffer);
      ASSERT_GT(journal->read_request(kernel.server.get(), mine.data(), mine.size()), 0);
      _exit(testing::Test::HasFailure() ? 1 : 0);
    });
    other.join();
  });
  fuse_out_header reply{};
  ASSERT_EQ(read(kernel_end.get(), &reply, sizeof reply), static_cast<ssize_t>(sizeof reply));
  EXPECT_EQ(reply.unique, 14u);
  journal->take_over(2);
  auto pending = journal->take_pending();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].unique, 16u);
}

TEST(RequestJournal, ForgetsAndInterruptsAreNeverTakenOver) {
  auto journal = RequestJournal::create(4);
  ASSERT_TRUE(journal.ok());
  FakeKernel kernel;
  kernel.send(FUSE_FORGET, 20, std::string(8, '\1'), 77);
  kernel.send(FUSE_BATCH_FORGET, 22, std::string(24, '\1'));
  kernel.send(FUSE_INTERRUPT, 25, std::string(8, '\0'));
  in_a_server_that_dies([&] {
    journal->take_over(1);
    std::mutex mutex;
    std::condition_variable changed;
    int read = 0;
    std::vector<std::thread> readers;
    for (int i = 0; i < 3; ++i) {
      readers.emplace_back([&] {  // each in its own slot, all still holding it at the kill
        std::vector<char> mine(kLibfuseBuffer);
        EXPECT_GT(journal->read_request(kernel.server.get(), mine.data(), mine.size()), 0);
        std::unique_lock lock(mutex);
        read++;
        changed.notify_all();
        changed.wait(lock, [] { return false; });
      });
    }
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return read == 3; });
    EXPECT_EQ(journal->slots_in_use(), 3u);
    _exit(testing::Test::HasFailure() ? 1 : 0);
  });
  journal->take_over(2);
  EXPECT_TRUE(journal->take_pending().empty());
  EXPECT_EQ(journal->slots_in_use(), 0u);
}

TEST(RequestJournal, ARequestLargerThanASlotReachesLibfuseWholeAndKeepsItsHeader) {
  auto journal = RequestJournal::create(2);
  ASSERT_TRUE(journal.ok());
  FakeKernel kernel;
  std::string args(6000, '\0');
  for (size_t i = 0; i < args.size(); ++i) args[i] = static_cast<char>('a' + i % 26);
  std::string big = kernel.send(FUSE_GETXATTR, 30, args);
  in_a_server_that_dies([&] {
    journal->take_over(1);
    std::vector<char> buf(kLibfuseBuffer);
    ASSERT_EQ(journal->read_request(kernel.server.get(), buf.data(), buf.size()), static_cast<ssize_t>(big.size()));
    EXPECT_EQ(std::string(buf.data(), big.size()), big);  // across the slot's end
  });
  journal->take_over(2);
  auto pending = journal->take_pending();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_FALSE(pending[0].fits());
  EXPECT_EQ(pending[0].unique, 30u);
  EXPECT_EQ(pending[0].length, big.size());
}

TEST(RequestJournal, AReaderWaitsForAFreeSlotRatherThanReadUnrecorded) {
  auto journal = RequestJournal::create(1);
  ASSERT_TRUE(journal.ok());
  FakeKernel kernel;
  kernel.send(FUSE_GETATTR, 40, std::string(16, '\0'));
  std::string second = kernel.send(FUSE_LOOKUP, 42, lookup_args("lib"));
  in_a_server_that_dies([&] {
    journal->take_over(1);
    std::thread first([&] {
      std::vector<char> buf(kLibfuseBuffer);
      EXPECT_GT(journal->read_request(kernel.server.get(), buf.data(), buf.size()), 0);
      std::thread waiting([&] {  // the only slot is taken: waits until `first` has answered
        std::vector<char> mine(kLibfuseBuffer);
        EXPECT_GT(journal->read_request(kernel.server.get(), mine.data(), mine.size()), 0);
        _exit(testing::Test::HasFailure() ? 1 : 0);
      });
      answer(*journal, kernel.server.get(), 40);
      journal->leave_thread_slot();
      waiting.join();
    });
    first.join();
  });
  journal->take_over(2);
  auto pending = journal->take_pending();
  ASSERT_EQ(pending.size(), 1u);  // the second request was recorded in the freed slot
  EXPECT_EQ(pending[0].unique, 42u);
}

// The whole path through libfuse: a server reads INIT and a GETATTR and dies; the next one
// replays INIT, then the GETATTR, and the kernel gets its answer.
struct Served {
  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    struct stat st {};
    st.st_ino = ino;
    st.st_mode = S_IFDIR | 0555;
    fuse_reply_attr(req, &st, 1.0);
  }
};

fuse_session* new_session() {
  static fuse_lowlevel_ops ops{};
  ops.getattr = Served::getattr;
  char arg0[] = "request_journal_test";
  char* argv[] = {arg0, nullptr};
  fuse_args args = FUSE_ARGS_INIT(1, argv);
  fuse_session* session = fuse_session_new(&args, &ops, sizeof ops, nullptr);
  fuse_opt_free_args(&args);
  return session;
}

TEST(RequestJournal, AReplayGoesThroughLibfuseAndAnswersTheKernel) {
  auto journal = RequestJournal::create(4);
  ASSERT_TRUE(journal.ok());
  FakeKernel kernel;
  std::string init = kernel.send(FUSE_INIT, 2, init_args());
  kernel.send(FUSE_GETATTR, 4, std::string(16, '\0'));
  in_a_server_that_dies([&] {
    fuse_session* session = new_session();
    ASSERT_NE(session, nullptr);
    ASSERT_TRUE(journal->attach(session, dup(kernel.server.get()), 1).ok());
    fuse_buf buf{};
    ASSERT_GT(fuse_session_receive_buf(session, &buf), 0);
    fuse_session_process_buf(session, &buf);                // INIT answered
    ASSERT_GT(fuse_session_receive_buf(session, &buf), 0);  // GETATTR read, then the kill
  });
  fuse_out_header init_reply = kernel.reply();
  EXPECT_EQ(init_reply.unique, 2u);
  EXPECT_EQ(init_reply.error, 0);

  fuse_session* session = new_session();
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(journal->attach(session, dup(kernel.server.get()), 2).ok());
  EXPECT_FALSE(journal->take_init().has_value());  // answered before the kill
  std::vector<unsigned char> copy(init.begin(), init.end());
  fuse_buf replayed{};
  replayed.size = copy.size();
  replayed.mem = copy.data();
  fuse_session_process_buf(session, &replayed);  // what start_session does with the INIT copy
  EXPECT_EQ(kernel.reply().unique, 2u);          // (a real kernel refuses this one)
  auto pending = journal->take_pending();
  ASSERT_EQ(pending.size(), 1u);
  journal->replay(session, pending[0], false);
  fuse_out_header reply = kernel.reply();
  EXPECT_EQ(reply.unique, 4u);
  EXPECT_EQ(reply.error, 0);
  EXPECT_EQ(journal->slots_in_use(), 0u);
  fuse_session_destroy(session);
}

TEST(RequestJournal, AnInitReadAndNotAnsweredIsTakenOverAndAnswered) {
  auto journal = RequestJournal::create(4);
  ASSERT_TRUE(journal.ok());
  FakeKernel kernel;
  kernel.send(FUSE_INIT, 2, init_args());
  in_a_server_that_dies([&] {
    fuse_session* session = new_session();
    ASSERT_NE(session, nullptr);
    ASSERT_TRUE(journal->attach(session, dup(kernel.server.get()), 1).ok());
    fuse_buf buf{};
    ASSERT_GT(fuse_session_receive_buf(session, &buf), 0);  // killed before answering
  });
  fuse_session* session = new_session();
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(journal->attach(session, dup(kernel.server.get()), 2).ok());
  auto init = journal->take_init();
  ASSERT_TRUE(init.has_value());
  EXPECT_EQ(init->opcode, static_cast<uint32_t>(FUSE_INIT));
  EXPECT_TRUE(journal->take_pending().empty());
  journal->replay(session, *init, false);
  fuse_out_header reply = kernel.reply();
  EXPECT_EQ(reply.unique, 2u);
  EXPECT_EQ(reply.error, 0);
  EXPECT_EQ(journal->slots_in_use(), 0u);
  fuse_session_destroy(session);
}

}  // namespace
}  // namespace lazystore
