// The output heads on one chunk of n rows: the loss from the logits z (n, k) and its gradient
// delta = dL/dz. c (n,) is each row's factor in the loss (sample weight, over the total weight for
// "mean"). Targets: t (n, k), or labels (n,) for the softmax head (then t is null).
// *_forward writes the probabilities p (n, k) and returns sum_i c_i l_i (in double);
// *_backward writes delta (n, k) from p; delta may overwrite p or z.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

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
  double total = 0;
  for (int64_t r = 0; r < n; ++r) {
    T li = 0;
    for (int64_t j = r * k; j < (r + 1) * k; ++j) li += e[j];
    total += double(c[r]) * double(li);
  }
  return total;
}

// delta = c (p - t)
template <typename T>
void sigmoid_xent_backward(T* delta, const T* p, const T* t, const T* c, int64_t n, int64_t k) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i * k; j < (i + 1) * k; ++j) delta[j] = c[i] * (p[j] - t[j]);
}

// p = softmax(z) row by row; m (n,) receives the row maxima and lse (n,) log sum_j exp(z_j - m), computed
// as log1p of the sum without the maximum's own term (which is exactly 1), so a tiny sum stays exact.
template <typename T>
void softmax_probs(T* p, T* m, T* lse, const T* z, int64_t n, int64_t k) {
  for (int64_t i = 0; i < n; ++i) {
    const T* zi = z + i * k;
    T mi = zi[0];
    for (int64_t j = 1; j < k; ++j) mi = zi[j] > mi ? zi[j] : mi;
    for (int64_t j = 0; j < k; ++j) p[i * k + j] = zi[j] - mi;
    m[i] = mi;
  }
  map_inplace<T>(p, n * k, [](Vec<T> x) { return vexp<T>(x); });  // all arguments <= 0
  for (int64_t i = 0; i < n; ++i) {
    T* pi = p + i * k;
    const T* zi = z + i * k;
    int64_t jmax = 0;  // the first column holding the maximum (none if the row has NaN: then all is NaN)
    while (jmax < k && !(zi[jmax] == m[i])) ++jmax;
    T rest = 0;
    for (int64_t j = 0; j < k; ++j) rest += j == jmax ? T(0) : pi[j];
    const T inv = T(1) / (T(1) + rest);
    for (int64_t j = 0; j < k; ++j) pi[j] *= inv;
    lse[i] = rest;
  }
  map_inplace<T>(lse, n, [](Vec<T> r) { return vlog1p_nonneg<T>(r); });
}

// l_i = sum_j t_ij (lse_i - (z_ij - m_i)), or lse_i - (z_iy - m_i) for a label y.
template <typename T>
double softmax_xent_forward(T* p, T* m, T* lse, const T* z, const int64_t* labels, const T* t, const T* c,
                            int64_t n, int64_t k) {
  softmax_probs<T>(p, m, lse, z, n, k);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* zi = z + i * k;
    T li;
    if (labels) {
      li = lse[i] - (zi[labels[i]] - m[i]);
    } else {
      li = 0;
      for (int64_t j = 0; j < k; ++j) li += t[i * k + j] * (lse[i] - (zi[j] - m[i]));
    }
    total += double(c[i]) * double(li);
  }
  return total;
}

// delta = c (p sum_j t_j - t), which is c (p - t) for rows summing to one; c (p - onehot(y)) for labels.
template <typename T>
void softmax_xent_backward(T* delta, const T* p, const int64_t* labels, const T* t, const T* c, int64_t n,
                           int64_t k) {
  for (int64_t i = 0; i < n; ++i) {
    T* di = delta + i * k;
    const T* pi = p + i * k;
    if (labels) {
      for (int64_t j = 0; j < k; ++j) di[j] = c[i] * pi[j];
      di[labels[i]] = c[i] * (pi[labels[i]] - T(1));
    } else {
      const T* ti = t + i * k;
      T st = 0;
      for (int64_t j = 0; j < k; ++j) st += ti[j];
      for (int64_t j = 0; j < k; ++j) di[j] = c[i] * (pi[j] * st - ti[j]);
    }
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
