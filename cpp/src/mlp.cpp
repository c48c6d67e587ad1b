// The core API: check the problem, pick the engine for the active instruction set, run it.
#include "mlpgrad/mlp.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engines.hpp"
#include "config.hpp"
#include "poll.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mlpgrad {
namespace {

template <typename T>
double dispatch(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                const Gradients<T>* grads, T* probs, Mode mode, int n_threads, const Interrupt* intr,
                const ParamHook* hook = nullptr) {
  switch (active_isa()) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: return avx512::run<T>(net, head, batch, reduction, grads, probs, mode, n_threads, intr, hook);
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: return avx2::run<T>(net, head, batch, reduction, grads, probs, mode, n_threads, intr, hook);
#endif
    default: return generic::run<T>(net, head, batch, reduction, grads, probs, mode, n_threads, intr, hook);
  }
}

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

}  // namespace

template <typename T>
Scan scan(const Batch<T>& batch, Head head, int64_t k) {
  Scan s;
  const int64_t n = batch.n;
  if (batch.labels && n > 0) {
    int64_t lo = batch.labels[0], hi = batch.labels[0];
    for (int64_t i = 1; i < n; ++i) {
      lo = std::min(lo, batch.labels[i]);
      hi = std::max(hi, batch.labels[i]);
    }
    s.label_min = lo;
    s.label_max = hi;
    if (lo < 0 || hi >= k) { s.fault = Fault::label_range; return s; }
  }
  if (batch.targets) {
    bool ok = true;  // no early exit: the loops vectorize
    if (head == Head::sigmoid)
      for (int64_t i = 0; i < n * k; ++i) ok &= batch.targets[i] >= T(0) && batch.targets[i] <= T(1);
    else if (head == Head::identity)
      for (int64_t i = 0; i < n * k; ++i) ok &= std::isfinite(batch.targets[i]);
    else
      for (int64_t i = 0; i < n * k; ++i) ok &= std::isfinite(batch.targets[i]) && batch.targets[i] >= T(0);
    if (!ok) { s.fault = Fault::target_range; return s; }
  }
  s.total_weight = double(n);
  if (batch.sample_weight) {
    bool ok = true;
    double total = 0;  // in row order: the engine's "mean" scale and train_epoch's W_B sum the same way
    for (int64_t i = 0; i < n; ++i) {
      ok &= std::isfinite(batch.sample_weight[i]) && batch.sample_weight[i] >= T(0);
      total += double(batch.sample_weight[i]);
    }
    if (!ok) { s.fault = Fault::sample_weight; return s; }
    s.total_weight = total;
  }
  return s;
}

template <typename T>
bool sparse_rows_valid(const SparseRows<T>& X, int64_t n, int64_t d0) {
  if (!X.indptr || X.indptr[0] != 0) return false;
  for (int64_t i = 0; i < n; ++i)
    if (X.indptr[i + 1] < X.indptr[i]) return false;
  if (X.indptr[n] > 0 && (!X.indices || !X.values)) return false;
  bool ok = true;  // no early exit within a row: the loop stays simple
  for (int64_t i = 0; i < n; ++i) {
    int64_t prev = -1;
    for (int64_t p = X.indptr[i]; p < X.indptr[i + 1]; ++p) {
      ok &= X.indices[p] > prev && X.indices[p] < d0;
      prev = X.indices[p];
    }
    if (!ok) return false;
  }
  return true;
}

namespace {

// The structure of the problem (sizes, pointers); with a batch, its values too unless already scanned
// (then batch->total_weight is the scan's). Returns the total weight (n for a batch without targets).
template <typename T>
double check_problem(const Network<T>& net, Head head, const Batch<T>* batch, Reduction reduction,
                     bool need_targets) {
  const int64_t L = net.n_layers();
  if (L < 1) fail("the network needs at least one layer");
  if (int64_t(net.sizes.size()) != L + 1 || int64_t(net.b.size()) != L)
    fail("sizes, W and b do not describe the same number of layers");
  for (int64_t l = 0; l <= L; ++l)
    if (net.sizes[l] < 1) fail("layer " + std::to_string(l) + " has width " + std::to_string(net.sizes[l]));
  for (int64_t l = 0; l < L; ++l)
    if (!net.W[l] || !net.b[l]) fail("W or b of layer " + std::to_string(l) + " is null");
  if (head != Head::sigmoid && head != Head::softmax && head != Head::identity) fail("unknown head");
  if (reduction != Reduction::sum && reduction != Reduction::mean) fail("unknown reduction");
  if (!batch) return 0.0;
  if (batch->n < 0) fail("negative number of rows");
  if (batch->n > 0 && !batch->X && !batch->sparse()) fail("X is null");
  if (batch->sparse() && batch->total_weight < 0 && !sparse_rows_valid<T>(batch->Xs, batch->n, net.sizes[0]))
    fail("sparse X: indptr must start at 0 and not decrease, indices lie in [0, d_0) and increase within a row");
  if (!need_targets) return double(batch->n);
  if (batch->n > 0 && !batch->labels && !batch->targets) fail("no targets");
  if (batch->labels && head != Head::softmax) fail("labels need the softmax head");
  double total = batch->total_weight;
  if (total < 0) {
    const Scan s = scan<T>(*batch, head, net.n_outputs());
    if (s.fault == Fault::label_range)
      fail("labels must lie in [0, " + std::to_string(net.n_outputs()) + "), got values in [" +
           std::to_string(s.label_min) + ", " + std::to_string(s.label_max) + "]");
    if (s.fault == Fault::target_range) fail("targets out of range for the head");
    if (s.fault == Fault::sample_weight) fail("sample weights must be finite and >= 0");
    total = s.total_weight;
  }
  if (reduction == Reduction::mean && !(total > 0)) fail("reduction 'mean' needs a positive total weight");
  return total;
}

// The batch with its total weight filled in by the check.
template <typename T>
Batch<T> checked(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction) {
  Batch<T> b = batch;
  b.total_weight = check_problem<T>(net, head, &batch, reduction, true);
  return b;
}

}  // namespace

