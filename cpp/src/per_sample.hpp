// Per-sample quantities (mlpgrad/per_sample.hpp) in one pass, on the chunked schedule: a thread carries a
// chunk of rows forward, through the head with unit factors (delta_L = dl_i/dz: each sample's own loss) and
// back through every layer, keeping every layer's delta; then one product of the chunk's (h_{l-1}, delta_l)
// pairs makes the quantity asked for (BackPACK's structure: one backward, optional products per layer).
// Products that sum over samples (clipped, sumsq) add into group buffers as the gradient does; the others
// write the chunk's own rows. Chunks and groups depend on the shapes only: the same bits for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "call.hpp"
#include "chunked.hpp"
#include "mlpgrad/layout.hpp"
#include "mlpgrad/per_sample.hpp"
#include "network.hpp"
#include "workspace.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// One chunk, rows [r0, r0 + m) of the batch: the input of layer l, h(l) (m, d_l) (h(0): rows of X), and
// its delta, delta(l) (m, d_{l+1}), unweighted.
template <typename T> struct Rows {
  const Plan<T>& plan;
  const T* X;
  T* buf;
  int64_t r0, m;
  MatView<const T> h(int64_t l) const {
    return l == 0 ? MatView<const T>(X + r0 * plan.d[0], plan.d[0]) : MatView<const T>(buf + plan.act[l], plan.d[l]);
  }
  MatView<T> delta(int64_t l) const { return {buf + (l == plan.L - 1 ? plan.act[plan.L] : plan.dl[l]), plan.d[l + 1]}; }
};

// The head on the chunk: returns the loss sum_i c_i l_i of its rows; delta_L = dl_i/dz (factor 1) over z.
template <typename T> double head_unit_deltas(const Call<T>& c, T* z, const HeadScratch<T>& s, int64_t r0, int64_t m) {
  const Batch<T>& b = c.batch;
  const int64_t k = c.plan.k;
  for (int64_t i = 0; i < m; ++i) s.c[i] = b.sample_weight ? b.sample_weight[r0 + i] * T(c.scale) : T(c.scale);
  const T* t = b.targets ? b.targets + r0 * k : nullptr;
  const int64_t* y = b.labels ? b.labels + r0 : nullptr;
  double loss;
  if (c.head == Head::sigmoid) {
    loss = sigmoid_xent_forward<T>(s.p, s.e, z, t, s.c, m, k);
    std::fill(s.c, s.c + m, T(1));
    sigmoid_xent_backward<T>(z, s.p, t, s.c, m, k);
  } else if (c.head == Head::identity) {
    loss = identity_forward<T>(s.e, z, t, s.c, m, k);
    std::fill(s.c, s.c + m, T(1));
    identity_backward<T>(z, z, t, s.c, m, k);
  } else {
    loss = softmax_xent_forward<T>(s.p, s.m, s.lse, z, y, t, s.c, m, k);
    std::fill(s.c, s.c + m, T(1));
    softmax_xent_backward<T>(z, s.p, y, t, s.c, m, k);
  }
  return loss;
}

// Forward, head and every layer's delta for one chunk; returns its loss. The deltas are each sample's own
// (unit factors), or with unit_factors false scaled by c_i as in the gradient (the curvature products').
template <typename T> double chunk_deltas(const Call<T>& c, const Rows<T>& r, GemmScratch<T> gs, bool unit_factors = true) {
  const Plan<T>& plan = c.plan;
  const std::vector<int64_t>& d = plan.d;
  chunk_forward<T>(c, r.buf, r.r0, r.m, gs);
  T* z = r.buf + plan.act[plan.L];
  const HeadScratch<T> s(plan, r.buf, 0);
  const double loss = unit_factors ? head_unit_deltas<T>(c, z, s, r.r0, r.m) : head_rows<T>(c, z, s, r.r0, r.m);
  for (int64_t l = plan.L - 1; l >= 1; --l)
    linear_backward_input<T>(r.delta(l - 1), r.delta(l), c.ws + plan.wtp[l], r.h(l), r.m, d[l], d[l + 1], gs);
  return loss;
}

