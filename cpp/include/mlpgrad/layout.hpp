// The flat parameter layout, scikit-learn's _pack order: W_1 .. W_L (each row-major, (d_{l-1}, d_l)),
// then b_1 .. b_L. The one owner of the layout in C++ (mlpgrad/_flat.py owns it in Python).
// Plain C++17, nothing of Python.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "mlpgrad/mlp.hpp"

namespace mlpgrad {

struct Layout {
  std::vector<int64_t> sizes;    // d_0 .. d_L
  std::vector<int64_t> w, b;     // offsets of W_l and b_l, l = 0 .. L-1
  int64_t n_weights = 0;         // the weights come first: offsets [0, n_weights)
  int64_t n_params = 0;          // P

  explicit Layout(const std::vector<int64_t>& layer_sizes) : sizes(layer_sizes) {
    if (sizes.size() < 2) throw std::invalid_argument("layout: need at least 2 layer sizes");
    for (int64_t s : sizes)
      if (s < 1) throw std::invalid_argument("layout: every layer size must be >= 1");
    const size_t L = sizes.size() - 1;
    for (size_t l = 0; l < L; ++l) {
      w.push_back(n_weights);
      n_weights += sizes[l] * sizes[l + 1];
    }
    n_params = n_weights;
    for (size_t l = 0; l < L; ++l) {
      b.push_back(n_params);
      n_params += sizes[l + 1];
    }
  }

  // The network whose parameters are theta (P,).
  template <typename T> Network<T> network(const T* theta) const {
    Network<T> net;
    net.sizes = sizes;
    for (size_t l = 0; l < w.size(); ++l) {
      net.W.push_back(theta + w[l]);
      net.b.push_back(theta + b[l]);
    }
    return net;
  }

  // Gradients written into flat (P,), in the same order.
  template <typename T> Gradients<T> gradients(T* flat) const {
    Gradients<T> g;
    for (size_t l = 0; l < w.size(); ++l) {
      g.dW.push_back(flat + w[l]);
      g.db.push_back(flat + b[l]);
    }
    return g;
  }
};

}  // namespace mlpgrad
