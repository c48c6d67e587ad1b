// Curvature products (mlpgrad/curvature.hpp) in one pass on the chunked schedule (derivation.md §2.8). A thread
// carries a chunk of rows forward and through the head (and, for H, back through every layer, keeping the
// deltas), then for each vector v of the request the directional derivatives of the pass along v: the
// R-forward R{h_l} beside h_l, the head's Hessian on R{z_L}, and the R-backward, whose weight products add
// into the chunk's group buffer as the gradient's do. The GGN drops the hidden layers' second-derivative
// terms: its R-backward is the ordinary backward of c Hhead R{z_L}. diag(G) backpropagates the k columns of
// a factor of each row's head Hessian, sums the squares of their deltas per sample, and adds the products of
// those with the squared layer inputs (as sum_squared_grads does).
// Chunks, groups and every sum's order depend on the shapes only: the same bits for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "call.hpp"
#include "chunked.hpp"
#include "mlpgrad/curvature.hpp"
#include "mlpgrad/layout.hpp"
#include "per_sample.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// The directions V (P, m), packed once per call: for vector v and layer l, V_{W_l} as full-K panels (for
// h V_W), V_{W_l}^T (for delta V_W^T, H only, l > 0) and V_{b_l} contiguous (the R-forward's bias). With m > 1,
// V is first turned vector-major ((m, P), each vector contiguous), so that the packing reads rows and lines as
// it does the weights (read in place, a column of V would take one cache line per value).
template <typename T> struct Directions {
  int64_t m = 0, size = 0, vt = 0;
  std::vector<int64_t> wp, wtp, b;  // index v * L + l
  Directions(const std::vector<int64_t>& d, int64_t m_, bool transposed) : m(m_) {
    const int64_t L = int64_t(d.size()) - 1;
    for (int64_t v = 0; v < m; ++v)
      for (int64_t l = 0; l < L; ++l) {
        wp.push_back(size);
        size += align16(panels_size<T>(d[l], d[l + 1]));
        wtp.push_back(size);
        if (transposed && l > 0) size += align16(panels_size<T>(d[l + 1], d[l]));
        b.push_back(size);
        size += align16(d[l + 1]);
      }
    vt = size;
    if (m > 1) size += m * Layout(d).n_params;
  }
  // Called by every thread of the parallel region, which share the work.
  void pack(const Layout& layout, const T* V, T* base, bool transposed) const {
    const std::vector<int64_t>& d = layout.sizes;
    const int64_t L = int64_t(d.size()) - 1, P = layout.n_params, block = 4096;
    const T* cols = V;  // vector v at cols + v P
    if (m > 1) {
      T* Vt = base + vt;
#pragma omp for schedule(static)
      for (int64_t i0 = 0; i0 < P; i0 += block)
        for (int64_t i = i0; i < std::min(P, i0 + block); ++i)
          for (int64_t v = 0; v < m; ++v) Vt[v * P + i] = V[i * m + v];
      cols = Vt;
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < 2 * m * L; ++task) {
      const int64_t v = task / (2 * L), l = task / 2 % L, i = v * L + l;
      const T* Vw = cols + v * P + layout.w[l];  // V_{W_l} of vector v, row-major (d_{l-1}, d_l)
      if (task % 2 == 0) {
        pack_b_panels<T>(d[l], d[l + 1], Vw, d[l + 1], 1, base + wp[i]);
        std::copy(cols + v * P + layout.b[l], cols + v * P + layout.b[l] + d[l + 1], base + b[i]);
      } else if (transposed && l > 0) {
        pack_b_panels<T>(d[l + 1], d[l], Vw, 1, d[l + 1], base + wtp[i]);
      }
    }
  }
};

// The R-forward epilogue: R{z} = tile + V_b; for a hidden layer with output h, R{h} = h (1 - h) R{z} into
// the tile and, when q is wanted (H), q = (1 - 2h) R{z}, the factor the R-backward needs.
template <typename T> struct RForward {
  const T* vb;
  const T* h;  // the layer's output (null: the logits)
  int64_t ldh;
  T* q;        // or null
  int64_t ldq;
  void operator()(T* c, int64_t ldc, int64_t i0, int64_t j0, int64_t mr, int64_t nr) const {
    constexpr int W = kLanes<T>;
    tile_rows<T>(c, ldc, mr, nr, [&](Vec<T> rz, int64_t i, int64_t j) {
      const int64_t len = std::min<int64_t>(W, nr - j);
      rz += load_padded<T>(vb + j0 + j, len);
      if (!h) return rz;
      const Vec<T> hv = load_padded<T>(h + (i0 + i) * ldh + j0 + j, len);
      if (q) store_partial<T>(q + (i0 + i) * ldq + j0 + j, (T(1) - T(2) * hv) * rz, len);
      return hv * (T(1) - hv) * rz;
    });
  }
};

