// The per-ISA engines (isa_*.cpp), declared for the dispatchers (mlp.cpp, per_sample.cpp, curvature.cpp, peak.cpp)
// and their matrix product for the C++ tests.
#pragma once

#include <cstdint>

#include "mlpgrad/mlp.hpp"
#include "mlpgrad/curvature.hpp"
#include "mlpgrad/per_sample.hpp"

namespace mlpgrad {

enum class Mode { probs, loss, grad };

// Work on the finished gradient inside the engine's parallel region (the optimizer step of train_epoch):
// apply(ctx, begin, end, block) for the blocks [block kBlock, ...) of the flat parameters in pack order,
// shared among the threads, once every gradient element is final. The blocks depend on P alone.
struct ParamHook {
  static constexpr int64_t kBlock = 4096;
  void (*apply)(void* ctx, int64_t begin, int64_t end, int64_t block) = nullptr;
  void* ctx = nullptr;
  static int64_t blocks(int64_t n_params) { return (n_params + kBlock - 1) / kBlock; }
  void run_block(int64_t n_params, int64_t b) const {
    apply(ctx, b * kBlock, b * kBlock + kBlock < n_params ? b * kBlock + kBlock : n_params, b);
  }
};

// loss_and_grad (mlp.hpp) with the gradients in one flat buffer (grads from Layout::gradients) and `hook`
// applied to it before the threads end.
template <typename T>
double loss_and_grad_hooked(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                            const Gradients<T>& grads, const ParamHook& hook, int n_threads,
                            const Interrupt* interrupt = nullptr);

// One matrix product for the C++ tests (cpp/tests/test_core.cpp), run by one ISA's gemm():
//   C (m, n) = [C +] A (m, k) @ B (k, n), row stride ldc;
// element (i, p) of A at A[i rsa + p csa], (p, j) of B at B[p rsb + j csb]. prepacked: B is packed as full-K
// panels first, as the engine does with weights; otherwise gemm packs it, and bsum (if not null) receives
// += the column sums of B, as for a bias gradient.
template <typename T> struct GemmTestCase {
  int64_t m, n, k;
  const T* A;
  int64_t rsa, csa;
  const T* B;
  int64_t rsb, csb;
  bool prepacked;
  T* C;
  int64_t ldc;
  bool accumulate;
  T* bsum;
};

// One timed run of the FMA peak's loop (peak.hpp): the flops done by `threads` threads in `seconds`, and the
// sum of their accumulators (which keeps the loops alive).
struct PeakRun {
  double flops, seconds;
  int threads;
  double sum;
};

#define MLPGRAD_DECLARE_ENGINE(isa)                                                                        \
  namespace isa {                                                                                          \
  using mlpgrad::Mode;                                                                                     \
  template <typename T>                                                                                    \
  double run(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,                 \
             const Gradients<T>* grads, T* probs, Mode mode, int n_threads, const Interrupt* interrupt,      \
             const ParamHook* hook = nullptr);                                                             \
  template <typename T>                                                                                    \
  double run_per_sample(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,      \
                        const PerSampleRequest<T>& request, int n_threads, const Interrupt* interrupt);      \
  template <typename T>                                                                                    \
  double run_curvature(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,       \
                       const CurvatureRequest<T>& request, int n_threads, const Interrupt* interrupt);       \
  template <typename T>                                                                                    \
  void run_gram(const Network<T>& net, Head head, const Batch<T>& a, const Batch<T>& b, T* K, int n_threads, \
                const Interrupt* interrupt);                                                               \
  template <typename T>                                                                                    \
  void gemm_for_tests(const GemmTestCase<T>& c);                                                           \
  template <typename T>                                                                                    \
  PeakRun fma_run(int64_t iters, int n_threads);                                                           \
  }

MLPGRAD_DECLARE_ENGINE(generic)
#ifdef MLPGRAD_HAVE_AVX2
MLPGRAD_DECLARE_ENGINE(avx2)
#endif
#ifdef MLPGRAD_HAVE_AVX512
MLPGRAD_DECLARE_ENGINE(avx512)
#endif
#undef MLPGRAD_DECLARE_ENGINE

}  // namespace mlpgrad