// sum_j x_j y_j over n values, in lanes, then the lanes in order.
template <typename T> T dot_lanes(const T* x, const T* y, int64_t n) {
  constexpr int W = kLanes<T>;
  Vec<T> acc = Vec<T>{};
  int64_t j = 0;
  for (; j + W <= n; j += W) acc = vfma<T>(load<T>(x + j), load<T>(y + j), acc);
  if (j < n) acc = vfma<T>(load_padded<T>(x + j, n - j), load_padded<T>(y + j, n - j), acc);
  T s = 0;
  for (int q = 0; q < W; ++q) s += acc[q];
  return s;
}

// ||x_i||^2 in T of m rows (ld apart) of n values: each row's squares in lanes, then W rows' lanes summed
// together (reduce_add_rows: a fixed tree, a few shuffles per row instead of W dependent adds).
template <typename T> void row_sum_squares(const T* x, int64_t ld, int64_t m, int64_t n, T* out) {
  constexpr int W = kLanes<T>;
  for (int64_t i0 = 0; i0 < m; i0 += W) {
    const int64_t mw = std::min<int64_t>(W, m - i0);
    Vec<T> v[W];
    for (int64_t r = 0; r < W; ++r) {
      Vec<T> acc{};
      const T* a = x + (i0 + std::min<int64_t>(r, mw - 1)) * ld;
      int64_t j = 0;
      for (; j + W <= n; j += W) acc = vfma<T>(load<T>(a + j), load<T>(a + j), acc);
      if (j < n) acc = vfma<T>(load_padded<T>(a + j, n - j), load_padded<T>(a + j, n - j), acc);
      v[r] = acc;
    }
    const Vec<T> sums = reduce_add_rows<T>(v);
    for (int64_t r = 0; r < mw; ++r) out[i0 + r] = sums[r];
  }
}

// ||x|| in double from its sum of squares s in T when s neither overflowed nor lost digits to underflow,
// else again with x scaled by its largest |x_j| (float deltas of 1e20 square past FLT_MAX).
template <typename T> double norm_from(T s, const T* x, int64_t n) {
  if (std::isnan(s)) return double(s);
  if (s <= std::numeric_limits<T>::max() && s >= std::numeric_limits<T>::min() / std::numeric_limits<T>::epsilon())
    return std::sqrt(double(s));
  double a = 0;
  for (int64_t j = 0; j < n; ++j) a = std::max(a, std::fabs(double(x[j])));
  if (a == 0 || std::isinf(a)) return a;
  double t = 0;
  for (int64_t j = 0; j < n; ++j) t += (double(x[j]) / a) * (double(x[j]) / a);
  return a * std::sqrt(t);
}

// sqrt(x^2 + 1) without overflow (x >= 0).
inline double with_one(double x) { return x < 1e150 ? std::sqrt(x * x + 1.0) : x; }

// norm (m, L): ||g_{i,l}|| = sqrt(||h_{l-1,i}||^2 + 1) ||delta_{l,i}||, in double; sq: 2 m values of scratch.
template <typename T> void layer_norms(const Rows<T>& r, T* norm, T* sq) {
  const int64_t L = r.plan.L;
  const std::vector<int64_t>& d = r.plan.d;
  for (int64_t l = 0; l < L; ++l) {
    const MatView<const T> h = r.h(l);
    const MatView<T> dl = r.delta(l);
    row_sum_squares<T>(h.p, h.ld, r.m, d[l], sq);
    row_sum_squares<T>(dl.p, dl.ld, r.m, d[l + 1], sq + r.m);
    // ||h||^2 + 1 needs ||h||^2 finite only (its underflow is lost in the 1); ||delta||^2 needs its digits too.
    constexpr T big = std::numeric_limits<T>::max(), tiny = std::numeric_limits<T>::min() / std::numeric_limits<T>::epsilon();
    for (int64_t i = 0; i < r.m; ++i) {
      const T sh = sq[i], sd = sq[r.m + i];
      if (sh <= big && sd <= big && sd >= tiny) {
        norm[i * L + l] = T(std::sqrt((double(sh) + 1.0) * double(sd)));
      } else {
        const double hn = norm_from<T>(sh, h.p + i * h.ld, d[l]);
        norm[i * L + l] = T(with_one(hn) * norm_from<T>(sd, dl.p + i * dl.ld, d[l + 1]));
      }
    }
  }
}

