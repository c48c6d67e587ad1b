// The Gram matrix of per-sample gradients, K[i][j] = g_i . g'_j = sum_l (h_{l-1,i} . h'_{l-1,j} + 1)
// (delta_{l,i} . delta'_{l,j}): never the gradients themselves, two products per layer of the layers' inputs
// and deltas. Both batches' inputs and deltas are computed once (per_sample.hpp's state), then K is cut into
// tiles of fixed size shared among the threads; each element is summed by one tile in a fixed order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "per_sample.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// The layers' inputs and unit deltas of every row of a batch.
template <typename T> struct State {
  std::vector<T> memory;
  StateProduct<T> views;
  State(const Network<T>& net, Head head, const Batch<T>& batch, int n_threads, const Interrupt* interrupt) {
    const std::vector<int64_t>& d = net.sizes;
    const int64_t L = net.n_layers(), n = batch.n;
    std::vector<int64_t> h_at(L, 0), d_at(L, 0);
    int64_t size = 0;
    for (int64_t l = 0; l < L; ++l) {
      h_at[l] = size;
      size += l > 0 ? n * d[l] : 0;
      d_at[l] = size;
      size += n * d[l + 1];
    }
    memory.resize(size);
    views.H.assign(L, nullptr);
    views.D.assign(L, nullptr);
    for (int64_t l = 0; l < L; ++l) {
      views.H[l] = l > 0 ? memory.data() + h_at[l] : nullptr;
      views.D[l] = memory.data() + d_at[l];
    }
    if (n > 0) run_product<T>(net, head, batch, Reduction::sum, nullptr, views, 0, n_threads, interrupt);
  }
  const T* H(int64_t l, const Batch<T>& b) const { return l == 0 ? b.X : views.H[l]; }
};

// Tiles of K: kGramRows x kGramCols (the last ones smaller), fixed by the shapes.
constexpr int64_t kGramRows = 96, kGramCols = 512;

template <typename T>
void run_gram(const Network<T>& net, Head head, const Batch<T>& a, const Batch<T>& b, T* K, int n_threads,
              const Interrupt* interrupt) {
  if (a.n == 0 || b.n == 0) return;
  const bool same = &a == &b;
  const State<T> sa(net, head, a, n_threads, interrupt);
  const State<T> sb_own(net, head, same ? Batch<T>{} : b, n_threads, interrupt);
  const State<T>& sb = same ? sa : sb_own;
  const std::vector<int64_t>& d = net.sizes;
  const int64_t L = net.n_layers(), nb = b.n;
  const int64_t row_tiles = (a.n + kGramRows - 1) / kGramRows, col_tiles = (nb + kGramCols - 1) / kGramCols;
  const int nt = thread_count(n_threads, row_tiles * col_tiles);
  StopFlag stop(interrupt);
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> scratch(2 * kGramRows * kGramCols + GemmScratch<T>::size);
    T* gh = scratch.data();
    T* gd = gh + kGramRows * kGramCols;
    const GemmScratch<T> gs(gd + kGramRows * kGramCols);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < row_tiles * col_tiles; ++t) {
      if (stop.stopped()) continue;
      const int64_t r0 = t / col_tiles * kGramRows, c0 = t % col_tiles * kGramCols;
      const int64_t mr = std::min(kGramRows, a.n - r0), nc = std::min(kGramCols, nb - c0);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t din = d[l], dout = d[l + 1];
        // gh = H_a rows [r0, r0 + mr) @ H_b rows [c0, c0 + nc)^T; gd the same for the deltas
        gemm<T>({gh, nc}, false, {sa.H(l, a) + r0 * din, din, 1}, nullptr, {sb.H(l, b) + c0 * din, 1, din}, mr, nc,
                din, gs);
        gemm<T>({gd, nc}, false, {sa.views.D[l] + r0 * dout, dout, 1}, nullptr, {sb.views.D[l] + c0 * dout, 1, dout},
                mr, nc, dout, gs);
        for (int64_t i = 0; i < mr; ++i) {
          T* k = K + (r0 + i) * nb + c0;
          const T* x = gh + i * nc;
          const T* y = gd + i * nc;
          if (l == 0)
            for (int64_t j = 0; j < nc; ++j) k[j] = (x[j] + T(1)) * y[j];
          else
            for (int64_t j = 0; j < nc; ++j) k[j] += (x[j] + T(1)) * y[j];
        }
      }
    }
  }
  if (stop.raised()) throw Interrupted();
}

}  // namespace mlpgrad::MLPGRAD_ISA
