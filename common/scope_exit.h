// Runs a function when the scope ends, on every path (return, error, exception), unless
// released: the one home of "undo this unless we got to the end".
#pragma once

#include <utility>

namespace lazystore {

template <class F>
class [[nodiscard]] ScopeExit {
 public:
  explicit ScopeExit(F f) : f_(std::move(f)) {}
  ~ScopeExit() {
    if (active_) f_();
  }
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;

  void release() { active_ = false; }

 private:
  F f_;
  bool active_ = true;
};

}  // namespace lazystore