// ||g_i|| from the layers' norms (m, L); scaled by the largest when the squares overflow double.
template <typename T> T whole_norm(const T* norm_row, int64_t L) {
  double s = 0, a = 0;
  for (int64_t l = 0; l < L; ++l) s += double(norm_row[l]) * double(norm_row[l]);
  if (!std::isinf(s)) return T(std::sqrt(s));
  for (int64_t l = 0; l < L; ++l) a = std::max(a, double(norm_row[l]));
  if (std::isinf(a)) return T(a);
  s = 0;
  for (int64_t l = 0; l < L; ++l) s += (double(norm_row[l]) / a) * (double(norm_row[l]) / a);
  return T(a * std::sqrt(s));
}

// The requested norms of the chunk's rows, from the layers' norms (m, L).
template <typename T> void write_norms(const PerSampleRequest<T>& q, const Rows<T>& r, const T* norm) {
  const int64_t L = r.plan.L;
  for (int64_t i = 0; i < r.m; ++i) {
    if (q.norms) q.norms[r.r0 + i] = whole_norm<T>(norm + i * L, L);
    if (q.layer_norms) std::copy(norm + i * L, norm + (i + 1) * L, q.layer_norms + (r.r0 + i) * L);
  }
}

// min(1, max_norm / norm); 1 for a zero norm.
inline double clip_factor(double max_norm, double norm) { return norm > max_norm ? max_norm / norm : 1.0; }

// dW_l [+]= h(l)^T delta(l) and db_l [+]= column sums of delta(l), into a group buffer (chunk_backward's rule:
// the group's first chunk writes, the others add).
template <typename T> void add_weight_products(const Rows<T>& r, T* acc, bool first, GemmScratch<T> gs) {
  const Plan<T>& plan = r.plan;
  const std::vector<int64_t>& d = plan.d;
  for (int64_t l = 0; l < plan.L; ++l) {
    T* db = acc + plan.gb[l];
    if (first) std::fill(db, db + d[l + 1], T(0));
    linear_backward_weights<T>({acc + plan.gw[l], d[l + 1]}, db, r.delta(l), r.h(l), r.m, d[l], d[l + 1], !first, gs);
  }
}

// Each product: what it does with one chunk's (h, delta) pairs, the scratch it needs per row, and whether it
// sums over samples into group buffers.
template <typename T> struct NormsProduct {
  const PerSampleRequest<T>& q;
  static int64_t row_scratch(const std::vector<int64_t>& d) { return int64_t(d.size()) + 1; }  // L + 2
  static constexpr bool grouped = false;
  void operator()(const Call<T>&, const Rows<T>& r, T* scratch, T*, bool, GemmScratch<T>) const {
    layer_norms<T>(r, scratch, scratch + r.m * r.plan.L);
    write_norms<T>(q, r, scratch);
  }
};

