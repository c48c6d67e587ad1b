// Quantities of the per-sample gradients, each from one pass over the batch that never holds the (n, P)
// matrix of them unless asked to. g_i is the gradient of sample i's own loss l_i (no sample weight, no
// reduction) with respect to the parameters in pack order (layout.hpp). For layer l (W_l, b_l), with
// h_{l-1,i} its input row and delta_{l,i} = dl_i/dz_{l,i}, the W_l part of g_i is the outer product
// h_{l-1,i} delta_{l,i}^T and the b_l part is delta_{l,i}, so ||g_{i,l}||^2 = (||h_{l-1,i}||^2 + 1) ||delta_{l,i}||^2.
// Plain C++17, nothing of Python. Results do not depend on n_threads.
#pragma once

#include <cstdint>
#include <vector>

#include "mlpgrad/mlp.hpp"

namespace mlpgrad {

enum class PerSampleOp {
  norms = 0,    // norms (n,) = ||g_i|| and/or layer_norms (n, L) = ||g_{i,l}||
  clipped = 1,  // grads = sum_i c_i f_i g_i, f_i = min(1, max_norm / ||g_i||) (per layer: f_{i,l} from ||g_{i,l}||);
                // the norms as for `norms`
  grads = 2,    // rows (n, P): row i = g_i
  dot = 3,      // rows (n, m) = g_i . V[:, j] for V (P, m)
  sumsq = 4,    // grads = sum_i w_i g_i * g_i (element-wise), w the sample weights (ones without)
};

template <typename T> struct PerSampleRequest {
  PerSampleOp op = PerSampleOp::norms;
  T* norms = nullptr;           // (n,), or null
  T* layer_norms = nullptr;     // (n, L), or null
  std::vector<double> max_norm; // clipped: one value (> 0, may be inf) or one per layer
  Gradients<T> grads;           // clipped, sumsq: dW_l, db_l overwritten (dX unused)
  T* rows = nullptr;            // grads: (n, P); dot: (n, m)
  const T* V = nullptr;         // dot: (P, m) row-major
  int64_t m = 0;                // dot: the number of vectors
};

// Runs one request; returns the loss sum_i c_i l_i, c_i = w_i ("sum") or w_i / sum_j w_j ("mean"). The
// reduction and the sample weights matter only for the loss, for `clipped` (c_i) and for `sumsq` (w_i).
template <typename T>
double per_sample(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                  const PerSampleRequest<T>& request, int n_threads, const Interrupt* interrupt = nullptr);

// K (n_a, n_b): K[i][j] = g_i . g'_j, g for the rows of a and g' for those of b (b may be a itself).
// Memory beyond K: every layer's inputs and deltas for both batches, O((n_a + n_b) sum_l d_l).
template <typename T>
void grad_gram(const Network<T>& net, Head head, const Batch<T>& a, const Batch<T>& b, T* K, int n_threads,
               const Interrupt* interrupt = nullptr);

}  // namespace mlpgrad
