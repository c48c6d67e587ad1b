// Interrupt polls at a limited rate, shared by the engines (network.hpp) and the training loop (train.cpp).
#pragma once

#include <chrono>

#include "mlpgrad/mlp.hpp"

namespace mlpgrad {

// due_and_stop(): polls the interrupt (if any) when kInterruptPollMs have passed since the last poll, the
// first call included, and returns what the poll said (true: stop). A poll takes Python's GIL. Defined in
// mlp.cpp, outside the per-ISA builds, so every engine links the one baseline definition.
class PollTimer {
 public:
  explicit PollTimer(const Interrupt* intr) : intr_(intr && intr->poll ? intr : nullptr) {}
  bool due_and_stop();

 private:
  const Interrupt* intr_;
  std::chrono::steady_clock::time_point next_{};
};

}  // namespace mlpgrad
