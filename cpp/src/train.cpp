// One epoch of mini-batch training (see mlpgrad/train.hpp): scikit-learn's loop, with the batch gather, the
// loss and gradients (the dispatched engine) and the optimizer step one after another in native code.
#include "mlpgrad/train.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engines.hpp"
#include "mlpgrad/layout.hpp"
#include "mlpgrad/optim.hpp"
#include "poll.hpp"

namespace mlpgrad {
namespace {

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("train_epoch: " + what); }

// Rows `idx[0 .. m)` of a row-major (n, width) array, copied to `out` (m, width).
template <typename T>
void gather_rows(const T* src, int64_t width, const int64_t* idx, int64_t m, T* out) {
  for (int64_t i = 0; i < m; ++i) std::copy_n(src + idx[i] * width, width, out + i * width);
}

// Rows `idx[0 .. m)` of a CSR matrix, copied to a CSR of m rows (its three arrays resized to fit).
template <typename T>
SparseRows<T> gather_sparse_rows(const SparseRows<T>& src, const int64_t* idx, int64_t m, std::vector<int64_t>& indptr,
                                 std::vector<int64_t>& indices, std::vector<T>& values) {
  indptr.assign(size_t(m + 1), 0);
  for (int64_t i = 0; i < m; ++i) indptr[size_t(i + 1)] = indptr[size_t(i)] + src.indptr[idx[i] + 1] - src.indptr[idx[i]];
  indices.resize(size_t(indptr[size_t(m)]));
  values.resize(size_t(indptr[size_t(m)]));
  for (int64_t i = 0; i < m; ++i) {
    const int64_t p0 = src.indptr[idx[i]], len = src.indptr[idx[i] + 1] - p0;
    std::copy_n(src.indices + p0, len, indices.data() + indptr[size_t(i)]);
    std::copy_n(src.values + p0, len, values.data() + indptr[size_t(i)]);
  }
  return {indptr.data(), indices.data(), values.data()};
}

// One optimizer step, run by the engine's threads on the finished gradient (ParamHook): each block of the
// flat parameters is updated where it is, and its part of the penalty's sum of squares kept; the parts are
// added in block order afterwards (the same sum for any thread count).
template <typename T> struct Step {
  const Optimizer<T>& opt;
  T* params;
  const T* grad;
  int64_t n_reg;
  double l2, rate;
  std::vector<double> parts;  // one per block

  static void apply(void* ctx, int64_t begin, int64_t end, int64_t block) {
    Step& s = *static_cast<Step*>(ctx);
    const int64_t n = end - begin, reg = std::clamp<int64_t>(s.n_reg - begin, 0, n);
    const Optimizer<T>& o = s.opt;
    s.parts[size_t(block)] =
        o.solver == Solver::adam
            ? adam_step<T>(s.params + begin, s.grad + begin, o.state1 + begin, o.state2 + begin, n, reg, s.l2, s.rate,
                           o.beta1, o.beta2, o.eps)
            : sgd_step<T>(s.params + begin, s.grad + begin, o.state1 + begin, n, reg, s.l2, s.rate, o.momentum,
                          o.nesterov);
  }
  double sum_of_squares() const {
    double total = 0;
    for (double p : parts) total += p;
    return total;
  }
};

}  // namespace