// The R-backward epilogue: R{delta_{l-1}} = tile * h (1 - h) + delta_{l-1} q, where the tile holds
// R{delta_l} W^T + delta_l V_W^T and delta_{l-1} = (delta_l W^T) h (1 - h) (so that
// (delta_l W^T) (1 - 2h) R{h} = delta_{l-1} (1 - 2h) R{z} = delta_{l-1} q).
template <typename T> struct RBackward {
  const T* h;
  const T* delta;
  const T* q;
  int64_t ld;  // of h, delta and q alike (d_{l-1} values per row)
  void operator()(T* c, int64_t ldc, int64_t i0, int64_t j0, int64_t mr, int64_t nr) const {
    constexpr int W = kLanes<T>;
    tile_rows<T>(c, ldc, mr, nr, [&](Vec<T> x, int64_t i, int64_t j) {
      const int64_t len = std::min<int64_t>(W, nr - j), at = (i0 + i) * ld + j0 + j;
      const Vec<T> hv = load_padded<T>(h + at, len);
      return x * (hv * (T(1) - hv)) + load_padded<T>(delta + at, len) * load_padded<T>(q + at, len);
    });
  }
};

// One thread's buffers for a chunk's directional derivatives, carved from the plan's product scratch:
// R{h_l} and q_l (rows, d_l) for the hidden layers l = 1 .. L-1 (q for H only), R{z_L} (rows, k), two
// alternating buffers for R{delta} (rows, max hidden) and the squares of a layer's input (ggn_diag).
template <typename T> struct RBuffers {
  std::vector<T*> rh, q;
  T *rz, *a, *b, *h2;
  static std::vector<int64_t> widths(const std::vector<int64_t>& d, bool with_q) {
    const int64_t L = int64_t(d.size()) - 1;
    std::vector<int64_t> w;
    for (int64_t l = 1; l < L; ++l) w.push_back(d[l]);
    for (int64_t l = 1; l < L; ++l) w.push_back(with_q ? d[l] : 0);
    int64_t hidden = 1, inputs = 1;
    for (int64_t l = 0; l < L; ++l) {
      inputs = std::max(inputs, d[l]);
      if (l > 0) hidden = std::max(hidden, d[l]);
    }
    for (int64_t x : {d[L], hidden, hidden, inputs}) w.push_back(x);
    return w;
  }
  // Values per row, each region rounded up to 16 so that `rows` of each fit aligned.
  static int64_t row_scratch(const std::vector<int64_t>& d, bool with_q) {
    int64_t s = 0;
    for (int64_t w : widths(d, with_q)) s += align16(w);
    return s;
  }
  RBuffers(const Plan<T>& plan, T* base, bool with_q) {
    const std::vector<int64_t> w = widths(plan.d, with_q);
    std::vector<T*> at;
    for (int64_t x : w) {
      at.push_back(base);
      base += align16(plan.rows * x);
    }
    const int64_t H = plan.L - 1;
    rh.assign(plan.L, nullptr);
    q.assign(plan.L, nullptr);
    for (int64_t l = 1; l < plan.L; ++l) {
      rh[l] = at[l - 1];
      q[l] = with_q ? at[H + l - 1] : nullptr;
    }
    rz = at[2 * H];
    a = at[2 * H + 1];
    b = at[2 * H + 2];
    h2 = at[2 * H + 3];
  }
};

