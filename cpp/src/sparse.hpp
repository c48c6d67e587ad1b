// The first layer on a sparse X (CSR, mlpgrad/mlp.hpp SparseRows): a forward/backward pair with the dense
// layer's argument order (layers.hpp). The forward runs row by row: z_i = b + sum over row i's values x_ij of
// x_ij W_j, a row's values in column order, the output columns a few vectors at a time in registers. The
// weight gradient dW = X^T D runs by blocks of W's rows (features), each dW row summing its terms in row order
// of the batch: the same bits for any number or size of blocks, so for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#include "config.hpp"
#include "gemm.hpp"
#include "layers.hpp"
#include "mlpgrad/mlp.hpp"
#include "simd.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// out[0, n) += x * y[0, n)
template <typename T> inline void axpy_row(T* out, T x, const T* y, int64_t n) {
  constexpr int V = kLanes<T>;
  const Vec<T> xv = splat<T>(x);
  int64_t j = 0;
  for (; j + V <= n; j += V) store<T>(out + j, vfma<T>(xv, load<T>(y + j), load<T>(out + j)));
  if (j < n) store_partial<T>(out + j, vfma<T>(xv, load_padded<T>(y + j, n - j), load_padded<T>(out + j, n - j)), n - j);
}

// Rows of W (or dW) picked by a row's values come from far apart: each is fetched kAhead values early.
constexpr int64_t kAhead = 8;
template <typename T> inline void prefetch_row(const T* p, int64_t n) {
  for (int64_t j = 0; j < n; j += 64 / int64_t(sizeof(T))) __builtin_prefetch(p + j);
}

// Columns [j0, j0 + nb) (nb <= kBlock lanes) of row r of X @ W (W row-major, d_out wide) into z_row.
template <typename T, int NB>
inline void sparse_row_block(T* z_row, const SparseRows<T>& X, int64_t r, const T* W, int64_t d_out, int64_t j0,
                             int64_t nb) {
  constexpr int V = kLanes<T>;
  Vec<T> acc[NB];
  for (int u = 0; u < NB; ++u) acc[u] = Vec<T>{};
  const int64_t p1 = X.indptr[r + 1];
  if (nb == NB * V) {
    for (int64_t p = X.indptr[r]; p < p1; ++p) {
      if (p + kAhead < p1) prefetch_row<T>(W + X.indices[p + kAhead] * d_out + j0, nb);
      const Vec<T> x = splat<T>(X.values[p]);
      const T* w = W + X.indices[p] * d_out + j0;
      for (int u = 0; u < NB; ++u) acc[u] = vfma<T>(x, load<T>(w + u * V), acc[u]);
    }
    for (int u = 0; u < NB; ++u) store<T>(z_row + j0 + u * V, acc[u]);
    return;
  }
  for (int64_t p = X.indptr[r]; p < p1; ++p) {
    if (p + kAhead < p1) prefetch_row<T>(W + X.indices[p + kAhead] * d_out + j0, nb);
    const Vec<T> x = splat<T>(X.values[p]);
    const T* w = W + X.indices[p] * d_out + j0;
    for (int u = 0; u < NB && u * V < nb; ++u) acc[u] = vfma<T>(x, load_padded<T>(w + u * V, nb - u * V), acc[u]);
  }
  for (int u = 0; u < NB && u * V < nb; ++u) store_partial<T>(z_row + j0 + u * V, acc[u], nb - u * V);
}

// z (m, d_out) = act(rows [r0, r0 + m) of X @ W + b): sigmoid for a hidden layer, none for logits. W row-major
// (d_0, d_out), unpacked: a row's values pick rows of W.
template <typename T>
void sparse_linear_forward(MatView<T> z, const SparseRows<T>& X, int64_t r0, int64_t m, const T* W, const T* b,
                           int64_t d_out, bool sigmoid) {
  constexpr int NB = 4, V = kLanes<T>;
  for (int64_t j0 = 0; j0 < d_out; j0 += NB * V) {
    const int64_t nb = std::min<int64_t>(NB * V, d_out - j0);
    for (int64_t i = 0; i < m; ++i) sparse_row_block<T, NB>(z.p + i * z.ld, X, r0 + i, W, d_out, j0, nb);
  }
  const BiasActivation<T> epilogue{b, sigmoid};
  for (int64_t j0 = 0; j0 < d_out; j0 += Tile<T>::NR)
    epilogue(z.p + j0, z.ld, 0, j0, m, std::min<int64_t>(Tile<T>::NR, d_out - j0));
}

// Rows [j0, j1) of dW (d_0, d_out) = sum over the batch's rows i = 0 .. n-1, in order, of x_ij D_i (D (n, d_out)),
// overwritten. A row of X finds its first value in the block by bisection (indices increase within a row).
template <typename T>
void sparse_linear_backward_weights(MatView<T> dW, const SparseRows<T>& X, MatView<const T> D, int64_t n,
                                    int64_t d_out, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) std::fill(dW.p + j * dW.ld, dW.p + j * dW.ld + d_out, T(0));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* first = X.indices + X.indptr[i];
    const int64_t* last = X.indices + X.indptr[i + 1];
    const int64_t* p = j0 == 0 ? first : std::lower_bound(first, last, j0);
    for (; p < last && *p < j1; ++p) {
      if (p + kAhead < last && p[kAhead] < j1) prefetch_row<T>(dW.p + p[kAhead] * dW.ld, d_out);
      axpy_row<T>(dW.p + *p * dW.ld, X.values[p - X.indices], D.p + i * D.ld, d_out);
    }
  }
}

// Rows of W per block of the weight gradient: kSparseBlocksPerThread blocks per thread. Any cut gives the same bits.
inline int64_t sparse_block_rows(int64_t d0, int n_threads) {
  const int64_t blocks = config::kSparseBlocksPerThread * n_threads;
  return std::max<int64_t>(1, (d0 + blocks - 1) / blocks);
}

}  // namespace mlpgrad::MLPGRAD_ISA
