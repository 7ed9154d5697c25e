// A fake kernel for tests of the FUSE request path: a SOCK_SEQPACKET socket pair keeps the
// message boundaries /dev/fuse has. The test writes requests on one end and reads replies; the
// code under test reads and writes the other.
#pragma once

#include <linux/fuse.h>
#include <sys/socket.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fd.h"

namespace lazystore {

constexpr size_t kLibfuseBuffer = 256 * 4096 + 4096;  // what libfuse 3.14 reads with

struct FakeKernel {
  Fd kernel, server;  // the server end is what the daemon reads and writes
  FakeKernel() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
    kernel.reset(fds[0]);
    server.reset(fds[1]);
  }
  // Sends a request: a header and `args` bytes; returns its bytes.
  std::string send(uint32_t opcode, uint64_t unique, std::string args, uint64_t nodeid = 1) {
    fuse_in_header h{};
    h.len = static_cast<uint32_t>(sizeof h + args.size());
    h.opcode = opcode;
    h.unique = unique;
    h.nodeid = nodeid;
    std::string bytes(reinterpret_cast<const char*>(&h), sizeof h);
    bytes += args;
    EXPECT_EQ(::send(kernel.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    return bytes;
  }
  // The next reply the daemon wrote.
  fuse_out_header reply() {
    std::vector<char> buf(1 << 16);
    ssize_t n = recv(kernel.get(), buf.data(), buf.size(), 0);
    EXPECT_GE(n, static_cast<ssize_t>(sizeof(fuse_out_header)));
    fuse_out_header h{};
    std::memcpy(&h, buf.data(), sizeof h);
    return h;
  }
};

// FUSE_INIT's arguments from a kernel of protocol 7.31.
inline std::string init_args() {
  fuse_init_in in{};
  in.major = FUSE_KERNEL_VERSION;
  in.minor = 31;
  in.max_readahead = 128 * 1024;
  return std::string(reinterpret_cast<const char*>(&in), sizeof in);
}

inline std::string lookup_args(const std::string& name) { return name + std::string(1, '\0'); }

}  // namespace lazystore