// What a chunk pass shares with its vectors: the call, the chunk's rows, its buffers and the directions.
template <typename T> struct CurvatureChunk {
  const Call<T>& c;
  const Rows<T>& r;
  const RBuffers<T>& rb;
  const Directions<T>& dirs;
  const T* packed_dirs;
  const Layout& layout;
  GemmScratch<T> gs;
  const T* Vwp(int64_t v, int64_t l) const { return packed_dirs + dirs.wp[v * r.plan.L + l]; }
  const T* Vwtp(int64_t v, int64_t l) const { return packed_dirs + dirs.wtp[v * r.plan.L + l]; }
  const T* Vb(int64_t v, int64_t l) const { return packed_dirs + dirs.b[v * r.plan.L + l]; }
  // The head on the chunk's rows (the probabilities p, the factors c_i) for the head's curvature.
  HeadScratch<T> head() const { return HeadScratch<T>(r.plan, r.buf, 0); }
  const T* targets() const { return c.batch.targets ? c.batch.targets + r.r0 * r.plan.k : nullptr; }
};

// R{z_L} (m, k) = J v for the chunk's rows into rb.rz, R{h_l} (and q_l) kept for the hidden layers:
// R{z_l} = R{h_{l-1}} W_l + h_{l-1} V_{W_l} + V_{b_l}, R{h_0} = 0.
template <typename T> void r_forward(const CurvatureChunk<T>& k, int64_t v) {
  const Plan<T>& plan = k.r.plan;
  const std::vector<int64_t>& d = plan.d;
  for (int64_t l = 0; l < plan.L; ++l) {
    const bool hidden = l + 1 < plan.L;
    const MatView<T> out{hidden ? k.rb.rh[l + 1] : k.rb.rz, d[l + 1]};
    if (l > 0)
      gemm<T>(out, false, Strided<T>::rows({k.rb.rh[l], d[l]}), k.c.ws + plan.wp[l], Strided<T>{nullptr, 0, 0}, k.r.m,
              d[l + 1], d[l], k.gs);
    const RForward<T> epi{k.Vb(v, l), hidden ? k.r.h(l + 1).p : nullptr, d[l + 1], hidden ? k.rb.q[l + 1] : nullptr,
                          d[l + 1]};
    gemm<T>(out, l > 0, Strided<T>::rows(k.r.h(l)), k.Vwp(v, l), Strided<T>{nullptr, 0, 0}, k.r.m, d[l + 1], d[l],
            k.gs, epi);
  }
}

// c_i Hhead_i R{z_L,i}, in place over rb.rz.
template <typename T> void head_curvature(const CurvatureChunk<T>& k) {
  const HeadScratch<T> s = k.head();
  head_hessian_vp<T>(k.c.head, k.rb.rz, s.p, k.targets(), s.c, k.r.m, k.r.plan.k);
}

// For H: forward, head (factors c_i, deltas scaled by them as in the gradient) and every layer's delta kept;
// for G only the forward and the head (its probabilities). Returns the chunk's loss.
template <typename T> double chunk_prelude(const Call<T>& c, const Rows<T>& r, GemmScratch<T> gs, bool deltas) {
  if (deltas) return chunk_deltas<T>(c, r, gs, false);
  chunk_forward<T>(c, r.buf, r.r0, r.m, gs);
  return head_rows<T>(c, r.buf + r.plan.act[r.plan.L], HeadScratch<T>(r.plan, r.buf, 0), r.r0, r.m);
}

// H v for the chunk into the vector's group buffer g (pack order; the group's first chunk writes, the
// others add): the R-forward, the head, then per layer (reversed)
//   R{dW_l} = R{h_{l-1}}^T delta_l + h_{l-1}^T R{delta_l},  R{db_l} = column sums of R{delta_l},
//   R{delta_{l-1}} = (R{delta_l} W_l^T + delta_l V_{W_l}^T) h (1 - h) + delta_{l-1} q_{l-1}.
template <typename T> void hvp_chunk(const CurvatureChunk<T>& k, int64_t v, T* g, bool first) {
  const Plan<T>& plan = k.r.plan;
  const std::vector<int64_t>& d = plan.d;
  const int64_t m = k.r.m;
  const Strided<T> none{nullptr, 0, 0};
  r_forward<T>(k, v);
  head_curvature<T>(k);
  MatView<T> cur{k.rb.rz, d[plan.L]};
  T* spare[2] = {k.rb.a, k.rb.b};
  for (int64_t l = plan.L - 1; l >= 0; --l) {
    T* db = g + k.layout.b[l];
    const MatView<T> dW{g + k.layout.w[l], d[l + 1]};
    if (first) std::fill(db, db + d[l + 1], T(0));
    if (l > 0)
      linear_backward_weights<T>(dW, nullptr, k.r.delta(l), {k.rb.rh[l], d[l]}, m, d[l], d[l + 1], !first, k.gs);
    linear_backward_weights<T>(dW, db, cur, k.r.h(l), m, d[l], d[l + 1], l > 0 || !first, k.gs);
    if (l == 0) break;
    const MatView<T> next{spare[l % 2], d[l]};
    gemm<T>(next, false, Strided<T>::rows(cur), k.c.ws + plan.wtp[l], none, m, d[l], d[l + 1], k.gs);
    gemm<T>(next, true, Strided<T>::rows(k.r.delta(l)), k.Vwtp(v, l), none, m, d[l], d[l + 1], k.gs,
            RBackward<T>{k.r.h(l).p, k.r.delta(l - 1).p, k.rb.q[l], d[l]});
    cur = next;
  }
}

