// mlpgrad optimizer steps: one fused pass over a flat parameter buffer. Plain C++17, nothing of Python.
// The buffer holds the n_reg penalized parameters (every weight) first, then the others (the biases):
// scikit-learn's packing order. Each step takes the gradient of the data loss g, adds l2 * p to its first
// n_reg entries (the gradient of l2 / 2 * ||p[:n_reg]||^2), updates p and the optimizer state in place, and
// returns sum(p[:n_reg]^2) after the update (the penalty of the next step's loss), accumulated in double.
// The arithmetic is scikit-learn's (sklearn/neural_network/_stochastic_optimizers.py), element by element.
#pragma once

#include <cstdint>

namespace mlpgrad {

// Adam: m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;  p -= lr m / (sqrt(v) + eps).
// lr is the step's bias-corrected rate, lr_init sqrt(1 - beta2^t) / (1 - beta1^t), computed by the caller.
template <typename T>
double adam_step(T* params, const T* grads, T* m, T* v, int64_t n, int64_t n_reg, double l2, double lr, double beta1,
                 double beta2, double eps);

// SGD with momentum: u = momentum u - lr g;  p += u, or with Nesterov's momentum p += momentum u - lr g.
template <typename T>
double sgd_step(T* params, const T* grads, T* velocity, int64_t n, int64_t n_reg, double l2, double lr,
                double momentum, bool nesterov);

}  // namespace mlpgrad
