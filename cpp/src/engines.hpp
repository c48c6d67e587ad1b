// The per-ISA engines (isa_*.cpp), declared for the dispatcher in mlp.cpp.
#pragma once

#include "mlpgrad/mlp.hpp"

namespace mlpgrad {

enum class Mode { probs, loss, grad };

#define MLPGRAD_DECLARE_ENGINE(isa)                                                                        \
  namespace isa {                                                                                          \
  using mlpgrad::Mode;                                                                                     \
  template <typename T>                                                                                    \
  double run(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,                 \
             const Gradients<T>* grads, T* probs, Mode mode, int n_threads, const Interrupt* interrupt);     \
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
