// The FMA peak (mlpgrad/peak.hpp): the loop of the active instruction set, its length calibrated, the best of a
// few runs.
#include "mlpgrad/peak.hpp"

#include <algorithm>
#include <cstdint>

#include "config.hpp"
#include "engines.hpp"
#include "mlpgrad/mlp.hpp"

namespace mlpgrad {
namespace {

template <typename T>
PeakRun run_active(int64_t iters, int n_threads) {
  switch (active_isa()) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: return avx512::fma_run<T>(iters, n_threads);
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: return avx2::fma_run<T>(iters, n_threads);
#endif
    default: return generic::fma_run<T>(iters, n_threads);
  }
}

// Rounds per run for runs of about `seconds`: doubled from a short run until one lasts a tenth of that (which
// also lets the clock settle at the vector width's frequency), then scaled. On one thread: every thread runs the
// same rounds, and a thread of a team can wait milliseconds for a core on a busy machine, which would make the
// runs too short to measure anything but that wait.
template <typename T>
int64_t calibrate(double seconds) {
  int64_t iters = 1 << 10;
  PeakRun r = run_active<T>(iters, 1);
  while (r.seconds < seconds / 10 && iters < (int64_t(1) << 40)) {
    iters *= 2;
    r = run_active<T>(iters, 1);
  }
  return std::max<int64_t>(1, int64_t(double(iters) * seconds / std::max(r.seconds, 1e-9)));
}

}  // namespace

template <typename T>
double fma_peak(int n_threads) {
  const int64_t iters = calibrate<T>(config::kPeakRunSeconds);
  double best = 0;
  for (int i = 0; i < config::kPeakRuns; ++i) {
    const PeakRun r = run_active<T>(iters, n_threads);
    if (r.seconds > 0) best = std::max(best, r.flops / r.seconds * 1e-9);
  }
  return best;
}

template double fma_peak<float>(int);
template double fma_peak<double>(int);

}  // namespace mlpgrad
