// The network: forward and backward through every layer, chunk by chunk, in parallel.
//
// The batch is cut into chunks of `rows` rows (sized so that a chunk's activations stay in L2). A
// thread carries its chunk forward through every layer, through the head, and back, so activations
// are written once and re-read from cache. Consecutive chunks form groups (at most kMaxGroups);
// each group accumulates its weight gradients into its own buffer, one thread per group at a time,
// and the group buffers are summed in a fixed pairwise order at the end. Chunks, groups and the
// order of every sum depend on the problem's shape only, never on the number of threads, so the
// results are bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engines.hpp"
#include "heads.hpp"
#include "layers.hpp"
#include "mlpgrad/config.hpp"
#include "mlpgrad/mlp.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// An uninitialized, 64-byte aligned array (no time spent zeroing what is overwritten anyway).
template <typename T> class Buffer {
 public:
  explicit Buffer(int64_t n)
      : p_(n > 0 ? static_cast<T*>(::operator new[](sizeof(T) * n, std::align_val_t(64))) : nullptr) {}
  ~Buffer() { if (p_) ::operator delete[](p_, std::align_val_t(64)); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return p_; }
 private:
  T* p_;
};

inline int64_t align16(int64_t x) { return round_up(x, 16); }

// Sizes and offsets for one call, computed once from the shapes (never from the thread count).
template <typename T> struct Plan {
  int64_t L, n, k, rows, n_chunks, n_groups;
  std::vector<int64_t> d;             // d_0 .. d_L
  std::vector<int64_t> wp, wtp;       // offsets of W_l and W_l^T packed, in `packed`
  int64_t packed_size = 0;
  std::vector<int64_t> gw, gb;        // offsets of dW_l, db_l in one group's gradient buffer
  int64_t n_params = 0;
  std::vector<int64_t> act;           // per thread: act[l] holds h_l (rows, d_l), l = 1..L (h_L: logits)
  int64_t dh = 0, p = 0, e = 0, m = 0, lse = 0, c = 0, gemm = 0, per_thread = 0;

  Plan(const std::vector<int64_t>& sizes, int64_t n_rows, Mode mode, bool input_grad)
      : L(int64_t(sizes.size()) - 1), n(n_rows), k(sizes.back()), d(sizes) {
    int64_t max_hidden = 0, sum_d = 0;
    for (int64_t l = 1; l <= L; ++l) sum_d += d[l];
    for (int64_t l = 1; l < L; ++l) max_hidden = std::max(max_hidden, d[l]);
    for (int64_t l = 0; l < L; ++l) {
      wp.push_back(packed_size);
      packed_size += align16(packed_b_size<T>(d[l], d[l + 1]));
      wtp.push_back(packed_size);
      if (mode == Mode::grad && (l > 0 || input_grad)) packed_size += align16(packed_b_size<T>(d[l + 1], d[l]));
      gw.push_back(n_params);  // no padding: the pairwise sum reads every element, all of them written
      n_params += d[l] * d[l + 1];
      gb.push_back(n_params);
      n_params += d[l + 1];
    }
    // Rows per chunk: fill about kChunkBytes with the chunk's rows of X, activations, deltas and head
    // scratch. When the weight gradients are larger than that, take at least 256 rows so that adding
    // a chunk's dW into its group buffer (memory traffic ~ parameters) is paid for by the 2*rows
    // flops per parameter of the chunk's dW product.
    const int64_t row_bytes = int64_t(sizeof(T)) * (d[0] + sum_d + max_hidden + 3 * k + 3);
    rows = config::kChunkBytes / row_bytes / config::kChunkRowMultiple * config::kChunkRowMultiple;
    rows = std::clamp(rows, config::kMinChunkRows, config::kMaxChunkRows);
    if (mode == Mode::grad && n_params * int64_t(sizeof(T)) > config::kChunkBytes) rows = std::max<int64_t>(rows, 256);
    rows = std::max<int64_t>(1, std::min(rows, n));
    n_chunks = (n + rows - 1) / rows;
    n_groups = std::min(n_chunks, config::kMaxGroups);

    int64_t off = 0;
    act.assign(L + 1, 0);
    for (int64_t l = 1; l <= L; ++l) { act[l] = off; off += align16(rows * d[l]); }
    dh = off;  off += align16(rows * max_hidden);
    p = off;   off += align16(rows * k);
    e = off;   off += align16(rows * k);
    m = off;   off += align16(rows);
    lse = off; off += align16(rows);
    c = off;   off += align16(rows);
    gemm = off; off += align16(GemmScratch<T>::size);
    per_thread = off;
  }
  int64_t group_begin(int64_t g) const { return g * n_chunks / n_groups; }  // first chunk of group g
};