template <typename T>
EpochResult train_epoch(const std::vector<int64_t>& sizes, Head head, T* params, T* grad, const Batch<T>& data,
                        const int64_t* order, int64_t batch_size, double alpha, double sumsq, const Optimizer<T>& opt,
                        int n_threads, const Interrupt* interrupt, double loss_scale) {
  if (sizes.size() < 2) fail("the network needs at least one layer");
  if (batch_size < 1) fail("batch_size must be >= 1");
  if (!params || !grad || !opt.state1 || !opt.t || (opt.solver == Solver::adam && !opt.state2))
    fail("a parameter, gradient or optimizer buffer is null");
  const int64_t n = data.n, d0 = sizes.front(), k = sizes.back();

  const Layout layout(sizes);
  const Network<T> net = layout.network<T>(params);
  const Gradients<T> grads = layout.gradients<T>(grad);
  const int64_t n_reg = layout.n_weights, n_params = layout.n_params;
  check<T>(net, head, &data, Reduction::sum, true);  // also the values, unless the caller scanned them
  if (order)
    for (int64_t i = 0; i < n; ++i)
      if (order[i] < 0 || order[i] >= n) fail("order[" + std::to_string(i) + "] is outside [0, n)");

  // The gathered batch, when rows come in `order`.
  const int64_t rows_max = std::min(batch_size, n);
  std::vector<T> Xb, targets_b, weight_b, values_b;
  std::vector<int64_t> labels_b, indptr_b, indices_b;
  if (order) {
    if (!data.sparse()) Xb.resize(size_t(rows_max * d0));
    if (data.labels) labels_b.resize(size_t(rows_max));
    if (data.targets) targets_b.resize(size_t(rows_max * k));
    if (data.sample_weight) weight_b.resize(size_t(rows_max));
  }

  EpochResult result;
  result.sumsq = sumsq;
  Step<T> step{opt, params, grad, n_reg, 0.0, 0.0, std::vector<double>(size_t(ParamHook::blocks(n_params)), 0.0)};
  ParamHook hook;
  hook.apply = &Step<T>::apply;
  hook.ctx = &step;
  PollTimer poll(interrupt);
  for (int64_t start = 0; start < n; start += batch_size) {
    if (poll.due_and_stop()) throw Interrupted();
    const int64_t rows = std::min(batch_size, n - start);
    Batch<T> b;
    b.n = rows;
    if (order) {
      const int64_t* idx = order + start;
      if (data.sparse()) {
        b.Xs = gather_sparse_rows(data.Xs, idx, rows, indptr_b, indices_b, values_b);
      } else {
        gather_rows(data.X, d0, idx, rows, Xb.data());
        b.X = Xb.data();
      }
      if (data.labels) {
        for (int64_t i = 0; i < rows; ++i) labels_b[size_t(i)] = data.labels[idx[i]];
        b.labels = labels_b.data();
      }
      if (data.targets) {
        gather_rows(data.targets, k, idx, rows, targets_b.data());
        b.targets = targets_b.data();
      }
      if (data.sample_weight) {
        for (int64_t i = 0; i < rows; ++i) weight_b[size_t(i)] = data.sample_weight[idx[i]];
        b.sample_weight = weight_b.data();
      }
    } else {
      if (data.sparse())  // a row range: indptr from row `start`, its offsets into the whole indices and values
        b.Xs = {data.Xs.indptr + start, data.Xs.indices, data.Xs.values};
      else
        b.X = data.X + start * d0;
      if (data.labels) b.labels = data.labels + start;
      if (data.targets) b.targets = data.targets + start * k;
      if (data.sample_weight) b.sample_weight = data.sample_weight + start;
    }
    double weight_sum = double(rows);  // W_B, in order
    if (b.sample_weight) {
      weight_sum = 0;
      for (int64_t i = 0; i < rows; ++i) weight_sum += double(b.sample_weight[i]);
      if (!(weight_sum > 0)) continue;
    }
    b.total_weight = weight_sum;  // the values were checked above
    // the step's constants; the engine applies it to each block of the gradient once that block is final
    const int64_t t = *opt.t + 1;
    step.l2 = alpha / weight_sum;
    step.rate = opt.solver == Solver::adam
                    ? opt.lr * std::sqrt(1 - std::pow(opt.beta2, double(t))) / (1 - std::pow(opt.beta1, double(t)))
                    : opt.lr;
    double loss = loss_and_grad_hooked<T>(net, head, b, Reduction::mean, grads, hook, n_threads, interrupt);
    loss = loss_scale * loss + 0.5 * alpha * result.sumsq / weight_sum;  // loss_scale 1: loss + penalty, exactly
    result.loss_sum += loss * double(rows);
    *opt.t = t;
    result.sumsq = step.sum_of_squares();
    ++result.steps;
  }
  return result;
}

template EpochResult train_epoch<float>(const std::vector<int64_t>&, Head, float*, float*, const Batch<float>&,
                                        const int64_t*, int64_t, double, double, const Optimizer<float>&, int,
                                        const Interrupt*, double);
template EpochResult train_epoch<double>(const std::vector<int64_t>&, Head, double*, double*, const Batch<double>&,
                                         const int64_t*, int64_t, double, double, const Optimizer<double>&, int,
                                         const Interrupt*, double);

}  // namespace mlpgrad
