// The output heads on one chunk of n rows: the loss from the logits z (n, k) and its gradient
// delta = dL/dz. c (n,) is each row's factor in the loss (sample weight, over the total weight for
// "mean"). Targets: t (n, k), or labels (n,) for the softmax head (then t is null).
// *_forward writes the probabilities p (n, k) and returns sum_i c_i l_i (in double);
// *_backward writes delta (n, k) from p; delta may overwrite p or z.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "mlpgrad/mlp.hpp"
#include "simd.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// One vector of logits z and targets t (any layout: lanes are independent): returns the units' losses
// t softplus(-z) + (1 - t) softplus(z) (= softplus(z) - t z, but a confident right answer keeps its small
// loss's precision), with softplus(+-z) = max(+-z, 0) + log1p(exp(-|z|)); *p receives sigmoid(z). The
// sums are fused explicitly (vfma), so the bits do not depend on where the kernel is inlined: the chunked
// and layered heads (below) and the narrow engine share it.
template <typename T>
inline Vec<T> sigmoid_xent_unit(Vec<T> z, Vec<T> t, Vec<T>* p) {
  Vec<T> e;
  *p = vsigmoid<T>(z, &e);
  const Vec<T> pos = z > 0 ? z : Vec<T>{}, neg = z < 0 ? -z : Vec<T>{};
  return vfma<T>(T(1) - t, pos, vfma<T>(t, neg, vlog1p_nonneg<T>(e)));
}

// sum_i c_i l_i in double, l_i = sum_j e_ij in T (in order): the loss from the units' losses e (n, k).
template <typename T> double weighted_row_sums(const T* e, const T* c, int64_t n, int64_t k) {
  double total = 0;
  for (int64_t r = 0; r < n; ++r) {
    T li = 0;
    for (int64_t j = r * k; j < (r + 1) * k; ++j) li += e[j];
    total += double(c[r]) * double(li);
  }
  return total;
}

// l_i = sum_j of the units' losses (sigmoid_xent_unit); p (n, k) receives the probabilities and e (n, k)
// the units' losses. Rows of k values are flat, so vectors run across row ends; the tail goes through a
// padded copy.
template <typename T>
double sigmoid_xent_forward(T* p, T* e, const T* z, const T* t, const T* c, int64_t n, int64_t k) {
  constexpr int W = kLanes<T>;
  const int64_t count = n * k;
  int64_t i = 0;
  for (; i + W <= count; i += W) {
    Vec<T> pv;
    store<T>(e + i, sigmoid_xent_unit<T>(load<T>(z + i), load<T>(t + i), &pv));
    store<T>(p + i, pv);
  }
  if (i < count) {
    T et[W], pt[W], zt[W] = {}, tt[W] = {};
    std::copy(z + i, z + count, zt);
    std::copy(t + i, t + count, tt);
    Vec<T> pv;
    store<T>(et, sigmoid_xent_unit<T>(load<T>(zt), load<T>(tt), &pv));
    store<T>(pt, pv);
    std::copy(et, et + (count - i), e + i);
    std::copy(pt, pt + (count - i), p + i);
  }
  return weighted_row_sums<T>(e, c, n, k);
}

// delta = c (p - t)
template <typename T>
void sigmoid_xent_backward(T* delta, const T* p, const T* t, const T* c, int64_t n, int64_t k) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i * k; j < (i + 1) * k; ++j) delta[j] = c[i] * (p[j] - t[j]);
}

// The identity head (squared error): the output is z itself, l = 1/2 sum_j (z_j - t_j)^2, delta = c (z - t).
// One lane's unit: its loss 1/2 (z - t)^2, from the residual r = z - t.
template <typename T> inline Vec<T> identity_unit(Vec<T> r) { return T(0.5) * (r * r); }

// l_i = sum_j 1/2 (z_ij - t_ij)^2; e (n, k) receives the units' losses (as sigmoid_xent_forward).
template <typename T>
double identity_forward(T* e, const T* z, const T* t, const T* c, int64_t n, int64_t k) {
  for (int64_t j = 0; j < n * k; ++j) {
    const T r = z[j] - t[j];
    e[j] = T(0.5) * (r * r);
  }
  return weighted_row_sums<T>(e, c, n, k);
}

// delta = c (z - t), the sigmoid head's c (p - t) with z for p; delta may overwrite z.
template <typename T>
void identity_backward(T* delta, const T* z, const T* t, const T* c, int64_t n, int64_t k) {
  sigmoid_xent_backward<T>(delta, z, t, c, n, k);
}