// The ordinary backward of the output rows in rb.rz, with each layer's weight products added into g.
template <typename T> void backward_products(const CurvatureChunk<T>& k, T* g, bool first) {
  const Plan<T>& plan = k.r.plan;
  const std::vector<int64_t>& d = plan.d;
  const int64_t m = k.r.m;
  MatView<T> cur{k.rb.rz, d[plan.L]};
  T* spare[2] = {k.rb.a, k.rb.b};
  for (int64_t l = plan.L - 1; l >= 0; --l) {
    const MatView<T> next{spare[l % 2], d[l]};
    if (l > 0) linear_backward_input<T>(next, cur, k.c.ws + plan.wtp[l], k.r.h(l), m, d[l], d[l + 1], k.gs);
    T* db = g + k.layout.b[l];
    if (first) std::fill(db, db + d[l + 1], T(0));
    linear_backward_weights<T>({g + k.layout.w[l], d[l + 1]}, db, cur, k.r.h(l), m, d[l], d[l + 1], !first, k.gs);
    cur = next;
  }
}

// G v for the chunk into g: R{z_L} = J v by the R-forward, u = c Hhead R{z_L}, then the ordinary backward of u.
template <typename T> void ggn_vp_chunk(const CurvatureChunk<T>& k, int64_t v, T* g, bool first) {
  r_forward<T>(k, v);
  head_curvature<T>(k);
  backward_products<T>(k, g, first);
}

// diag(G) for the chunk into g. For each column j of the factors S_i (S_i S_i^T = c_i Hhead_i), its ordinary
// backward gives delta^{(j)}_l; diag(G) of W_l is sum_i (h_{l-1,i}^2)^T M_{l,i} with M_l = sum_j (delta^{(j)}_l)^2
// (and of b_l the column sums of M_l): the squares summed over the k columns first (in the kept-delta buffers),
// then one product per layer instead of k.
template <typename T> void ggn_diag_chunk(const CurvatureChunk<T>& k, T* g, bool first) {
  const Plan<T>& plan = k.r.plan;
  const std::vector<int64_t>& d = plan.d;
  const int64_t m = k.r.m;
  const HeadScratch<T> s = k.head();
  T* spare[2] = {k.rb.a, k.rb.b};
  for (int64_t j = 0; j < plan.k; ++j) {
    head_hessian_factor_column<T>(k.c.head, k.rb.rz, s.p, k.targets(), s.c, m, plan.k, j);
    MatView<T> cur{k.rb.rz, d[plan.L]};
    for (int64_t l = plan.L - 1; l >= 0; --l) {
      const MatView<T> next{spare[l % 2], d[l]};
      if (l > 0) linear_backward_input<T>(next, cur, k.c.ws + plan.wtp[l], k.r.h(l), m, d[l], d[l + 1], k.gs);
      const MatView<T> M = k.r.delta(l);
      for (int64_t i = 0; i < m; ++i) {
        const T* x = cur.p + i * cur.ld;
        T* acc = M.p + i * M.ld;
        for (int64_t q = 0; q < d[l + 1]; ++q) acc[q] = j == 0 ? x[q] * x[q] : acc[q] + x[q] * x[q];
      }
      cur = next;
    }
  }
  for (int64_t l = 0; l < plan.L; ++l) {
    square_rows<T>(k.r.h(l), m, d[l], k.rb.h2);
    T* db = g + k.layout.b[l];
    if (first) std::fill(db, db + d[l + 1], T(0));
    linear_backward_weights<T>({g + k.layout.w[l], d[l + 1]}, db, k.r.delta(l), {k.rb.h2, d[l]}, m, d[l], d[l + 1],
                               !first, k.gs);
  }
}