// Clipping reweights sample i's loss by f_i, so it scales every delta row of the sample: the clipped sum is
// the gradient's weight products on rescaled delta rows (c_i f_i, or c_i f_{i,l} for layer l).
template <typename T> struct ClipProduct {
  const PerSampleRequest<T>& q;
  static int64_t row_scratch(const std::vector<int64_t>& d) { return int64_t(d.size()) + 1; }  // L + 2
  static constexpr bool grouped = true;
  void operator()(const Call<T>& c, const Rows<T>& r, T* norm, T* acc, bool first, GemmScratch<T> gs) const {
    const int64_t L = r.plan.L;
    const bool per_layer = q.max_norm.size() > 1;
    layer_norms<T>(r, norm, norm + r.m * L);
    write_norms<T>(q, r, norm);
    for (int64_t i = 0; i < r.m; ++i) {
      const double ci = c.batch.sample_weight ? double(c.batch.sample_weight[r.r0 + i] * T(c.scale)) : double(T(c.scale));
      const double whole = per_layer ? 0.0 : clip_factor(q.max_norm[0], double(whole_norm<T>(norm + i * L, L)));
      for (int64_t l = 0; l < L; ++l) {
        const double f = per_layer ? clip_factor(q.max_norm[l], double(norm[i * L + l])) : whole;
        const T s = T(ci * f);
        T* row = r.delta(l).p + i * r.delta(l).ld;
        for (int64_t j = 0; j < r.plan.d[l + 1]; ++j) row[j] *= s;
      }
    }
    add_weight_products<T>(r, acc, first, gs);
  }
};

// Row i of the output is g_i in pack order, one contiguous row: every layer's outer product
// h_{l-1,i} delta_{l,i}^T, then every layer's delta (the biases), streamed (the rows are written once, n P values: memory-bound).
template <typename T> struct GradsProduct {
  const PerSampleRequest<T>& q;
  const Layout& layout;
  static int64_t row_scratch(const std::vector<int64_t>&) { return 0; }
  static constexpr bool grouped = false;
  void operator()(const Call<T>&, const Rows<T>& r, T*, T*, bool, GemmScratch<T>) const {
    const std::vector<int64_t>& d = r.plan.d;
    for (int64_t i = 0; i < r.m; ++i) {
      RowStreamer<T> g(q.rows + (r.r0 + i) * layout.n_params);
      for (int64_t l = 0; l < r.plan.L; ++l) {
        const T* h = r.h(l).p + i * r.h(l).ld;
        for (int64_t a = 0; a < d[l]; ++a) g.put(h[a], r.delta(l).p + i * r.delta(l).ld, d[l + 1]);
      }
      for (int64_t l = 0; l < r.plan.L; ++l) g.put(T(1), r.delta(l).p + i * r.delta(l).ld, d[l + 1]);
      g.finish();
    }
    stream_fence();
  }
};

// g_i . V[:, v] = sum_l sum_j delta_{l,ij} (h_{l-1,i} V_l + Vb_l)[j, v], with V_l = V's W_l rows viewed as a
// (d_{l-1}, d_l m) matrix and Vb_l = its b_l rows flattened to (d_l m,): one product h_{l-1} V_l per layer (the
// gradient's dW product, m times), with Vb_l added in its epilogue, then a sum against the delta row. The
// product runs on column blocks of at most kDotBlock columns (whole groups of m), the block's scratch.
template <typename T> struct DotProduct {
  static constexpr int64_t kDotBlock = 4096;
  const PerSampleRequest<T>& q;
  const Layout& layout;
  static int64_t cols_per_block(int64_t m) { return std::max<int64_t>(1, kDotBlock / m); }
  static int64_t row_scratch_for(const std::vector<int64_t>& d, int64_t m) {
    int64_t w = 1;
    for (size_t l = 1; l < d.size(); ++l) w = std::max(w, std::min(d[l], cols_per_block(m)) * m);
    return w;
  }
  static constexpr bool grouped = false;
  void operator()(const Call<T>&, const Rows<T>& r, T* A, T*, bool, GemmScratch<T> gs) const {
    const std::vector<int64_t>& d = r.plan.d;
    const int64_t m = q.m;
    T* out = q.rows + r.r0 * m;
    std::fill(out, out + r.m * m, T(0));
    for (int64_t l = 0; l < r.plan.L; ++l) {
      const int64_t n_out = d[l + 1], jb = cols_per_block(m);
      for (int64_t j0 = 0; j0 < n_out; j0 += jb) {
        const int64_t nj = std::min(jb, n_out - j0), width = nj * m;
        const Strided<T> Vl{q.V + (layout.w[l] + j0) * m, n_out * m, 1};
        gemm<T>({A, width}, false, Strided<T>::rows(r.h(l)), nullptr, Vl, r.m, width, d[l], gs,
                BiasActivation<T>{q.V + (layout.b[l] + j0) * m, false});
        for (int64_t i = 0; i < r.m; ++i) {
          const T* a = A + i * width;
          const T* dl = r.delta(l).p + i * r.delta(l).ld + j0;
          T* o = out + i * m;
          if (m == 1) {
            o[0] += dot_lanes<T>(a, dl, nj);
          } else {
            for (int64_t j = 0; j < nj; ++j)
              for (int64_t v = 0; v < m; ++v) o[v] += a[j * m + v] * dl[j];
          }
        }
      }
    }
  }
};

