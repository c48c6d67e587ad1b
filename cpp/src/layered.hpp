// The layered schedule (few rows for the size of the weights): one layer at a time over the whole batch,
// each product cut into 2-D output tiles shared among the threads. Every output element, dW included, is
// summed by one tile over the full inner dimension in a fixed order: no reduction, and the tiling (which
// may depend on the thread count) changes no bit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "call.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// A 2-D tiling of an (rows, cols) output = A (rows, k) @ B (k, cols) into R x C tiles of equal size
// (up to rounding to MR rows and NR columns), for `threads` threads. Each row tile reads all of B
// and each column tile all of A (and packs it again), so among the tilings with at least `want`
// tiles, a count the thread count divides when there is one, it takes the one that reads least:
// C * rows + R * cols (times k). Any tiling gives the same bits: each element is summed by one tile
// over the full inner dimension, in the same order.
template <typename T> struct Tiling {
  int64_t rows, cols, mt = 0, nt = 0, row_tiles = 0, col_tiles = 0;
  Tiling(int64_t r, int64_t c, int64_t want, int64_t threads) : rows(r), cols(c) {
    const int64_t max_r = std::max<int64_t>(1, (r + Tile<T>::MR - 1) / Tile<T>::MR);
    const int64_t max_c = std::max<int64_t>(1, (c + Tile<T>::NR - 1) / Tile<T>::NR);
    double best = -1;
    bool best_even = false;
    for (int64_t R = 1; R <= max_r; ++R) {
      // equal tiles: R row tiles of mt rows, C column tiles of nt columns
      const int64_t m_t = round_up((r + R - 1) / R, Tile<T>::MR), R_eff = (r + m_t - 1) / m_t;
      if (R_eff != R) continue;
      const int64_t C_min = std::max<int64_t>(1, (want + R - 1) / R);
      for (int64_t C0 = C_min; C0 <= C_min + 2; ++C0) {
        const int64_t C1 = std::min(C0, max_c);
        const int64_t n_t = round_up((c + C1 - 1) / C1, Tile<T>::NR), C = (c + n_t - 1) / n_t;
        const bool even = (R * C) % threads == 0;
        const double cost = double(C) * double(r) + double(R) * double(c);
        if (best < 0 || (even && !best_even) || (even == best_even && cost < best)) {
          best = cost; best_even = even; mt = m_t; nt = n_t; row_tiles = R; col_tiles = C;
        }
      }
      if (R >= want && best_even) break;  // more row tiles only add reads of B
    }
  }
  int64_t count() const { return row_tiles * col_tiles; }
  // tile t: rows [r0, r0 + mr), columns [c0, c0 + nc)
  void get(int64_t t, int64_t& r0, int64_t& mr, int64_t& c0, int64_t& nc) const {
    r0 = t / col_tiles * mt;
    c0 = t % col_tiles * nt;
    mr = std::min(mt, rows - r0);
    nc = std::min(nt, cols - c0);
  }
};

// Tiles per product: at least 4 per thread, so that a thread slowed by another process holds up a phase
// by a quarter of its share only.
inline int64_t tiles_wanted(int nt) { return 4 * int64_t(nt); }

// z_l = act(h_{l-1} W_l + b_l) for every layer over the whole batch, layer by layer.
template <typename T> void layered_forward(const Call<T>& c, T* shared, GemmScratch<T> gs, int nt) {
  const Plan<T>& plan = c.plan;
  const std::vector<int64_t>& d = plan.d;
  const int64_t L = plan.L, n = plan.n;
  for (int64_t l = 0; l < L; ++l) {
    const Tiling<T> tiles(n, d[l + 1], tiles_wanted(nt), nt);
    const T* h = l == 0 ? c.batch.X : shared + plan.act[l];
    T* z = shared + plan.act[l + 1];
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles.count(); ++t) {
      if (c.stop.stopped()) continue;
      int64_t r0, mr, c0, nc;
      tiles.get(t, r0, mr, c0, nc);
      linear_forward<T>(MatView<T>(z, d[l + 1]).at(r0, c0), MatView<const T>(h, d[l]).at(r0, 0),
                        c.ws + plan.wp[l] + c0 * d[l], c.net.b[l] + c0, mr, d[l], nc, l < L - 1, gs);
    }
  }
}

