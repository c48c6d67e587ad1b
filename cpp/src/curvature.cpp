// The curvature entry point (mlpgrad/curvature.hpp): check the request, run the engine of the active
// instruction set.
#include "mlpgrad/curvature.hpp"

#include <stdexcept>
#include <string>

#include "engines.hpp"

namespace mlpgrad {

template <typename T>
double curvature(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                 const CurvatureRequest<T>& q, int n_threads, const Interrupt* interrupt) {
  Batch<T> b = batch;
  b.total_weight = check<T>(net, head, &batch, reduction, true);
  if (q.op != CurvatureOp::hvp && q.op != CurvatureOp::ggn_vp && q.op != CurvatureOp::ggn_diag)
    throw std::invalid_argument("curvature: unknown request");
  if (q.op != CurvatureOp::ggn_diag && (q.m < 1 || !q.V))
    throw std::invalid_argument("curvature: V must hold at least one vector");
  if (!q.out) throw std::invalid_argument("curvature: the output is null");
  switch (active_isa()) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: return avx512::run_curvature<T>(net, head, b, reduction, q, n_threads, interrupt);
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: return avx2::run_curvature<T>(net, head, b, reduction, q, n_threads, interrupt);
#endif
    default: return generic::run_curvature<T>(net, head, b, reduction, q, n_threads, interrupt);
  }
}

template double curvature<float>(const Network<float>&, Head, const Batch<float>&, Reduction,
                                 const CurvatureRequest<float>&, int, const Interrupt*);
template double curvature<double>(const Network<double>&, Head, const Batch<double>&, Reduction,
                                  const CurvatureRequest<double>&, int, const Interrupt*);

}  // namespace mlpgrad