// out (m, n) = the squares of h's m rows of n values (a layer's inputs squared, for the per-sample squares).
template <typename T> void square_rows(MatView<const T> h, int64_t m, int64_t n, T* out) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t a = 0; a < n; ++a) out[i * n + a] = h.p[i * h.ld + a] * h.p[i * h.ld + a];
}

// sum_i w_i g_i * g_i: per layer the gradient's products on squares, (h^2)^T (w delta^2) and the column sums
// of w delta^2 (h^2 in the scratch; the deltas squared in place).
template <typename T> struct SumSquaresProduct {
  static int64_t row_scratch(const std::vector<int64_t>& d) {
    return *std::max_element(d.begin(), d.end() - 1);
  }
  static constexpr bool grouped = true;
  void operator()(const Call<T>& c, const Rows<T>& r, T* h2, T* acc, bool first, GemmScratch<T> gs) const {
    const Plan<T>& plan = r.plan;
    const std::vector<int64_t>& d = plan.d;
    const T* w = c.batch.sample_weight ? c.batch.sample_weight + r.r0 : nullptr;
    for (int64_t l = 0; l < plan.L; ++l) {
      square_rows<T>(r.h(l), r.m, d[l], h2);
      const MatView<T> dl = r.delta(l);
      for (int64_t i = 0; i < r.m; ++i) {
        const T wi = w ? w[i] : T(1);
        for (int64_t j = 0; j < d[l + 1]; ++j) dl.p[i * dl.ld + j] = wi * (dl.p[i * dl.ld + j] * dl.p[i * dl.ld + j]);
      }
      T* db = acc + plan.gb[l];
      if (first) std::fill(db, db + d[l + 1], T(0));
      linear_backward_weights<T>({acc + plan.gw[l], d[l + 1]}, db, dl, {h2, d[l]}, r.m, d[l], d[l + 1], !first, gs);
    }
  }
};

// Every row's layer inputs h_l (l >= 1) and deltas, copied out to whole-batch arrays (grad_gram's state).
template <typename T> struct StateProduct {
  std::vector<T*> H;  // H[l]: (n, d_l) for l = 1 .. L-1 (H[0] unused: X)
  std::vector<T*> D;  // D[l]: (n, d_{l+1})
  static int64_t row_scratch(const std::vector<int64_t>&) { return 0; }
  static constexpr bool grouped = false;
  void operator()(const Call<T>&, const Rows<T>& r, T*, T*, bool, GemmScratch<T>) const {
    const std::vector<int64_t>& d = r.plan.d;
    for (int64_t l = 0; l < r.plan.L; ++l) {
      if (l > 0)
        for (int64_t i = 0; i < r.m; ++i)
          std::memcpy(H[l] + (r.r0 + i) * d[l], r.h(l).p + i * r.h(l).ld, sizeof(T) * d[l]);
      for (int64_t i = 0; i < r.m; ++i)
        std::memcpy(D[l] + (r.r0 + i) * d[l + 1], r.delta(l).p + i * r.delta(l).ld, sizeof(T) * d[l + 1]);
    }
  }
};

