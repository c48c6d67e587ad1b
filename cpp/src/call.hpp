// One call's problem, outputs and workspace, shared by the schedules; and the head on a block of rows.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "engines.hpp"
#include "heads.hpp"
#include "layers.hpp"
#include "mlpgrad/mlp.hpp"
#include "parallel.hpp"
#include "plan.hpp"

namespace mlpgrad::MLPGRAD_ISA {

template <typename T> struct Call {
  const Network<T>& net;
  Head head;
  const Batch<T>& batch;
  double scale;  // 1 for "sum"; 1 / total weight for "mean"
  Mode mode;
  const Gradients<T>* grads;  // null unless mode is grad
  T* probs;                   // (n, k), mode probs only
  const Plan<T>& plan;
  T* ws;                      // the workspace laid out by plan
  StopFlag& stop;
  std::vector<double>& block_loss;  // the loss of each unit of rows, summed pairwise at the end
  const ParamHook* hook = nullptr;  // applied to the finished gradient (mode grad), or null
  T* input_grad() const { return grads ? grads->dX : nullptr; }
  T* thread_scratch(int tid) const { return ws + plan.shared_rows + plan.per_thread * tid; }
};

// Pack every weight matrix once: W_l for h @ W, and W_l^T for delta @ W^T where a delta goes through it.
// Called by every thread of the parallel region, which share the packing.
template <typename T> void pack_weights(const Call<T>& c) {
  const Plan<T>& plan = c.plan;
  const std::vector<int64_t>& d = plan.d;
  const int64_t L = plan.L;
#pragma omp for schedule(dynamic, 1)
  for (int64_t task = 0; task < (plan.narrow ? 0 : 2 * L); ++task) {
    const int64_t l = task / 2;
    if (task % 2 == 0) {
      if (l > 0 || !plan.extras.sparse_input) pack_b_panels<T>(d[l], d[l + 1], c.net.W[l], d[l + 1], 1, c.ws + plan.wp[l]);
    } else if (c.mode == Mode::grad && (l > 0 || c.input_grad())) {
      pack_b_panels<T>(d[l + 1], d[l], c.net.W[l], 1, d[l + 1], c.ws + plan.wtp[l]);
    }
  }
}

// The hook on the finished gradient, its blocks shared by the threads of the region (after the barrier that
// ends the gradient's last loop). Not after an interrupt: no thread polls past that barrier, so every thread
// reads the same flag, and the call then throws with the parameters untouched.
template <typename T> void apply_hook(const Call<T>& c) {
  if (!c.hook || c.stop.raised()) return;
  const int64_t P = c.plan.n_params, nb = ParamHook::blocks(P);
#pragma omp for schedule(static)
  for (int64_t b = 0; b < nb; ++b) c.hook->run_block(P, b);
}

// Scratch for the head on m rows: p, e (m, k); m, lse, c (m,).
template <typename T> struct HeadScratch {
  T *p, *e, *m, *lse, *c;
  // rows [r0, ...) of the buffers laid out by `plan` from `base` (for plan.rows rows)
  HeadScratch(const Plan<T>& plan, T* base, int64_t r0)
      : p(base + plan.p + r0 * plan.k), e(base + plan.e + r0 * plan.k), m(base + plan.m + r0),
        lse(base + plan.lse + r0), c(base + plan.c + r0) {}
};

// The head on rows [r0, r0 + m): logits z (m, k) -> loss of these rows (returned), and for gradients
// delta_L written over z. probs mode writes the outputs (probabilities, or z for identity) to `probs` instead.
template <typename T>
double head_rows(const Call<T>& call, T* z, const HeadScratch<T>& s, int64_t r0, int64_t m) {
  const int64_t k = call.plan.k;
  const Batch<T>& batch = call.batch;
  if (call.mode == Mode::probs) {
    T* out = call.probs + r0 * k;
    if (call.head == Head::sigmoid) {
      std::memcpy(out, z, sizeof(T) * m * k);
      sigmoid_forward<T>(out, m * k);
    } else if (call.head == Head::identity) {
      std::memcpy(out, z, sizeof(T) * m * k);
    } else {
      softmax_probs<T>(out, s.m, s.lse, z, m, k);
    }
    return 0.0;
  }
  const double scale = call.scale;
  for (int64_t i = 0; i < m; ++i) s.c[i] = batch.sample_weight ? batch.sample_weight[r0 + i] * T(scale) : T(scale);
  const T* t = batch.targets ? batch.targets + r0 * k : nullptr;
  const int64_t* y = batch.labels ? batch.labels + r0 : nullptr;
  const bool grad = call.mode == Mode::grad;
  double loss;
  if (call.head == Head::sigmoid) {
    loss = sigmoid_xent_forward<T>(s.p, s.e, z, t, s.c, m, k);
    if (grad) sigmoid_xent_backward<T>(z, s.p, t, s.c, m, k);
  } else if (call.head == Head::identity) {
    loss = identity_forward<T>(s.e, z, t, s.c, m, k);
    if (grad) identity_backward<T>(z, z, t, s.c, m, k);
  } else {
    loss = softmax_xent_forward<T>(s.p, s.m, s.lse, z, y, t, s.c, m, k);
    if (grad) softmax_xent_backward<T>(z, s.p, y, t, s.c, m, k);
  }
  return loss;
}

}  // namespace mlpgrad::MLPGRAD_ISA