template <typename T>
double check(const Network<T>& net, Head head, const Batch<T>* batch, Reduction reduction, bool need_targets) {
  return check_problem<T>(net, head, batch, reduction, need_targets);
}

template <typename T>
void forward(const Network<T>& net, Head head, int64_t n, const T* X, T* probs, int n_threads,
             const Interrupt* interrupt) {
  Batch<T> batch;
  batch.n = n;
  batch.X = X;
  forward<T>(net, head, batch, probs, n_threads, interrupt);
}

template <typename T>
void forward(const Network<T>& net, Head head, const Batch<T>& inputs, T* probs, int n_threads,
             const Interrupt* interrupt) {
  Batch<T> batch;
  batch.n = inputs.n;
  batch.X = inputs.X;
  batch.Xs = inputs.Xs;
  batch.total_weight = inputs.total_weight;  // >= 0: a sparse X already checked (scanned)
  check_problem<T>(net, head, &batch, Reduction::sum, false);
  dispatch<T>(net, head, batch, Reduction::sum, nullptr, probs, Mode::probs, n_threads, interrupt);
}

template <typename T>
double loss(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction, int n_threads,
            const Interrupt* interrupt) {
  const Batch<T> b = checked<T>(net, head, batch, reduction);
  return dispatch<T>(net, head, b, reduction, nullptr, nullptr, Mode::loss, n_threads, interrupt);
}

template <typename T>
double loss_and_grad(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                     const Gradients<T>& grads, int n_threads, const Interrupt* interrupt) {
  const Batch<T> b = checked<T>(net, head, batch, reduction);
  if (int64_t(grads.dW.size()) != net.n_layers() || int64_t(grads.db.size()) != net.n_layers())
    fail("gradients: one dW and one db per layer expected");
  return dispatch<T>(net, head, b, reduction, &grads, nullptr, Mode::grad, n_threads, interrupt);
}

template <typename T>
double loss_and_grad_hooked(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                            const Gradients<T>& grads, const ParamHook& hook, int n_threads, const Interrupt* interrupt) {
  const Batch<T> b = checked<T>(net, head, batch, reduction);
  if (int64_t(grads.dW.size()) != net.n_layers() || int64_t(grads.db.size()) != net.n_layers())
    fail("gradients: one dW and one db per layer expected");
  return dispatch<T>(net, head, b, reduction, &grads, nullptr, Mode::grad, n_threads, interrupt, &hook);
}

#define MLPGRAD_INSTANTIATE(T)                                                                          \
  template Scan scan<T>(const Batch<T>&, Head, int64_t);                                              \
  template double check<T>(const Network<T>&, Head, const Batch<T>*, Reduction, bool);                \
  template bool sparse_rows_valid<T>(const SparseRows<T>&, int64_t, int64_t);                          \
  template void forward<T>(const Network<T>&, Head, int64_t, const T*, T*, int, const Interrupt*);    \
  template void forward<T>(const Network<T>&, Head, const Batch<T>&, T*, int, const Interrupt*);      \
  template double loss<T>(const Network<T>&, Head, const Batch<T>&, Reduction, int, const Interrupt*); \
  template double loss_and_grad<T>(const Network<T>&, Head, const Batch<T>&, Reduction,               \
                                   const Gradients<T>&, int, const Interrupt*);                      \
  template double loss_and_grad_hooked<T>(const Network<T>&, Head, const Batch<T>&, Reduction,        \
                                          const Gradients<T>&, const ParamHook&, int, const Interrupt*);
MLPGRAD_INSTANTIATE(float)
MLPGRAD_INSTANTIATE(double)
#undef MLPGRAD_INSTANTIATE

bool PollTimer::due_and_stop() {
  if (!intr_) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now < next_) return false;
  next_ = now + std::chrono::milliseconds(config::kInterruptPollMs);
  return intr_->poll(intr_->ctx);
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int default_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

const char* compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace mlpgrad
