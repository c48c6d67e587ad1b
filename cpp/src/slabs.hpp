// A sparse X in the per-sample passes, the curvature products and the Gram matrix: the batch is cut into slabs
// of rows, config::kSparseSlabBytes of dense X each (at least one row), and each slab is densified and run by
// the dense engine; the entry points write each slab's rows of the result or add its sums in slab order. The
// slabs depend on the shapes only: the same bits for any thread count. (The gradient's own pass runs on the
// sparse rows: sparse.hpp.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "config.hpp"
#include "mlpgrad/mlp.hpp"

namespace mlpgrad {

template <typename T> class DenseSlabs {
 public:
  // A dense batch is one slab, itself.
  DenseSlabs(const Batch<T>& batch, int64_t d0, int64_t k) : batch_(batch), d0_(d0), k_(k) {
    const int64_t per_row = std::max<int64_t>(1, d0 * int64_t(sizeof(T)));
    rows_ = batch.sparse() ? std::max<int64_t>(1, config::kSparseSlabBytes / per_row) : std::max<int64_t>(1, batch.n);
  }
  int64_t count() const { return batch_.n == 0 ? 1 : (batch_.n + rows_ - 1) / rows_; }
  int64_t begin(int64_t s) const { return std::min(batch_.n, s * rows_); }
  int64_t rows(int64_t s) const { return begin(s + 1) - begin(s); }

  // Slab s as a dense batch (valid until the next call): its rows of X densified, of the labels, targets and
  // weights referenced; the whole batch's total weight, so that "mean" scales every slab alike.
  Batch<T> slab(int64_t s) {
    if (!batch_.sparse()) return batch_;
    const int64_t r0 = begin(s), m = rows(s);
    X_.assign(size_t(m * d0_), T(0));
    const SparseRows<T>& xs = batch_.Xs;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t p = xs.indptr[r0 + i]; p < xs.indptr[r0 + i + 1]; ++p) X_[size_t(i * d0_ + xs.indices[p])] = xs.values[p];
    Batch<T> b;
    b.n = m;
    b.X = X_.data();
    if (batch_.labels) b.labels = batch_.labels + r0;
    if (batch_.targets) b.targets = batch_.targets + r0 * k_;
    if (batch_.sample_weight) b.sample_weight = batch_.sample_weight + r0;
    b.total_weight = batch_.total_weight;
    return b;
  }

 private:
  const Batch<T>& batch_;
  int64_t d0_, k_, rows_;
  std::vector<T> X_;
};

// out[0, n) += part[0, n)
template <typename T> void add_into(T* out, const T* part, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += part[i];
}

}  // namespace mlpgrad
