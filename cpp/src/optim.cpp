// Optimizer steps on a flat parameter buffer (see mlpgrad/optim.hpp). Memory-bound loops of a few flops per
// element: written so the compiler vectorizes them; the reductions stay serial and in order (deterministic).
#include "mlpgrad/optim.hpp"

#include <cmath>
#include <stdexcept>

namespace mlpgrad {
namespace {

void check_sizes(int64_t n, int64_t n_reg) {
  if (n < 0 || n_reg < 0 || n_reg > n) throw std::invalid_argument("optimizer step: need 0 <= n_reg <= n");
}

// Runs body(i, g_i) over [0, n) with g_i the gradient plus the penalty's part l2 p_i on [0, n_reg): two
// plain loops, each vectorizable.
template <typename T, typename Body>
inline void for_each_grad(const T* p, const T* g, int64_t n, int64_t n_reg, T l2, Body body) {
  for (int64_t i = 0; i < n_reg; ++i) body(i, g[i] + l2 * p[i]);
  for (int64_t i = n_reg; i < n; ++i) body(i, g[i]);
}

// Eight interleaved partial sums (a fixed order, so the result is deterministic) that the compiler keeps
// in vector registers: a single running sum would be bound by the latency of one addition per element.
template <typename T>
double sum_squares(const T* p, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += double(p[i + j]) * double(p[i + j]);
  double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += double(p[i]) * double(p[i]);
  return s;
}

}  // namespace

template <typename T>
double adam_step(T* params, const T* grads, T* m, T* v, int64_t n, int64_t n_reg, double l2, double lr, double beta1,
                 double beta2, double eps) {
  check_sizes(n, n_reg);
  const T b1 = T(beta1), c1 = T(1 - beta1), b2 = T(beta2), c2 = T(1 - beta2), rate = T(lr), e = T(eps), l = T(l2);
  for_each_grad(params, grads, n, n_reg, l, [&](int64_t i, T g) {
    const T mi = b1 * m[i] + c1 * g;
    const T vi = b2 * v[i] + c2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    params[i] += -rate * mi / (std::sqrt(vi) + e);
  });
  return sum_squares(params, n_reg);
}

template <typename T>
double sgd_step(T* params, const T* grads, T* velocity, int64_t n, int64_t n_reg, double l2, double lr,
                double momentum, bool nesterov) {
  check_sizes(n, n_reg);
  const T mu = T(momentum), rate = T(lr), l = T(l2);
  if (nesterov) {
    for_each_grad(params, grads, n, n_reg, l, [&](int64_t i, T g) {
      const T u = mu * velocity[i] - rate * g;
      velocity[i] = u;
      params[i] += mu * u - rate * g;
    });
  } else {
    for_each_grad(params, grads, n, n_reg, l, [&](int64_t i, T g) {
      const T u = mu * velocity[i] - rate * g;
      velocity[i] = u;
      params[i] += u;
    });
  }
  return sum_squares(params, n_reg);
}

template double adam_step<float>(float*, const float*, float*, float*, int64_t, int64_t, double, double, double,
                                 double, double);
template double adam_step<double>(double*, const double*, double*, double*, int64_t, int64_t, double, double, double,
                                  double, double);
template double sgd_step<float>(float*, const float*, float*, int64_t, int64_t, double, double, double, bool);
template double sgd_step<double>(double*, const double*, double*, int64_t, int64_t, double, double, double, bool);

}  // namespace mlpgrad
