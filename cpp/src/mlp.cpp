// The core API: check the problem, pick the engine for the active instruction set, run it.
#include "mlpgrad/mlp.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "engines.hpp"
#include "mlpgrad/config.hpp"
#include "poll.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mlpgrad {
namespace {

template <typename T>
double dispatch(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                const Gradients<T>* grads, T* probs, Mode mode, int n_threads, const Interrupt* intr) {
  switch (active_isa()) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: return avx512::run<T>(net, head, batch, reduction, grads, probs, mode, n_threads, intr);
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: return avx2::run<T>(net, head, batch, reduction, grads, probs, mode, n_threads, intr);
#endif
    default: return generic::run<T>(net, head, batch, reduction, grads, probs, mode, n_threads, intr);
  }
}

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

}  // namespace

// scan_data: the entry points leave the label range and the mean's total weight to the engine, which
// makes those passes over the data itself (vectorized, and without summing the weights twice).
template <typename T>
void check_problem(const Network<T>& net, Head head, const Batch<T>* batch, Reduction reduction, bool need_targets,
                   bool scan_data) {
  const int64_t L = net.n_layers();
  if (L < 1) fail("the network needs at least one layer");
  if (int64_t(net.sizes.size()) != L + 1 || int64_t(net.b.size()) != L)
    fail("sizes, W and b do not describe the same number of layers");
  for (int64_t l = 0; l <= L; ++l)
    if (net.sizes[l] < 1) fail("layer " + std::to_string(l) + " has width " + std::to_string(net.sizes[l]));
  for (int64_t l = 0; l < L; ++l)
    if (!net.W[l] || !net.b[l]) fail("W or b of layer " + std::to_string(l) + " is null");
  if (head != Head::sigmoid && head != Head::softmax) fail("unknown head");
  if (!batch) return;
  if (batch->n < 0) fail("negative number of rows");
  if (batch->n > 0 && !batch->X) fail("X is null");
  if (!need_targets) return;
  if (batch->n > 0 && !batch->labels && !batch->targets) fail("no targets");
  if (batch->labels && head != Head::softmax) fail("labels need the softmax head");
  if (scan_data && batch->labels)
    for (int64_t i = 0; i < batch->n; ++i)
      if (batch->labels[i] < 0 || batch->labels[i] >= net.n_outputs())
        fail("y labels must lie in [0, " + std::to_string(net.n_outputs()) + "), got " +
             std::to_string(batch->labels[i]) + " at row " + std::to_string(i));
  if (scan_data && reduction == Reduction::mean) {
    double total = double(batch->n);
    if (batch->sample_weight) {
      total = 0;
      for (int64_t i = 0; i < batch->n; ++i) total += double(batch->sample_weight[i]);
    }
    if (!(total > 0)) fail("reduction 'mean' needs a positive total weight");
  }
}

template <typename T>
void check(const Network<T>& net, Head head, const Batch<T>* batch, Reduction reduction, bool need_targets) {
  check_problem<T>(net, head, batch, reduction, need_targets, true);
}

template <typename T>
void forward(const Network<T>& net, Head head, int64_t n, const T* X, T* probs, int n_threads,
             const Interrupt* interrupt) {
  Batch<T> batch;
  batch.n = n;
  batch.X = X;
  check_problem<T>(net, head, &batch, Reduction::sum, false, false);
  dispatch<T>(net, head, batch, Reduction::sum, nullptr, probs, Mode::probs, n_threads, interrupt);
}

template <typename T>
double loss(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction, int n_threads,
            const Interrupt* interrupt) {
  check_problem<T>(net, head, &batch, reduction, true, false);
  return dispatch<T>(net, head, batch, reduction, nullptr, nullptr, Mode::loss, n_threads, interrupt);
}

template <typename T>
double loss_and_grad(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                     const Gradients<T>& grads, int n_threads, const Interrupt* interrupt) {
  check_problem<T>(net, head, &batch, reduction, true, false);
  if (int64_t(grads.dW.size()) != net.n_layers() || int64_t(grads.db.size()) != net.n_layers())
    fail("gradients: one dW and one db per layer expected");
  return dispatch<T>(net, head, batch, reduction, &grads, nullptr, Mode::grad, n_threads, interrupt);
}

#define MLPGRAD_INSTANTIATE(T)                                                                          \
  template void check<T>(const Network<T>&, Head, const Batch<T>*, Reduction, bool);                  \
  template void forward<T>(const Network<T>&, Head, int64_t, const T*, T*, int, const Interrupt*);    \
  template double loss<T>(const Network<T>&, Head, const Batch<T>&, Reduction, int, const Interrupt*); \
  template double loss_and_grad<T>(const Network<T>&, Head, const Batch<T>&, Reduction,               \
                                   const Gradients<T>&, int, const Interrupt*);
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