// Sum the group buffers (each m vectors of P values, pack order, vstride apart) pairwise (sum_groups' tree),
// in blocks of parameters shared by the threads, and write the sums to out (P, m): a block's
// every vector on one thread, so that no two threads write one cache line of out.
template <typename T>
void sum_vector_groups(T* groups, int64_t n_groups, int64_t gstride, int64_t vstride, int64_t P, int64_t m, T* out) {
  const int64_t block = 4096;
#pragma omp for schedule(static)
  for (int64_t lo = 0; lo < P; lo += block) {
    const int64_t hi = std::min(P, lo + block);
    for (int64_t v = 0; v < m; ++v) {
      const T* a = groups + v * vstride;
      const T* b = sum_groups_but_last<T>(groups + v * vstride, n_groups, gstride, lo, hi);
      if (b)
        for (int64_t i = lo; i < hi; ++i) out[i * m + v] = a[i] + b[i];
      else
        for (int64_t i = lo; i < hi; ++i) out[i * m + v] = a[i];
    }
  }
}

// One request (the core's curvature entry, after its checks): pack the weights and the directions, then the
// chunks group by group (one thread per group), then the pairwise sum of the group buffers into out.
template <typename T>
double run_curvature(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                     const CurvatureRequest<T>& q, int n_threads, const Interrupt* interrupt) {
  const std::vector<int64_t>& d = net.sizes;
  const Layout layout(d);
  const bool hvp = q.op == CurvatureOp::hvp, diag = q.op == CurvatureOp::ggn_diag;
  const int64_t P = layout.n_params, m = diag ? 1 : q.m;
  if (batch.n == 0) {
    std::fill(q.out, q.out + P * m, T(0));
    return 0.0;
  }
  const Plan<T> plan(d, batch.n, Mode::grad, false, Schedule::chunked,
                     PlanExtras{hvp || diag, RBuffers<T>::row_scratch(d, hvp)});
  const int nt = thread_count(n_threads, plan.n_groups);
  const Directions<T> dirs(d, diag ? 0 : m, hvp);
  const int64_t vstride = align16(P), gstride = vstride * m, base = plan.workspace_size(nt);
  WorkspaceLease<T> lease;
  T* ws = lease.get(base + dirs.size + gstride * plan.n_groups);
  T* packed = ws + base;
  T* groups = packed + dirs.size;
  const double scale = reduction == Reduction::mean ? 1.0 / batch.total_weight : 1.0;
  std::vector<double> block_loss(plan.n_chunks, 0.0);
  StopFlag stop(interrupt);
  const Call<T> c{net, head, batch, scale, Mode::grad, nullptr, nullptr, plan, ws, stop, block_loss};
#pragma omp parallel num_threads(nt)
  {
    T* mine = c.thread_scratch(thread_id());
    const GemmScratch<T> gs(mine + plan.gemm);
    const RBuffers<T> rb(plan, mine + plan.extra, hvp);
    pack_weights<T>(c);
    if (!diag) dirs.pack(layout, q.V, packed, hvp);
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < plan.n_groups; ++g)
      for (int64_t chunk = plan.group_begin(g); chunk < plan.group_begin(g + 1); ++chunk) {
        if (stop.stopped()) continue;
        const int64_t r0 = plan.chunk_begin(chunk);
        const Rows<T> r{plan, batch.X, mine, r0, plan.chunk_begin(chunk + 1) - r0};
        const CurvatureChunk<T> k{c, r, rb, dirs, packed, layout, gs};
        const bool first = chunk == plan.group_begin(g);
        T* G = groups + g * gstride;
        block_loss[chunk] = chunk_prelude<T>(c, r, gs, hvp);
        if (diag) {
          ggn_diag_chunk<T>(k, G, first);
        } else {
          for (int64_t v = 0; v < m; ++v)
            (hvp ? hvp_chunk<T> : ggn_vp_chunk<T>)(k, v, G + v * vstride, first);
        }
      }
    sum_vector_groups<T>(groups, plan.n_groups, gstride, vstride, P, m, q.out);
  }
  if (stop.raised()) throw Interrupted();
  return pairwise_sum(block_loss.data(), int64_t(block_loss.size()));
}

}  // namespace mlpgrad::MLPGRAD_ISA
