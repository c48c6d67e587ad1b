// Curvature of the loss L = sum_i c_i l_i (c_i = w_i for "sum", w_i / sum_j w_j for "mean"): products of the
// exact Hessian H = d^2 L / d theta^2 and of the generalized Gauss-Newton matrix
// G = sum_i c_i J_i^T (d^2 l_i / d z_L^2) J_i (J_i = d z_{L,i} / d theta) with vectors, and diag(G), each from
// one pass over the batch (Pearlmutter's R-operator beside the forward and the backward). theta, V and the
// results are in pack order (layout.hpp). Plain C++17, nothing of Python. Results do not depend on n_threads.
#pragma once

#include <cstdint>

#include "mlpgrad/mlp.hpp"

namespace mlpgrad {

enum class CurvatureOp {
  hvp = 0,       // out (P, m) = H V
  ggn_vp = 1,    // out (P, m) = G V
  ggn_diag = 2,  // out (P,) = diag(G)
};

template <typename T> struct CurvatureRequest {
  CurvatureOp op = CurvatureOp::hvp;
  const T* V = nullptr;  // hvp, ggn_vp: (P, m) row-major
  int64_t m = 0;         // hvp, ggn_vp: the number of vectors (>= 1)
  T* out = nullptr;      // (P, m), or (P,) for ggn_diag; overwritten
};

// Runs one request; returns the loss L.
template <typename T>
double curvature(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                 const CurvatureRequest<T>& request, int n_threads, const Interrupt* interrupt = nullptr);

}  // namespace mlpgrad
