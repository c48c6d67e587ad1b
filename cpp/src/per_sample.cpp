// The per-sample entry points (mlpgrad/per_sample.hpp): check the request, run the engine of the active
// instruction set.
#include "mlpgrad/per_sample.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "engines.hpp"

namespace mlpgrad {
namespace {

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("per_sample: " + what); }

template <typename T>
double dispatch(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                const PerSampleRequest<T>& q, int n_threads, const Interrupt* intr) {
  switch (active_isa()) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: return avx512::run_per_sample<T>(net, head, batch, reduction, q, n_threads, intr);
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: return avx2::run_per_sample<T>(net, head, batch, reduction, q, n_threads, intr);
#endif
    default: return generic::run_per_sample<T>(net, head, batch, reduction, q, n_threads, intr);
  }
}

template <typename T> void check_gradients(const Network<T>& net, const Gradients<T>& g) {
  if (int64_t(g.dW.size()) != net.n_layers() || int64_t(g.db.size()) != net.n_layers())
    fail("one dW and one db per layer expected");
  for (int64_t l = 0; l < net.n_layers(); ++l)
    if (!g.dW[l] || !g.db[l]) fail("a gradient output is null");
}

template <typename T> void check_request(const Network<T>& net, int64_t n, const PerSampleRequest<T>& q) {
  const bool rows = n > 0;
  switch (q.op) {
    case PerSampleOp::norms:
      if (rows && !q.norms && !q.layer_norms) fail("norms: no output");
      break;
    case PerSampleOp::clipped:
      if (q.max_norm.size() != 1 && int64_t(q.max_norm.size()) != net.n_layers())
        fail("max_norm: one value or one per layer expected");
      for (double c : q.max_norm)
        if (!(c > 0)) fail("max_norm: every value must be > 0");
      check_gradients<T>(net, q.grads);
      break;
    case PerSampleOp::grads:
      if (rows && !q.rows) fail("grads: no output");
      break;
    case PerSampleOp::dot:
      if (q.m < 1) fail("dot: at least one vector expected");
      if (!q.V || (rows && !q.rows)) fail("dot: V or the output is null");
      break;
    case PerSampleOp::sumsq:
      check_gradients<T>(net, q.grads);
      break;
    default:
      fail("unknown request");
  }
}

}  // namespace

template <typename T>
double per_sample(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                  const PerSampleRequest<T>& request, int n_threads, const Interrupt* interrupt) {
  Batch<T> b = batch;
  b.total_weight = check<T>(net, head, &batch, reduction, true);
  check_request<T>(net, b.n, request);
  return dispatch<T>(net, head, b, reduction, request, n_threads, interrupt);
}

template <typename T>
void grad_gram(const Network<T>& net, Head head, const Batch<T>& a, const Batch<T>& b, T* K, int n_threads,
               const Interrupt* interrupt) {
  Batch<T> ca = a;
  ca.total_weight = check<T>(net, head, &a, Reduction::sum, true);
  const bool same = &a == &b;
  Batch<T> cb = b;
  if (!same) cb.total_weight = check<T>(net, head, &b, Reduction::sum, true);
  if (a.n > 0 && b.n > 0 && !K) fail("gram: the output is null");
  const Batch<T>& rb = same ? ca : cb;
  switch (active_isa()) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: return avx512::run_gram<T>(net, head, ca, rb, K, n_threads, interrupt);
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: return avx2::run_gram<T>(net, head, ca, rb, K, n_threads, interrupt);
#endif
    default: return generic::run_gram<T>(net, head, ca, rb, K, n_threads, interrupt);
  }
}

#define MLPGRAD_INSTANTIATE(T)                                                                                    \
  template double per_sample<T>(const Network<T>&, Head, const Batch<T>&, Reduction, const PerSampleRequest<T>&, \
                                int, const Interrupt*);                                                          \
  template void grad_gram<T>(const Network<T>&, Head, const Batch<T>&, const Batch<T>&, T*, int, const Interrupt*);
MLPGRAD_INSTANTIATE(float)
MLPGRAD_INSTANTIATE(double)
#undef MLPGRAD_INSTANTIATE

}  // namespace mlpgrad
