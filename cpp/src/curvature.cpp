// The curvature entry point (mlpgrad/curvature.hpp): check the request, run the engine of the active
// instruction set.
#include "mlpgrad/curvature.hpp"

#include <stdexcept>
#include <string>

#include "engines.hpp"
#include "mlpgrad/layout.hpp"
#include "slabs.hpp"

namespace mlpgrad {
namespace {

template <typename T>
double dispatch(const Network<T>& net, Head head, const Batch<T>& b, Reduction reduction, const CurvatureRequest<T>& q,
                int n_threads, const Interrupt* interrupt) {
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

// A sparse batch slab by slab (slabs.hpp): the slabs' products added to the first slab's in slab order.
template <typename T>
double curvature_slabs(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                       const CurvatureRequest<T>& q, int n_threads, const Interrupt* interrupt) {
  const int64_t size = Layout(net.sizes).n_params * (q.op == CurvatureOp::ggn_diag ? 1 : q.m);
  DenseSlabs<T> slabs(batch, net.sizes.front(), net.sizes.back());
  std::vector<T> part(size_t(slabs.count() > 1 ? size : 0));
  double loss = 0.0;
  for (int64_t s = 0; s < slabs.count(); ++s) {
    CurvatureRequest<T> qs = q;
    if (s > 0) qs.out = part.data();
    loss += dispatch<T>(net, head, slabs.slab(s), reduction, qs, n_threads, interrupt);
    if (s > 0) add_into<T>(q.out, part.data(), size);
  }
  return loss;
}

}  // namespace


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
  if (b.sparse() && b.n > 0) return curvature_slabs<T>(net, head, b, reduction, q, n_threads, interrupt);
  return dispatch<T>(net, head, b, reduction, q, n_threads, interrupt);
}

template double curvature<float>(const Network<float>&, Head, const Batch<float>&, Reduction,
                                 const CurvatureRequest<float>&, int, const Interrupt*);
template double curvature<double>(const Network<double>&, Head, const Batch<double>&, Reduction,
                                  const CurvatureRequest<double>&, int, const Interrupt*);

}  // namespace mlpgrad