// The head in blocks of 256 rows (the units of the loss sum).
template <typename T> void layered_head(const Call<T>& c, T* shared) {
  const Plan<T>& plan = c.plan;
  const int64_t n_blocks = int64_t(c.block_loss.size());
#pragma omp for schedule(dynamic, 1)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    if (c.stop.stopped()) continue;
    const int64_t r0 = blk * 256, m = std::min<int64_t>(256, plan.n - r0);
    c.block_loss[blk] = head_rows<T>(c, shared + plan.act[plan.L] + r0 * plan.k, HeadScratch<T>(plan, shared, r0),
                                     r0, m);
  }
}

// Layer l's backward: the tiles of dW_l (d_l, d_{l+1}) and, beside them in one loop, the tiles of
// delta_{l-1} (n, d_l) or dX. Returns the delta for layer l - 1.
template <typename T>
const T* layered_backward_layer(const Call<T>& c, T* shared, int64_t l, const T* delta, GemmScratch<T> gs, int nt) {
  const Plan<T>& plan = c.plan;
  const std::vector<int64_t>& d = plan.d;
  const int64_t n = plan.n;
  const T* h_in = l > 0 ? shared + plan.act[l] : c.batch.X;
  T* next = nullptr;
  if (l > 0) next = shared + (delta == shared + plan.delta0 ? plan.delta1 : plan.delta0);
  const bool want_input = l > 0 || c.input_grad();
  const Tiling<T> wtiles(d[l], d[l + 1], tiles_wanted(nt), nt);
  const Tiling<T> itiles(n, d[l], want_input ? tiles_wanted(nt) : 1, nt);
  const int64_t n_wt = wtiles.count(), n_it = want_input ? itiles.count() : 0;
#pragma omp for schedule(dynamic, 1)
  for (int64_t t = 0; t < n_wt + n_it; ++t) {
    if (c.stop.stopped()) continue;
    int64_t r0, mr, c0, nc;
    if (t < n_wt) {
      wtiles.get(t, r0, mr, c0, nc);
      T* db = r0 == 0 ? c.grads->db[l] + c0 : nullptr;  // column sums once, by the first row of tiles
      if (db) std::fill(db, db + nc, T(0));
      // dW rows [r0, r0 + mr) come from h_in's columns [r0, r0 + mr)
      linear_backward_weights<T>(MatView<T>(c.grads->dW[l], d[l + 1]).at(r0, c0), db,
                                 MatView<const T>(delta, d[l + 1]).at(0, c0), MatView<const T>(h_in, d[l]).at(0, r0),
                                 n, mr, nc, false, gs);
    } else {
      itiles.get(t - n_wt, r0, mr, c0, nc);
      T* out = l > 0 ? next : c.grads->dX;
      const MatView<const T> h_tile = l > 0 ? MatView<const T>(h_in, d[l]).at(r0, c0) : MatView<const T>(nullptr, 0);
      linear_backward_input<T>(MatView<T>(out, d[l]).at(r0, c0), MatView<const T>(delta, d[l + 1]).at(r0, 0),
                               c.ws + plan.wtp[l] + c0 * d[l + 1], h_tile, mr, nc, d[l + 1], gs);
    }
  }
  return next;
}

// The whole schedule on nt threads: pack, forward, head, and for gradients the backward, layer by layer
// in reverse (delta_L overwrote the logits; the others alternate two buffers).
template <typename T> void run_layered(const Call<T>& c, int nt) {
  T* shared = c.ws + c.plan.shared;
#pragma omp parallel num_threads(nt)
  {
    GemmScratch<T> gs(c.thread_scratch(thread_id()) + c.plan.gemm);
    pack_weights<T>(c);
    layered_forward<T>(c, shared, gs, nt);
    layered_head<T>(c, shared);
    if (c.mode == Mode::grad) {
      const T* delta = shared + c.plan.act[c.plan.L];
      for (int64_t l = c.plan.L - 1; l >= 0; --l) delta = layered_backward_layer<T>(c, shared, l, delta, gs, nt);
      apply_hook<T>(c);
    }
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
