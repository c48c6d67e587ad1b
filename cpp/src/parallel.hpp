// Threads: how many, which one, the shared stop flag, and the fixed-order sum that makes results
// independent of their number.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "mlpgrad/mlp.hpp"
#include "poll.hpp"

#ifndef MLPGRAD_ISA
#error "define MLPGRAD_ISA (the per-ISA namespace) before including the kernels"
#endif

namespace mlpgrad::MLPGRAD_ISA {

// The requested thread count (0: OpenMP's default), never more than the units of work.
inline int thread_count(int requested, int64_t tasks) {
#ifdef _OPENMP
  const int64_t want = requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  const int64_t want = 1;
#endif
  return int(std::max<int64_t>(1, std::min<int64_t>(want, tasks)));
}

// The threads of the enclosing parallel region (1 outside one).
inline int omp_threads() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Ctrl-C: the calling thread (OpenMP thread 0) polls the interrupt before a unit of work, at most every
// kInterruptPollMs; every thread then sees `stopped` and skips its remaining units.
class StopFlag {
 public:
  explicit StopFlag(const Interrupt* intr) : timer_(intr) {}
  bool stopped() {
    if (thread_id() == 0 && timer_.due_and_stop()) stop_.store(true, std::memory_order_relaxed);
    return stop_.load(std::memory_order_relaxed);
  }
  bool raised() const { return stop_.load(std::memory_order_relaxed); }

 private:
  PollTimer timer_;
  std::atomic<bool> stop_{false};
};

// Sum of v[0..n) in a fixed pairwise order.
inline double pairwise_sum(const double* v, int64_t n) {
  if (n <= 8) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += v[i];
    return s;
  }
  return pairwise_sum(v, n / 2) + pairwise_sum(v + n / 2, n - n / 2);
}

}  // namespace mlpgrad::MLPGRAD_ISA
