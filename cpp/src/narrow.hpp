// The narrow engine: for networks whose every width is at most kNarrowMaxWidth (such as 5-3-5), a
// matrix-product tile would be mostly padding. Here the SIMD lanes run across rows instead: a block
// of V = kLanes rows is turned feature-major (one vector per feature), and every layer, the head and
// the backward pass are vector operations on those feature vectors, all in L1. Weight gradients
// accumulate per lane over a chunk (a blocked sum), are summed across lanes at the chunk's end, and
// chunks are grouped and reduced exactly as in the chunked schedule: deterministic for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "heads.hpp"
#include "config.hpp"
#include "mlpgrad/mlp.hpp"
#include "simd.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// v[r] = p[idx[r]] for every lane r (one gather instruction on AVX-512).
template <typename T> inline Vec<T> gather(const T* p, const int32_t* idx) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4)
    return bitcast<Vec<T>>(_mm512_i32gather_ps(_mm512_loadu_si512(idx), p, 4));
  else
    return bitcast<Vec<T>>(_mm512_i32gather_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)), p, 8));
#else
  Vec<T> v;
  for (int r = 0; r < kLanes<T>; ++r) v[r] = p[idx[r]];
  return v;
#endif
}

inline bool is_narrow(const std::vector<int64_t>& sizes) {
  return *std::max_element(sizes.begin(), sizes.end()) <= config::kNarrowMaxWidth;
}

// Offsets (in T) of one thread's narrow scratch; every array is a list of V-lane vectors.
template <typename T> struct NarrowPlan {
  static constexpr int V = kLanes<T>;
  int64_t L, k;
  std::vector<int64_t> d, h;  // h[l]: d_l vectors (h[0]: the X block; h[L]: logits, then delta_L)
  std::vector<int64_t> gw, gb;  // lane accumulators of dW_l (d_l * d_{l+1} vectors) and db_l
  int64_t delta0 = 0, delta1 = 0, t = 0, acc_begin = 0, acc_end = 0, size = 0;
  // Gather indices for a full block of V rows. x_idx[r] = r d_0: feature i of the block is
  // X_block[x_idx + i]. dx_idx[q V + L] = i V + r for the element q V + L = r d_0 + i of the block's
  // dX rows: vector q of dX (row-major) gathered from the feature-major dX scratch.
  std::vector<int32_t> x_idx, dx_idx;
  explicit NarrowPlan(const std::vector<int64_t>& sizes) : L(int64_t(sizes.size()) - 1), k(sizes.back()), d(sizes) {
    for (int r = 0; r < V; ++r) x_idx.push_back(int32_t(r * d[0]));
    for (int64_t e = 0; e < V * d[0]; ++e) dx_idx.push_back(int32_t(e % d[0] * V + e / d[0]));
    const int64_t maxd = *std::max_element(d.begin(), d.end());
    int64_t off = 0;
    for (int64_t l = 0; l <= L; ++l) { h.push_back(off); off += d[l] * V; }
    delta0 = off; off += maxd * V;
    delta1 = off; off += maxd * V;
    t = off;      off += k * V;
    acc_begin = off;
    for (int64_t l = 0; l < L; ++l) {
      gw.push_back(off); off += d[l] * d[l + 1] * V;
      gb.push_back(off); off += d[l + 1] * V;
    }
    acc_end = off;
    size = off;
  }
};

// Lanes past the block's m rows are padding and must contribute exactly 0. Their zero inputs can still
// make NaN (an infinite weight times 0), and 0 * NaN is NaN, so every activation and delta is masked to 0
// there, not just scaled.
template <typename T> using LaneMask = typename VecTraits<T>::I;
template <typename T> inline LaneMask<T> valid_lanes(int64_t m) {
  Vec<T> lane_index = Vec<T>{};
  for (int r = 0; r < kLanes<T>; ++r) lane_index[r] = T(r);
  return lane_index < T(m);
}
template <typename T> inline Vec<T> masked(LaneMask<T> valid, Vec<T> v) { return valid ? v : Vec<T>{}; }

