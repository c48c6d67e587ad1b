// The layers of the network: linear (matrix product + bias) and sigmoid, each a forward/backward pair
// with one argument order: outputs, saved inputs, parameters, sizes. The element-wise work is done in
// the epilogue of each output tile of the matrix products (bias + sigmoid on the forward, the factor
// h (1 - h) on the backward), while the tile is still in L1; the bias gradient is summed while the
// delta is packed for dW.
#pragma once

#include <cstdint>
#include <cstring>

#include "gemm.hpp"
#include "simd.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// Apply f to the vectors of a tile's rows: two full vectors per row when nr == NR, otherwise through a
// masked load and store (the lanes past nr read as zeros: the same arithmetic lane by lane, so an element's
// value never depends on its tile).
template <typename T, typename F>
inline void tile_rows(T* c, int64_t ldc, int64_t mr, int64_t nr, F f) {
  constexpr int W = kLanes<T>, NR = Tile<T>::NR;
  for (int64_t i = 0; i < mr; ++i) {
    T* row = c + i * ldc;
    if (nr == NR) {
      store<T>(row, f(load<T>(row), i, 0));
      store<T>(row + W, f(load<T>(row + W), i, W));
    } else {
      for (int64_t j0 = 0; j0 < nr; j0 += W) {
        const int64_t len = std::min<int64_t>(W, nr - j0);
        store_partial<T>(row + j0, f(load_padded<T>(row + j0, len), i, j0), len);
      }
    }
  }
}

// Forward epilogue: z + b, then sigmoid for a hidden layer (logits keep z + b).
template <typename T> struct BiasActivation {  // the linear_forward epilogue (with sigmoid_forward fused)
  const T* b;
  bool sigmoid;
  void operator()(T* c, int64_t ldc, int64_t, int64_t j0, int64_t mr, int64_t nr) const {
    tile_rows<T>(c, ldc, mr, nr, [&](Vec<T> z, int64_t, int64_t j) {
      z += load_padded<T>(b + j0 + j, nr - j);
      return sigmoid ? vsigmoid_fast<T>(z) : z;
    });
  }
};

// Backward epilogue: dh -> delta = dh * h (1 - h), with h the layer's saved output (same layout).
template <typename T> struct SigmoidBackward {
  const T* h;
  int64_t ldh;
  void operator()(T* c, int64_t ldc, int64_t i0, int64_t j0, int64_t mr, int64_t nr) const {
    tile_rows<T>(c, ldc, mr, nr, [&](Vec<T> dh, int64_t i, int64_t j) {
      const Vec<T> hv = load_padded<T>(h + (i0 + i) * ldh + j0 + j, nr - j);
      return dh * (hv * (T(1) - hv));
    });
  }
};

// z (n, d_out) = act(h (n, d_in) @ W (d_in, d_out) + b). Wp: W as full-K panels (pack_b_panels), starting
// at column 0 of z (z may be a column block of a wider matrix).
template <typename T>
void linear_forward(MatView<T> z, MatView<const T> h, const T* Wp, const T* b, int64_t n, int64_t d_in,
                    int64_t d_out, bool sigmoid, GemmScratch<T> s) {
  gemm<T>(z, false, Strided<T>::rows(h), Wp, Strided<T>{nullptr, 0, 0}, n, d_out, d_in, s,
          BiasActivation<T>{b, sigmoid});
}

// Given delta = dL/dz (n, d_out) and the layer's input h (n, d_in):
//   dW (d_in, d_out) [+]= h^T (d_in, n) @ delta (n, d_out)          (accumulate: add to dW)
//   db (d_out,)        += column sums of delta                         (if db is not null)
template <typename T>
void linear_backward_weights(MatView<T> dW, T* db, MatView<const T> delta, MatView<const T> h, int64_t n,
                             int64_t d_in, int64_t d_out, bool accumulate, GemmScratch<T> s) {
  gemm<T>(dW, accumulate, Strided<T>::transposed(h), nullptr, Strided<T>::rows(delta), d_in, d_out, n, s,
          NoEpilogue(), db);
}

//   dh (n, d_in) = delta (n, d_out) @ W^T (d_out, d_in), times h_in (1 - h_in) when h_in.p is not null
//   (then dh is the previous layer's delta). WTp: W^T as full-K panels starting at column 0 of dh.
template <typename T>
void linear_backward_input(MatView<T> dh, MatView<const T> delta, const T* WTp, MatView<const T> h_in, int64_t n,
                           int64_t d_in, int64_t d_out, GemmScratch<T> s) {
  const Strided<T> none{nullptr, 0, 0};
  if (h_in.p)
    gemm<T>(dh, false, Strided<T>::rows(delta), WTp, none, n, d_in, d_out, s, SigmoidBackward<T>{h_in.p, h_in.ld});
  else
    gemm<T>(dh, false, Strided<T>::rows(delta), WTp, none, n, d_in, d_out, s);
}

// h = sigmoid(z), in place over `count` values (the head's probabilities use the exact form in heads.hpp).
template <typename T>
void sigmoid_forward(T* hz, int64_t count) {
  map_inplace<T>(hz, count, [](Vec<T> z) { return vsigmoid<T>(z); });
}

}  // namespace mlpgrad::MLPGRAD_ISA