// The pass with one product on nt threads: pack the weights, then the chunks (grouped: group by group, one
// thread per group, then the pairwise sum of the group buffers into c.grads); returns the loss.
template <typename T, typename Product>
double run_product(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                   const Gradients<T>* grads, const Product& product, int64_t row_scratch, int n_threads,
                   const Interrupt* interrupt) {
  const Plan<T> plan(net.sizes, batch.n, Mode::grad, false, Schedule::chunked, PlanExtras{true, row_scratch});
  const int nt = thread_count(n_threads, Product::grouped ? plan.n_groups : plan.n_chunks);
  WorkspaceLease<T> lease;
  T* ws = lease.get(plan.workspace_size(nt));
  const double scale = reduction == Reduction::mean ? 1.0 / batch.total_weight : 1.0;
  std::vector<double> block_loss(plan.n_chunks, 0.0);
  StopFlag stop(interrupt);
  const Call<T> c{net, head, batch, scale, Mode::grad, grads, nullptr, plan, ws, stop, block_loss};
  const std::vector<Segment<T>> segs = Product::grouped ? gradient_segments(c) : std::vector<Segment<T>>{};
#pragma omp parallel num_threads(nt)
  {
    T* mine = c.thread_scratch(thread_id());
    const GemmScratch<T> gs(mine + plan.gemm);
    pack_weights<T>(c);
    auto pass = [&](int64_t chunk, T* acc, bool first) {
      const int64_t r0 = plan.chunk_begin(chunk);
      const Rows<T> r{plan, batch.X, mine, r0, plan.chunk_begin(chunk + 1) - r0};
      block_loss[chunk] = chunk_deltas<T>(c, r, gs);
      product(c, r, mine + plan.extra, acc, first, gs);
    };
    if (Product::grouped) {
      const int64_t stride = align16(plan.group_size);
#pragma omp for schedule(dynamic, 1)
      for (int64_t g = 0; g < plan.n_groups; ++g)
        for (int64_t chunk = plan.group_begin(g); chunk < plan.group_begin(g + 1); ++chunk)
          if (!stop.stopped()) pass(chunk, ws + plan.groups + g * stride, chunk == plan.group_begin(g));
      sum_groups<T>(c, segs);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t chunk = 0; chunk < plan.n_chunks; ++chunk)
        if (!stop.stopped()) pass(chunk, nullptr, false);
    }
  }
  if (stop.raised()) throw Interrupted();
  return pairwise_sum(block_loss.data(), int64_t(block_loss.size()));
}

// One request (the core's per_sample entry, after its checks).
template <typename T>
double run_per_sample(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                      const PerSampleRequest<T>& q, int n_threads, const Interrupt* interrupt) {
  const std::vector<int64_t>& d = net.sizes;
  if (batch.n == 0) return (q.op == PerSampleOp::clipped || q.op == PerSampleOp::sumsq) ? empty_batch<T>(net, &q.grads) : 0.0;
  const Layout layout(d);
  switch (q.op) {
    case PerSampleOp::norms:
      return run_product<T>(net, head, batch, reduction, nullptr, NormsProduct<T>{q}, NormsProduct<T>::row_scratch(d),
                            n_threads, interrupt);
    case PerSampleOp::clipped:
      return run_product<T>(net, head, batch, reduction, &q.grads, ClipProduct<T>{q}, ClipProduct<T>::row_scratch(d),
                            n_threads, interrupt);
    case PerSampleOp::grads:
      return run_product<T>(net, head, batch, reduction, nullptr, GradsProduct<T>{q, layout}, 0, n_threads, interrupt);
    case PerSampleOp::dot:
      return run_product<T>(net, head, batch, reduction, nullptr, DotProduct<T>{q, layout},
                            DotProduct<T>::row_scratch_for(d, q.m), n_threads, interrupt);
    case PerSampleOp::sumsq:
      return run_product<T>(net, head, batch, reduction, &q.grads, SumSquaresProduct<T>{},
                            SumSquaresProduct<T>::row_scratch(d), n_threads, interrupt);
  }
  return 0.0;
}

}  // namespace mlpgrad::MLPGRAD_ISA