// Rows [r0, r0 + m) of X -> feature vectors h_0 (zeros on padding lanes).
template <typename T> void narrow_load(const NarrowPlan<T>& np, const T* X, T* s, int64_t r0, int64_t m) {
  constexpr int V = NarrowPlan<T>::V;
  const int64_t d0 = np.d[0];
  T* h0 = s + np.h[0];
  const T* x = X + r0 * d0;
  if (m == V) {
    for (int64_t i = 0; i < d0; ++i) store<T>(h0 + i * V, gather<T>(x + i, np.x_idx.data()));
  } else {
    for (int64_t i = 0; i < d0; ++i)
      for (int64_t r = 0; r < V; ++r) h0[i * V + r] = r < m ? x[r * d0 + i] : T(0);
  }
}

// z_j = b_j + sum_i W_ij h_i for every layer, then sigmoid for hidden layers; the logits end in h[L].
template <typename T> void narrow_forward(const NarrowPlan<T>& np, const Network<T>& net, T* s, LaneMask<T> valid) {
  constexpr int V = NarrowPlan<T>::V;
  const std::vector<int64_t>& d = np.d;
  for (int64_t l = 0; l < np.L; ++l) {
    const T* W = net.W[l];
    const T* hin = s + np.h[l];
    T* hout = s + np.h[l + 1];
    for (int64_t j = 0; j < d[l + 1]; ++j) {
      Vec<T> acc = splat<T>(net.b[l][j]);
      for (int64_t i = 0; i < d[l]; ++i) acc += W[i * d[l + 1] + j] * load<T>(hin + i * V);
      store<T>(hout + j * V, masked<T>(valid, l < np.L - 1 ? vsigmoid_fast<T>(acc) : acc));
    }
  }
}

// probs rows [r0, r0 + m) from the logits in h[L] (which the softmax overwrites with exp(z - max)).
template <typename T>
void narrow_probs(const NarrowPlan<T>& np, Head head, T* s, T* probs, int64_t r0, int64_t m) {
  constexpr int V = NarrowPlan<T>::V;
  const int64_t k = np.k;
  T* Z = s + np.h[np.L];
  SoftmaxLanes<T> sm;
  if (head == Head::softmax)
    sm = softmax_lanes<T>(
        k, [&](int64_t j) { return load<T>(Z + j * V); }, [&](int64_t j, Vec<T> e) { store<T>(Z + j * V, e); });
  for (int64_t j = 0; j < k; ++j) {
    const Vec<T> z = load<T>(Z + j * V);
    const Vec<T> p = head == Head::softmax ? softmax_prob<T>(sm, z) : head == Head::identity ? z : vsigmoid<T>(z);
    for (int64_t r = 0; r < m; ++r) probs[(r0 + r) * k + j] = p[r];
  }
}