template <typename T>
int thread_count(int requested, int64_t tasks) {
#ifdef _OPENMP
  const int64_t want = requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  const int64_t want = 1;
#endif
  return int(std::max<int64_t>(1, std::min<int64_t>(want, tasks)));
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Sum of v[0..n) in a fixed pairwise order.
inline double pairwise_sum(const double* v, int64_t n) {
  if (n <= 8) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += v[i];
    return s;
  }
  return pairwise_sum(v, n / 2) + pairwise_sum(v + n / 2, n - n / 2);
}

// One call: probabilities (mode probs), the loss, or the loss and every gradient.
template <typename T>
double run(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction, const Gradients<T>* grads,
           T* probs, Mode mode, int n_threads) {
  const bool input_grad = grads && grads->dX;
  const Plan<T> plan(net.sizes, batch.n, mode, input_grad);
  const int64_t L = plan.L, n = batch.n, k = plan.k;
  const std::vector<int64_t>& d = plan.d;

  if (n == 0) {  // empty sums: loss 0, gradients 0
    if (grads)
      for (int64_t l = 0; l < L; ++l) {
        std::fill(grads->dW[l], grads->dW[l] + d[l] * d[l + 1], T(0));
        std::fill(grads->db[l], grads->db[l] + d[l + 1], T(0));
      }
    return 0.0;
  }

  double scale = 1.0;  // 1 for "sum"; 1 / total weight for "mean"
  if (reduction == Reduction::mean) {
    double total = double(n);
    if (batch.sample_weight) {
      total = 0;
      for (int64_t i = 0; i < n; ++i) total += double(batch.sample_weight[i]);
    }
    scale = 1.0 / total;
  }

  Buffer<T> packed(plan.packed_size);
  const int64_t tasks = mode == Mode::grad ? plan.n_groups : plan.n_chunks;
  const int nt = thread_count<T>(n_threads, tasks);
  Buffer<T> scratch(plan.per_thread * nt);
  Buffer<T> group_grads(mode == Mode::grad ? plan.n_params * plan.n_groups : 0);
  std::vector<double> chunk_loss(plan.n_chunks, 0.0);

  // Forward (and, for gradients, backward) through every layer for rows [r0, r0 + m).
  auto do_chunk = [&](int64_t chunk, T* buf, T* acc, bool first_in_group) {
    const int64_t r0 = chunk * plan.rows, m = std::min(plan.rows, n - r0);
    GemmScratch<T> gs(buf + plan.gemm);
    const T* h = batch.X + r0 * d[0];
    for (int64_t l = 0; l < L; ++l) {
      T* z = buf + plan.act[l + 1];
      linear_forward<T>(z, h, packed.get() + plan.wp[l], net.b[l], m, d[l], d[l + 1], gs);
      if (l < L - 1) sigmoid_forward<T>(z, m * d[l + 1]);
      h = z;
    }
    T* z = buf + plan.act[L];  // logits (m, k)
    if (mode == Mode::probs) {
      T* out = probs + r0 * k;
      if (head == Head::sigmoid) {
        std::memcpy(out, z, sizeof(T) * m * k);
        sigmoid_forward<T>(out, m * k);
      } else {
        softmax_probs<T>(out, buf + plan.m, buf + plan.lse, z, m, k);
      }
      return;
    }

    T* c = buf + plan.c;  // each row's factor in the loss
    for (int64_t i = 0; i < m; ++i)
      c[i] = batch.sample_weight ? batch.sample_weight[r0 + i] * T(scale) : T(scale);
    T* p = buf + plan.p;
    const T* t = batch.targets ? batch.targets + r0 * k : nullptr;
    const int64_t* y = batch.labels ? batch.labels + r0 : nullptr;
    if (head == Head::sigmoid) {
      chunk_loss[chunk] = sigmoid_xent_forward<T>(p, buf + plan.e, z, t, c, m, k);
      if (mode == Mode::grad) sigmoid_xent_backward<T>(z, p, t, c, m, k);
    } else {
      chunk_loss[chunk] = softmax_xent_forward<T>(p, buf + plan.m, buf + plan.lse, z, y, t, c, m, k);
      if (mode == Mode::grad) softmax_xent_backward<T>(z, p, y, t, c, m, k);
    }
    if (mode != Mode::grad) return;

    // Backward: the forward reversed. act[l + 1] holds delta_{l+1}, which overwrote h_{l+1}.
    for (int64_t l = L - 1; l >= 0; --l) {
      const T* delta = buf + plan.act[l + 1];
      const T* h_in = l > 0 ? buf + plan.act[l] : batch.X + r0 * d[0];
      T* dh = l > 0 ? buf + plan.dh : (input_grad ? grads->dX + r0 * d[0] : nullptr);
      linear_backward<T>(acc + plan.gw[l], acc + plan.gb[l], dh, delta, h_in, packed.get() + plan.wtp[l], m, d[l],
                         d[l + 1], !first_in_group, gs);
      if (l > 0) sigmoid_backward<T>(buf + plan.act[l], dh, buf + plan.act[l], m * d[l]);
    }
  };

#pragma omp parallel num_threads(nt)
  {
    // Pack every weight matrix once: W_l for h @ W, W_l^T for delta @ W^T.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < 2 * L; ++task) {
      const int64_t l = task / 2;
      if (task % 2 == 0) {
        pack_b<T>(d[l], d[l + 1], net.W[l], d[l + 1], 1, packed.get() + plan.wp[l]);
      } else if (mode == Mode::grad && (l > 0 || input_grad)) {
        pack_b<T>(d[l + 1], d[l], net.W[l], 1, d[l + 1], packed.get() + plan.wtp[l]);
      }
    }
    T* buf = scratch.get() + plan.per_thread * thread_id();
    if (mode == Mode::grad) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t g = 0; g < plan.n_groups; ++g) {
        T* acc = group_grads.get() + g * plan.n_params;
        for (int64_t chunk = plan.group_begin(g); chunk < plan.group_begin(g + 1); ++chunk)
          do_chunk(chunk, buf, acc, chunk == plan.group_begin(g));
      }
      // Sum the group buffers pairwise, block by block: ((g0 + g1) + (g2 + g3)) + ...
      const int64_t block = 4096, n_blocks = (plan.n_params + block - 1) / block;
#pragma omp for schedule(static)
      for (int64_t bi = 0; bi < n_blocks; ++bi) {
        const int64_t lo = bi * block, hi = std::min(plan.n_params, lo + block);
        for (int64_t step = 1; step < plan.n_groups; step *= 2)
          for (int64_t g = 0; g + step < plan.n_groups; g += 2 * step) {
            T* a = group_grads.get() + g * plan.n_params;
            const T* b = group_grads.get() + (g + step) * plan.n_params;
            for (int64_t i = lo; i < hi; ++i) a[i] += b[i];
          }
      }
#pragma omp for schedule(static)
      for (int64_t l = 0; l < L; ++l) {
        const T* g0 = group_grads.get();
        std::memcpy(grads->dW[l], g0 + plan.gw[l], sizeof(T) * d[l] * d[l + 1]);
        std::memcpy(grads->db[l], g0 + plan.gb[l], sizeof(T) * d[l + 1]);
      }
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t chunk = 0; chunk < plan.n_chunks; ++chunk) do_chunk(chunk, buf, nullptr, true);
    }
  }
  return pairwise_sum(chunk_loss.data(), plan.n_chunks);
}

}  // namespace mlpgrad::MLPGRAD_ISA
