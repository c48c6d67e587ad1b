// The layers of the network on one chunk of n rows: linear (matrix product + bias) and sigmoid,
// each a forward/backward pair with one argument order: outputs, saved inputs, parameters, sizes.
#pragma once

#include <cstdint>

#include "gemm.hpp"
#include "simd.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// z (n, d_out) = h (n, d_in) @ W (d_in, d_out) + b (d_out,).   Wp: W packed by pack_b.
template <typename T>
void linear_forward(T* z, const T* h, const T* Wp, const T* b, int64_t n, int64_t d_in, int64_t d_out,
                    GemmScratch<T> s) {
  gemm<T>(n, d_out, d_in, h, d_in, 1, Wp, nullptr, 0, 0, z, d_out, false, s);
  for (int64_t i = 0; i < n; ++i) {
    T* row = z + i * d_out;
    for (int64_t j = 0; j < d_out; ++j) row[j] += b[j];
  }
}

// Given delta = dL/dz (n, d_out) and the layer's input h (n, d_in):
//   dW (d_in, d_out) [+]= h^T (d_in, n) @ delta (n, d_out)
//   db (d_out,)      [+]= column sums of delta
//   dh (n, d_in)       = delta (n, d_out) @ W^T (d_out, d_in)     when dh is not null; WTp: W^T packed
// accumulate=false overwrites dW and db (the first chunk of a group), true adds to them.
template <typename T>
void linear_backward(T* dW, T* db, T* dh, const T* delta, const T* h, const T* WTp, int64_t n, int64_t d_in,
                     int64_t d_out, bool accumulate, GemmScratch<T> s) {
  gemm<T>(d_in, d_out, n, h, 1, d_in, nullptr, delta, d_out, 1, dW, d_out, accumulate, s);
  if (!accumulate)
    for (int64_t j = 0; j < d_out; ++j) db[j] = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T* row = delta + i * d_out;
    for (int64_t j = 0; j < d_out; ++j) db[j] += row[j];
  }
  if (dh) gemm<T>(n, d_in, d_out, delta, d_out, 1, WTp, nullptr, 0, 0, dh, d_in, false, s);
}

// h = sigmoid(z), in place over `count` values.
template <typename T>
void sigmoid_forward(T* hz, int64_t count) {
  map_inplace<T>(hz, count, [](Vec<T> z) { return vsigmoid<T>(z); });
}

// delta = dh * h * (1 - h), from the saved output h. delta may overwrite h or dh.
template <typename T>
void sigmoid_backward(T* delta, const T* dh, const T* h, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const T hi = h[i];
    delta[i] = dh[i] * (hi * (T(1) - hi));
  }
}

}  // namespace mlpgrad::MLPGRAD_ISA