// The head on the logits in h[L]: each lane's weighted loss added to lane_loss (in double), and for
// gradients delta_L = c (p - y) (c (z - y) for identity) written over the logits.
template <typename T>
void narrow_head(const NarrowPlan<T>& np, Head head, const Batch<T>& batch, T scale, bool grad, T* s, int64_t r0,
                 int64_t m, LaneMask<T> valid, double* lane_loss) {
  constexpr int V = NarrowPlan<T>::V;
  using I = LaneMask<T>;
  const int64_t k = np.k;
  T* Z = s + np.h[np.L];
  Vec<T> c = Vec<T>{};  // each row's factor in the loss; 0 on padding lanes
  for (int64_t r = 0; r < m; ++r) c[r] = batch.sample_weight ? batch.sample_weight[r0 + r] * scale : scale;

  T* tv = s + np.t;  // dense targets as feature vectors
  if (batch.targets)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t r = 0; r < V; ++r) tv[j * V + r] = r < m ? batch.targets[(r0 + r) * k + j] : T(0);

  Vec<T> loss = Vec<T>{};
  if (head == Head::sigmoid) {
    for (int64_t j = 0; j < k; ++j) {
      const Vec<T> t = load<T>(tv + j * V);
      Vec<T> p;
      loss += sigmoid_xent_unit<T>(load<T>(Z + j * V), t, &p);
      if (grad) store<T>(Z + j * V, masked<T>(valid, c * (p - t)));
    }
  } else if (head == Head::identity) {
    for (int64_t j = 0; j < k; ++j) {
      const Vec<T> r = load<T>(Z + j * V) - load<T>(tv + j * V);
      loss += identity_unit<T>(r);
      if (grad) store<T>(Z + j * V, masked<T>(valid, c * r));
    }
  } else {
    T* E = s + np.delta0;  // e_j = exp(z_j - max)
    const SoftmaxLanes<T> sm = softmax_lanes<T>(
        k, [&](int64_t j) { return load<T>(Z + j * V); }, [&](int64_t j, Vec<T> e) { store<T>(E + j * V, e); });
    if (batch.labels) {
      I y = I{};
      for (int64_t r = 0; r < m; ++r) y[r] = batch.labels[r0 + r];
      Vec<T> zy = Vec<T>{};
      for (int64_t j = 0; j < k; ++j) {
        const I hit = y == LaneInt<T>(j);
        zy = hit ? load<T>(Z + j * V) : zy;
        if (grad)
          store<T>(Z + j * V,
                   masked<T>(valid, softmax_xent_label_delta<T>(c, softmax_prob<T>(sm, load<T>(E + j * V)), hit)));
      }
      loss = softmax_xent_label<T>(sm, zy);
    } else {
      Vec<T> st = Vec<T>{};
      for (int64_t j = 0; j < k; ++j) {
        const Vec<T> t = load<T>(tv + j * V);
        st += t;
        loss = softmax_xent_term<T>(sm, loss, load<T>(Z + j * V), t);
      }
      if (grad)
        for (int64_t j = 0; j < k; ++j)
          store<T>(Z + j * V, masked<T>(valid, softmax_xent_delta<T>(c, softmax_prob<T>(sm, load<T>(E + j * V)), st,
                                                                     load<T>(tv + j * V))));
    }
  }
  // Each lane's weighted loss, added in double to its own accumulator (the lanes are summed in a fixed
  // order at the chunk's end); padding lanes add 0.
  const Vec<T> lc = masked<T>(valid, c), ll = masked<T>(valid, loss);
  for (int r = 0; r < V; ++r) lane_loss[r] += double(lc[r]) * double(ll[r]);
}

// The backward, the forward reversed: dW and db added to the lane accumulators, dX rows [r0, r0 + m)
// written when dX is not null.
template <typename T>
void narrow_backward(const NarrowPlan<T>& np, const Network<T>& net, T* dX, T* s, int64_t r0, int64_t m,
                     LaneMask<T> valid) {
  constexpr int V = NarrowPlan<T>::V;
  const T* delta = s + np.h[np.L];
  for (int64_t l = np.L - 1; l >= 0; --l) {
    const T* W = net.W[l];
    const T* hin = s + np.h[l];
    const int64_t din = np.d[l], dout = np.d[l + 1];
    T* aw = s + np.gw[l];
    T* ab = s + np.gb[l];
    for (int64_t j = 0; j < dout; ++j) store<T>(ab + j * V, load<T>(ab + j * V) + load<T>(delta + j * V));
    for (int64_t i = 0; i < din; ++i) {
      const Vec<T> hv = load<T>(hin + i * V);
      for (int64_t j = 0; j < dout; ++j)
        store<T>(aw + (i * dout + j) * V, load<T>(aw + (i * dout + j) * V) + hv * load<T>(delta + j * V));
    }
    if (l == 0 && !dX) break;
    T* next = s + (delta == s + np.delta0 ? np.delta1 : np.delta0);
    for (int64_t i = 0; i < din; ++i) {
      Vec<T> acc = Vec<T>{};
      for (int64_t j = 0; j < dout; ++j) acc += W[i * dout + j] * load<T>(delta + j * V);
      if (l > 0) {
        const Vec<T> hv = load<T>(hin + i * V);
        store<T>(next + i * V, masked<T>(valid, acc * (hv * (T(1) - hv))));
      } else if (m == V) {
        store<T>(next + i * V, acc);  // feature-major, turned into rows below
      } else {
        for (int64_t r = 0; r < m; ++r) dX[(r0 + r) * din + i] = acc[r];
      }
    }
    if (l == 0 && m == V)
      for (int64_t q = 0; q < din; ++q) store<T>(dX + r0 * din + q * V, gather<T>(next, np.dx_idx.data() + q * V));
    delta = next;
  }
}

