// The FMA peak's loop (mlpgrad/peak.hpp), compiled once per instruction set (isa_*.cpp): every thread of one
// parallel region runs independent chains acc = acc * a + b held in registers, with no memory traffic.
#pragma once

#include <chrono>
#include <cstdint>

#include "engines.hpp"
#include "parallel.hpp"
#include "simd.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// Chains per thread: enough to hide the FMA latency (4-5 cycles) on both FMA ports, 8-10 in flight. With 16
// vector registers (SSE, AVX2) 12 chains leave room for the two operands; AVX-512's 32 registers hold 24.
constexpr int kPeakChains = kVecBytes == 64 ? 24 : 12;

// iters rounds of kPeakChains fused multiply-adds; the sum of the chains' lanes, so that nothing is dead code.
// acc converges to b / (1 - a): no overflow, no subnormals, whatever iters is.
template <typename T>
T fma_chains(int64_t iters, T seed) {
  const Vec<T> a = splat<T>(T(0.999999)), b = splat<T>(seed);
  Vec<T> acc[kPeakChains];
#pragma GCC unroll 32
  for (int c = 0; c < kPeakChains; ++c) acc[c] = splat<T>(T(c));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 32
    for (int c = 0; c < kPeakChains; ++c) acc[c] = vfma<T>(acc[c], a, b);
  }
  Vec<T> s = acc[0];
#pragma GCC unroll 32
  for (int c = 1; c < kPeakChains; ++c) s += acc[c];
  T r = 0;
  for (int j = 0; j < kLanes<T>; ++j) r += s[j];
  return r;
}

// One timed run: every thread of the region runs fma_chains(iters); the time from the barrier before the
// loops to the barrier after them. The chains' sum is returned (to another translation unit): the loops are
// not dead code.
template <typename T>
PeakRun fma_run(int64_t iters, int n_threads) {
  using clock = std::chrono::steady_clock;
  const int threads = thread_count(n_threads, int64_t(1) << 20);
  int team = 1;
  clock::time_point start, stop;
  double sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
  {
#pragma omp barrier
#pragma omp master
    {
#ifdef _OPENMP
      team = omp_get_num_threads();
#endif
      start = clock::now();
    }
#pragma omp barrier
    sum += double(fma_chains<T>(iters, T(1e-6) * T(1 + thread_id())));
#pragma omp barrier
#pragma omp master
    stop = clock::now();
  }
  const double flops = 2.0 * kLanes<T> * kPeakChains * double(iters) * team;
  return {flops, std::chrono::duration<double>(stop - start).count(), team, sum};
}

}  // namespace mlpgrad::MLPGRAD_ISA
