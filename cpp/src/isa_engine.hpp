// What each isa_*.cpp compiles for its instruction-set level (MLPGRAD_ISA): the engine's entry points, the
// matrix product's test entry and the FMA peak's loop, for float and double.
#pragma once

#include <vector>

#include "curvature.hpp"
#include "engines.hpp"
#include "gram.hpp"
#include "network.hpp"
#include "peak.hpp"
#include "per_sample.hpp"

namespace mlpgrad::MLPGRAD_ISA {

template <typename T> void gemm_for_tests(const GemmTestCase<T>& c) {
  std::vector<T> scratch(GemmScratch<T>::size), panels;
  const T* Bp = nullptr;
  if (c.prepacked) {
    panels.resize(panels_size<T>(c.k, c.n));
    pack_b_panels<T>(c.k, c.n, c.B, c.rsb, c.csb, panels.data());
    Bp = panels.data();
  }
  gemm<T>({c.C, c.ldc}, c.accumulate, {c.A, c.rsa, c.csa}, Bp, {c.B, c.rsb, c.csb}, c.m, c.n, c.k,
          GemmScratch<T>(scratch.data()), NoEpilogue(), c.prepacked ? nullptr : c.bsum);
}

#define MLPGRAD_INSTANTIATE(T)                                                                               \
  template double run<T>(const Network<T>&, Head, const Batch<T>&, Reduction, const Gradients<T>*, T*, Mode, int, \
                         const Interrupt*, const ParamHook*);                                               \
  template double run_per_sample<T>(const Network<T>&, Head, const Batch<T>&, Reduction,                     \
                                    const PerSampleRequest<T>&, int, const Interrupt*);                       \
  template double run_curvature<T>(const Network<T>&, Head, const Batch<T>&, Reduction,                     \
                                   const CurvatureRequest<T>&, int, const Interrupt*);                       \
  template void run_gram<T>(const Network<T>&, Head, const Batch<T>&, const Batch<T>&, T*, int, const Interrupt*); \
  template void gemm_for_tests<T>(const GemmTestCase<T>&);                                                   \
  template PeakRun fma_run<T>(int64_t, int);
MLPGRAD_INSTANTIATE(float)
MLPGRAD_INSTANTIATE(double)
#undef MLPGRAD_INSTANTIATE

}  // namespace mlpgrad::MLPGRAD_ISA
