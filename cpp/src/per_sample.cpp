// The per-sample entry points (mlpgrad/per_sample.hpp): check the request, run the engine of the active
// instruction set.
#include "mlpgrad/per_sample.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "engines.hpp"
#include "mlpgrad/layout.hpp"
#include "slabs.hpp"

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

// A sparse batch slab by slab (slabs.hpp): each slab's rows of the per-row results, its sums (clipped, sumsq)
// added to the first slab's in slab order.
template <typename T>
double per_sample_slabs(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                        const PerSampleRequest<T>& q, int n_threads, const Interrupt* intr) {
  const Layout layout(net.sizes);
  const int64_t P = layout.n_params, L = net.n_layers();
  const bool summed = q.op == PerSampleOp::clipped || q.op == PerSampleOp::sumsq;
  DenseSlabs<T> slabs(batch, net.sizes.front(), net.sizes.back());
  std::vector<T> part(size_t(summed && slabs.count() > 1 ? P : 0));
  double loss = 0.0;
  for (int64_t s = 0; s < slabs.count(); ++s) {
    const int64_t r0 = slabs.begin(s);
    PerSampleRequest<T> qs = q;
    if (q.norms) qs.norms = q.norms + r0;
    if (q.layer_norms) qs.layer_norms = q.layer_norms + r0 * L;
    if (q.rows) qs.rows = q.rows + r0 * (q.op == PerSampleOp::grads ? P : q.m);
    if (summed && s > 0) qs.grads = layout.gradients<T>(part.data());
    loss += dispatch<T>(net, head, slabs.slab(s), reduction, qs, n_threads, intr);
    if (summed && s > 0)
      for (int64_t l = 0; l < L; ++l) {
        add_into<T>(q.grads.dW[l], part.data() + layout.w[l], net.sizes[l] * net.sizes[l + 1]);
        add_into<T>(q.grads.db[l], part.data() + layout.b[l], net.sizes[l + 1]);
      }
  }
  return loss;
}

template <typename T>
void gram_dispatch(const Network<T>& net, Head head, const Batch<T>& a, const Batch<T>& b, T* K, int n_threads,
                   const Interrupt* interrupt) {
  switch (active_isa()) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: return avx512::run_gram<T>(net, head, a, b, K, n_threads, interrupt);
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: return avx2::run_gram<T>(net, head, a, b, K, n_threads, interrupt);
#endif
    default: return generic::run_gram<T>(net, head, a, b, K, n_threads, interrupt);
  }
}

// K (na, nb) with a sparse a or b: block by block of their slabs (a dense batch is one slab), each block
// computed into its own buffer and copied to its place in K.
template <typename T>
void gram_slabs(const Network<T>& net, Head head, const Batch<T>& a, const Batch<T>& b, T* K, int n_threads,
                const Interrupt* intr) {
  const int64_t d0 = net.sizes.front(), k = net.sizes.back();
  DenseSlabs<T> sa(a, d0, k), sb(b, d0, k);
  std::vector<T> block;
  for (int64_t i = 0; i < sa.count(); ++i) {
    const Batch<T> ai = sa.slab(i);
    for (int64_t j = 0; j < sb.count(); ++j) {
      const Batch<T> bj = sb.slab(j);
      block.resize(size_t(ai.n * bj.n));
      gram_dispatch<T>(net, head, ai, bj, block.data(), n_threads, intr);
      for (int64_t r = 0; r < ai.n; ++r)
        std::copy_n(block.data() + r * bj.n, bj.n, K + (sa.begin(i) + r) * b.n + sb.begin(j));
    }
  }
}

}  // namespace

template <typename T>
double per_sample(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                  const PerSampleRequest<T>& request, int n_threads, const Interrupt* interrupt) {
  Batch<T> b = batch;
  b.total_weight = check<T>(net, head, &batch, reduction, true);
  check_request<T>(net, b.n, request);
  if (b.sparse() && b.n > 0) return per_sample_slabs<T>(net, head, b, reduction, request, n_threads, interrupt);
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
  if ((ca.sparse() || rb.sparse()) && ca.n > 0 && rb.n > 0) return gram_slabs<T>(net, head, ca, rb, K, n_threads, interrupt);
  gram_dispatch<T>(net, head, ca, rb, K, n_threads, interrupt);
}

#define MLPGRAD_INSTANTIATE(T)                                                                                    \
  template double per_sample<T>(const Network<T>&, Head, const Batch<T>&, Reduction, const PerSampleRequest<T>&, \
                                int, const Interrupt*);                                                          \
  template void grad_gram<T>(const Network<T>&, Head, const Batch<T>&, const Batch<T>&, T*, int, const Interrupt*);
MLPGRAD_INSTANTIATE(float)
MLPGRAD_INSTANTIATE(double)
#undef MLPGRAD_INSTANTIATE

}  // namespace mlpgrad