// Softmax cross-entropy with one row per lane: column j of V rows is one vector, and every row's sums
// run over the columns in order 0..k-1. The row-block head (below: rows of a chunk, row-major) and the
// narrow engine (feature-major blocks) both call these kernels, so a row gets the same bits in either.
// The formula, from the logits (derivation.md §3.3): m = max_j z_j; e_j = exp(z_j - m) <= 1; rest = the
// sum of the e_j without the first maximum's own term (exactly 1); lse = log1p(rest), so a confident
// right answer keeps its tiny loss's precision; p_j = e_j / (1 + rest), the reciprocal by a correctly
// rounded division; l = sum_j t_j (lse - (z_j - m)), a sum of terms >= 0 (no cancellation), finite
// whenever the logits' spread is; delta_j = c (p_j sum_j t_j - t_j), or c (p_j - [j == y]) for labels.
template <typename T> using LaneInt = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // VecTraits<T>::I's
template <typename T> struct SoftmaxLanes {
  Vec<T> m, rest = Vec<T>{}, lse, inv;
  typename VecTraits<T>::I found{};  // lanes whose first maximum has been passed
};

// Steps 1-3 on the k columns z(j): the maxima (a NaN in column 0 stays; a later one reaches rest through
// exp), then e_j handed to put_e(j, e_j) column by column, then lse and inv.
template <typename T, typename Z, typename PutE>
inline SoftmaxLanes<T> softmax_lanes(int64_t k, Z z, PutE put_e) {
  SoftmaxLanes<T> s;
  s.m = z(0);
  for (int64_t j = 1; j < k; ++j) { const Vec<T> zj = z(j); s.m = zj > s.m ? zj : s.m; }
  for (int64_t j = 0; j < k; ++j) {
    const Vec<T> zj = z(j), e = vexp<T>(zj - s.m);  // all arguments <= 0
    const auto is_max = (zj == s.m) & ~s.found;
    s.found |= is_max;
    s.rest += is_max ? Vec<T>{} : e;
    put_e(j, e);
  }
  s.lse = vlog1p_nonneg<T>(s.rest);
  s.inv = T(1) / (T(1) + s.rest);
  return s;
}

template <typename T> inline Vec<T> softmax_prob(const SoftmaxLanes<T>& s, Vec<T> e) { return e * s.inv; }

// The loss: l + t_j (lse - (z_j - m)) for column j of dense targets; lse - (z_y - m) for labels.
template <typename T> inline Vec<T> softmax_xent_term(const SoftmaxLanes<T>& s, Vec<T> l, Vec<T> z, Vec<T> t) {
  return vfma<T>(t, s.lse - (z - s.m), l);
}
template <typename T> inline Vec<T> softmax_xent_label(const SoftmaxLanes<T>& s, Vec<T> zy) { return s.lse - (zy - s.m); }

// delta_j = c (p_j st - t_j), st = sum_j t_j (c (p - t) for rows summing to one); for labels
// c (p_j - 1) where hit (j == y), else c p_j.
template <typename T> inline Vec<T> softmax_xent_delta(Vec<T> c, Vec<T> p, Vec<T> st, Vec<T> t) {
  return c * vfma<T>(p, st, -t);
}
template <typename T> inline Vec<T> softmax_xent_label_delta(Vec<T> c, Vec<T> p, typename VecTraits<T>::I hit) {
  return c * (hit ? p - T(1) : p);
}

