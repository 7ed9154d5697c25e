// A child process with pipes on stdin, stdout and stderr, seen as a ByteStream: how
// lazystore-push talks to the local `nix-store --serve`.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "byte_stream.h"
#include "fd.h"
#include "result.h"

namespace lazystore {

class ChildProcess final : public ByteStream {
 public:
  // Starts argv[0] (looked up in PATH) with argv.
  static Result<ChildProcess> spawn(const std::vector<std::string>& argv);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Closes the pipes and reaps the child (terminating it if it is still running).
  ~ChildProcess() override;

  Result<size_t> read_some(std::span<std::byte> buffer) override;
  Status write_all(std::span<const std::byte> data) override;
  using ByteStream::write_all;
  Status close_write() override;
  std::string stderr_tail() override;

  // Closes stdin and waits; returns the exit status (128+signal when killed).
  Result<int> wait();

 private:
  ChildProcess(pid_t pid, Fd in, Fd out, Fd err)
      : pid_(pid), in_(std::move(in)), out_(std::move(out)), err_(std::move(err)) {}
  void drain_stderr();

  pid_t pid_ = -1;
  Fd in_;   // the child's stdin (we write)
  Fd out_;  // the child's stdout (we read)
  Fd err_;  // the child's stderr (we read, keep the tail)
  TailBuffer stderr_;
};

}  // namespace lazystore