// Rows [r0, r0 + m) of a chunk, m <= V (lanes past m are padding: zero inputs and zero weight).
// Adds the rows' weighted losses to lane_loss; for gradients adds to the lane accumulators, writes dX.
template <typename T>
void narrow_block(const NarrowPlan<T>& np, const Network<T>& net, Head head, const Batch<T>& batch, T scale,
                  Mode mode, T* probs, T* dX, T* s, int64_t r0, int64_t m, double* lane_loss) {
  const LaneMask<T> valid = valid_lanes<T>(m);
  narrow_load<T>(np, batch.X, s, r0, m);
  narrow_forward<T>(np, net, s, valid);
  if (mode == Mode::probs) return narrow_probs<T>(np, head, s, probs, r0, m);
  narrow_head<T>(np, head, batch, scale, mode == Mode::grad, s, r0, m, valid, lane_loss);
  if (mode == Mode::grad) narrow_backward<T>(np, net, dX, s, r0, m, valid);
}

// A chunk of rows [r0, r0 + rows): its loss (returned) and, for gradients, its dW/db written to
// (first_in_group) or added to the group buffer `acc` laid out by gw/gb.
template <typename T>
double narrow_chunk(const NarrowPlan<T>& np, const Network<T>& net, Head head, const Batch<T>& batch, T scale,
                    Mode mode, T* probs, T* dX, T* s, int64_t r0, int64_t rows, T* acc, const std::vector<int64_t>& gw,
                    const std::vector<int64_t>& gb, bool first_in_group) {
  constexpr int V = NarrowPlan<T>::V;
  if (mode == Mode::grad) std::fill(s + np.acc_begin, s + np.acc_end, T(0));
  double lane_loss[V] = {};
  for (int64_t r = 0; r < rows; r += V)
    narrow_block<T>(np, net, head, batch, scale, mode, probs, dX, s, r0 + r, std::min<int64_t>(V, rows - r), lane_loss);
  double total = 0;
  for (int r = 0; r < V; ++r) total += lane_loss[r];
  if (mode != Mode::grad) return total;
  auto lanes_sum = [&](const T* v) {  // fixed order
    T x = 0;
    for (int r = 0; r < V; ++r) x += v[r];
    return x;
  };
  for (int64_t l = 0; l < np.L; ++l) {
    const int64_t nw = np.d[l] * np.d[l + 1], nb = np.d[l + 1];
    for (int64_t e = 0; e < nw; ++e) {
      const T x = lanes_sum(s + np.gw[l] + e * V);
      acc[gw[l] + e] = first_in_group ? x : acc[gw[l] + e] + x;
    }
    for (int64_t e = 0; e < nb; ++e) {
      const T x = lanes_sum(s + np.gb[l] + e * V);
      acc[gb[l] + e] = first_in_group ? x : acc[gb[l] + e] + x;
    }
  }
  return total;
}

}  // namespace mlpgrad::MLPGRAD_ISA