// a b + c, fused where the ISA has FMA, for a scalar sum whose contraction must not depend on how its
// loop compiles.
inline double fma_if_fma(double a, double b, double c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// The row-block head: rows go through the kernels above kLanes at a time, column j of a block read
// with stride k (padding lanes of a short block are zero and never stored).

// p = softmax(z) (n, k) row by row; m (n,) receives the row maxima and lse (n,) log sum_j exp(z_j - m).
template <typename T>
void softmax_probs(T* p, T* m, T* lse, const T* z, int64_t n, int64_t k) {
  constexpr int V = kLanes<T>;
  for (int64_t r0 = 0; r0 < n; r0 += V) {
    const int64_t len = std::min<int64_t>(V, n - r0);
    const T* zb = z + r0 * k;
    T* pb = p + r0 * k;
    const SoftmaxLanes<T> s = softmax_lanes<T>(
        k, [&](int64_t j) { return load_strided<T>(zb + j, k, len); },
        [&](int64_t j, Vec<T> e) { store_strided<T>(pb + j, k, e, len); });
    for (int64_t j = 0; j < k; ++j)
      store_strided<T>(pb + j, k, softmax_prob<T>(s, load_strided<T>(pb + j, k, len)), len);
    store_strided<T>(m + r0, 1, s.m, len);
    store_strided<T>(lse + r0, 1, s.lse, len);
  }
}

// l_i = sum_j t_ij (lse_i - (z_ij - m_i)), or lse_i - (z_iy - m_i) for a label y.
template <typename T>
double softmax_xent_forward(T* p, T* m, T* lse, const T* z, const int64_t* labels, const T* t, const T* c,
                            int64_t n, int64_t k) {
  constexpr int V = kLanes<T>;
  softmax_probs<T>(p, m, lse, z, n, k);
  double total = 0;
  for (int64_t r0 = 0; r0 < n; r0 += V) {
    const int64_t len = std::min<int64_t>(V, n - r0);
    SoftmaxLanes<T> s;
    s.m = load_strided<T>(m + r0, 1, len);
    s.lse = load_strided<T>(lse + r0, 1, len);
    Vec<T> l = Vec<T>{};
    if (labels) {
      Vec<T> zy = Vec<T>{};
      for (int64_t r = 0; r < len; ++r) zy[r] = z[(r0 + r) * k + labels[r0 + r]];
      l = softmax_xent_label<T>(s, zy);
    } else {
      for (int64_t j = 0; j < k; ++j)
        l = softmax_xent_term<T>(s, l, load_strided<T>(z + r0 * k + j, k, len), load_strided<T>(t + r0 * k + j, k, len));
    }
    for (int64_t r = 0; r < len; ++r) total = fma_if_fma(double(c[r0 + r]), double(l[r]), total);
  }
  return total;
}

// delta (n, k) from p: softmax_xent_delta / softmax_xent_label_delta.
template <typename T>
void softmax_xent_backward(T* delta, const T* p, const int64_t* labels, const T* t, const T* c, int64_t n,
                           int64_t k) {
  constexpr int V = kLanes<T>;
  for (int64_t r0 = 0; r0 < n; r0 += V) {
    const int64_t len = std::min<int64_t>(V, n - r0);
    const Vec<T> cv = load_strided<T>(c + r0, 1, len);
    T* db = delta + r0 * k;
    const T* pb = p + r0 * k;
    if (labels) {
      typename VecTraits<T>::I y{};
      for (int64_t r = 0; r < len; ++r) y[r] = labels[r0 + r];
      for (int64_t j = 0; j < k; ++j)
        store_strided<T>(db + j, k, softmax_xent_label_delta<T>(cv, load_strided<T>(pb + j, k, len), y == LaneInt<T>(j)), len);
    } else {
      const T* tb = t + r0 * k;
      Vec<T> st = Vec<T>{};
      for (int64_t j = 0; j < k; ++j) st += load_strided<T>(tb + j, k, len);
      for (int64_t j = 0; j < k; ++j)
        store_strided<T>(db + j, k,
                         softmax_xent_delta<T>(cv, load_strided<T>(pb + j, k, len), st, load_strided<T>(tb + j, k, len)),
                         len);
    }
  }
}

// The head's curvature, row by row (derivation.md §2.8), for the curvature products: H_i = d^2 l_i / d z^2 is
// diag(p (1 - p)) for the sigmoid head, s_i (diag(p) - p p^T) for softmax, s_i = sum_j t_ij (1 for labels), and
// I for the identity head.
template <typename T> T target_sum(const T* t, int64_t i, int64_t k) {
  if (!t) return T(1);
  T s = 0;
  for (int64_t j = 0; j < k; ++j) s += t[i * k + j];
  return s;
}

// r (n, k) <- c_i H_i r_i, in place.
template <typename T>
void head_hessian_vp(Head head, T* r, const T* p, const T* t, const T* c, int64_t n, int64_t k) {
  for (int64_t i = 0; i < n; ++i) {
    T* ri = r + i * k;
    const T* pi = p + i * k;
    if (head == Head::identity) {
      for (int64_t j = 0; j < k; ++j) ri[j] = c[i] * ri[j];
      continue;
    }
    if (head == Head::sigmoid) {
      for (int64_t j = 0; j < k; ++j) ri[j] = c[i] * (pi[j] * (T(1) - pi[j])) * ri[j];
      continue;
    }
    T pr = 0;
    for (int64_t j = 0; j < k; ++j) pr += pi[j] * ri[j];
    const T cs = c[i] * target_sum<T>(t, i, k);
    for (int64_t j = 0; j < k; ++j) ri[j] = cs * (pi[j] * (ri[j] - pr));
  }
}

// S (n, k) <- column j of a factor S_i with S_i S_i^T = c_i H_i: sqrt(c p_j (1 - p_j)) e_j (sigmoid),
// sqrt(c s p_j) (e_j - p) (softmax: (diag(p) - p p^T) = sum_j p_j (e_j - p)(e_j - p)^T, as sum_j p_j = 1),
// sqrt(c) e_j (identity).
template <typename T>
void head_hessian_factor_column(Head head, T* S, const T* p, const T* t, const T* c, int64_t n, int64_t k,
                                int64_t j) {
  for (int64_t i = 0; i < n; ++i) {
    T* si = S + i * k;
    const T* pi = p + i * k;
    if (head == Head::identity) {
      std::fill(si, si + k, T(0));
      si[j] = std::sqrt(c[i]);
      continue;
    }
    if (head == Head::sigmoid) {
      std::fill(si, si + k, T(0));
      si[j] = std::sqrt(c[i] * (pi[j] * (T(1) - pi[j])));
      continue;
    }
    const T a = std::sqrt(c[i] * target_sum<T>(t, i, k) * pi[j]);
    for (int64_t q = 0; q < k; ++q) si[q] = -a * pi[q];
    si[j] += a;
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
