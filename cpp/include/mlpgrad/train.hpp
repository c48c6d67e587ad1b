// mlpgrad mini-batch training: one epoch of scikit-learn's stochastic loop (MLPClassifier with solver "adam"
// or "sgd") in one native call. Plain C++17, nothing of Python.
//
// The parameters live in one flat buffer, scikit-learn's _pack order: W_1 .. W_L (each row-major,
// (d_{l-1}, d_l)), then b_1 .. b_L. For each mini-batch B (rows order[s .. s + batch_size) of the data,
// or rows s .. s + batch_size when order is null), with sample weights w (all ones when null):
//
//   loss_B = sum_{i in B} w_i l_i / W_B + alpha / 2 * ||weights||^2 / W_B,   W_B = sum_{i in B} w_i
//   g      = the gradient of the first term (loss_and_grad, reduction "mean"), in the flat order
//   step   = adam_step / sgd_step (optim.hpp) with l2 = alpha / W_B
//
// A batch with W_B <= 0 carries no information and makes no step. The epoch's loss is
// sum_B loss_B * |B| (scikit-learn's accumulated_loss, before its division by the number of rows).
#pragma once

#include <cstdint>
#include <vector>

#include "mlpgrad/mlp.hpp"

namespace mlpgrad {

enum class Solver { adam = 0, sgd = 1 };

// The optimizer and its state, updated in place. adam: state1 = m, state2 = v, and the step's rate
// lr * sqrt(1 - beta2^t) / (1 - beta1^t) after incrementing *t (scikit-learn's bias correction).
// sgd: state1 = the velocity; rate lr.
template <typename T>
struct Optimizer {
  Solver solver = Solver::adam;
  T* state1 = nullptr;
  T* state2 = nullptr;
  int64_t* t = nullptr;  // steps taken so far (adam's t); incremented by every step, also for sgd
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adam
  double momentum = 0.9;                          // sgd
  bool nesterov = true;                           // sgd
};

struct EpochResult {
  double loss_sum = 0;  // sum over the batches of (loss_scale * data loss_B + penalty_B) * |B|
  double sumsq = 0;     // ||weights||^2 after the last step (the next step's penalty)
  int64_t steps = 0;    // steps made (batches of positive weight)
};

// sizes: d_0 .. d_L. params / grad: the flat buffers (grad is scratch, overwritten). data: the whole
// training set (labels or targets, sample_weight optional). order: null, or n row indices in [0, n).
// sumsq: ||weights||^2 of params on entry. loss_scale: the factor of each batch's data loss (not of its penalty
// alpha / 2 ||W||^2 / W_B) in loss_sum, for a reported loss other than the mean (scikit-learn's regressor averages
// its squared error over the outputs too). Throws std::invalid_argument on unusable arguments and
// Interrupted (between steps; every step made is kept) when the interrupt's poll says so.
template <typename T>
EpochResult train_epoch(const std::vector<int64_t>& sizes, Head head, T* params, T* grad, const Batch<T>& data,
                        const int64_t* order, int64_t batch_size, double alpha, double sumsq, const Optimizer<T>& opt,
                        int n_threads, const Interrupt* interrupt = nullptr, double loss_scale = 1.0);

}  // namespace mlpgrad
