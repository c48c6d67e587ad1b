// The machine's yardstick: the rate of a register-only loop of fused multiply-adds, the most any kernel of the
// active instruction set can reach on these threads. Plain C++17, nothing of Python.
#pragma once

namespace mlpgrad {

// GFLOP/s (2 flops per lane per fused multiply-add) of independent accumulator chains kept in registers, on
// the active instruction set (active_isa()) and n_threads threads (0: OpenMP's default) in one parallel region;
// the best of a few timed runs (config::kPeakRuns of about config::kPeakRunSeconds each), about 0.1 s in all.
template <typename T>
double fma_peak(int n_threads);

}  // namespace mlpgrad
