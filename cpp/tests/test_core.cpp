// The C++ core on its own, without Python: every entry point (forward, loss, loss_and_grad, check, and the
// per-sample ones: per_sample with each op, grad_gram) on awkward shapes, against a naive double-precision
// reference written below with plain loops (for the per-sample quantities: every g_i written out).
//
// Shapes cross the matrix-product blocks (KC = 256, MC = 240, NC = 1024, micro-tiles 12 x 32, 6 x 16,
// 6 x 8), the chunk boundaries of the engine (rows per chunk <= 1024, at most 8 groups) and its three
// schedules (narrow, chunked, layered: the latter two also forced); each case runs both dtypes, every
// SIMD level this CPU and build support and 1, 2 and 3 threads. Checked:
//   - results within tolerance of the reference (relative max-norm: float 1e-4, double 1e-10);
//   - results bit-identical for 1, 2 and 3 threads; outputs fully overwritten (pre-filled with NaN);
//   - inputs unchanged;
//   - bad problems throw std::invalid_argument; interrupts throw mlpgrad::Interrupted and leave no trace.
// Exit status 0 when everything passed, 1 otherwise. Meant to run under AddressSanitizer and UBSan
// (cmake -DMLPGRAD_SANITIZE=ON -DMLPGRAD_BUILD_TESTS=ON, then ctest): the case list keeps it around
// 40 s there on 2 cores, ~8 s in an optimized build. MLPGRAD_TEST_VERBOSE=1 prints one line per case.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mlpgrad/curvature.hpp"
#include "mlpgrad/layout.hpp"
#include "mlpgrad/mlp.hpp"
#include "mlpgrad/optim.hpp"
#include "mlpgrad/peak.hpp"
#include "mlpgrad/per_sample.hpp"
#include "mlpgrad/train.hpp"
#include "../src/engines.hpp"  // the per-ISA gemm_for_tests entries

namespace {

using mlpgrad::Head;
using mlpgrad::Isa;
using mlpgrad::Reduction;

int g_failures = 0;
bool g_verbose = false;

void fail(const std::string& what) {
  ++g_failures;
  if (g_failures <= 50) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  if (g_failures == 50) std::fprintf(stderr, "(further failures counted, not printed)\n");
}

#define EXPECT(cond, what)                                                                   \
  do {                                                                                       \
    if (!(cond)) fail(std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " + (what)); \
  } while (0)

// splitmix64: small, deterministic, the same on every platform.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  int64_t below(int64_t n) { return int64_t(next() % uint64_t(n)); }
  double normal() {  // Box-Muller
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

// Every value goes through float, so the float and the double runs see exactly the same problem.
double f32(double x) { return double(float(x)); }

std::string shape_str(const std::vector<int64_t>& sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "," : "") + std::to_string(sizes[i]);
  return s + "]";
}

// ---------------------------------------------------------------------------------------------------
// The problem (in double, every value exactly representable in float) and the variants run on it.

struct Problem {
  std::vector<int64_t> sizes;
  int64_t n = 0;
  std::vector<std::vector<double>> W, b;
  std::vector<double> X, targets, sample_weight;  // targets (n, k) in [0, 1]; weights in [0, 2), some 0
  std::vector<int64_t> labels;
  int64_t L() const { return int64_t(sizes.size()) - 1; }
  int64_t k() const { return sizes.back(); }
};

Problem make_problem(const std::vector<int64_t>& sizes, int64_t n, uint64_t seed, double weight_scale = 1.0) {
  Rng rng(seed);
  Problem P;
  P.sizes = sizes;
  P.n = n;
  const int64_t L = P.L(), k = P.k();
  for (int64_t l = 0; l < L; ++l) {
    const double scale = weight_scale * 2.0 / std::sqrt(double(sizes[l]));  // logits of a few units
    std::vector<double> W(sizes[l] * sizes[l + 1]), b(sizes[l + 1]);
    for (double& w : W) w = f32(scale * rng.normal());
    for (double& v : b) v = f32(0.5 * rng.normal());
    P.W.push_back(std::move(W));
    P.b.push_back(std::move(b));
  }
  P.X.resize(n * sizes[0]);
  for (double& x : P.X) x = f32(rng.normal());
  P.labels.resize(n);
  for (int64_t& y : P.labels) y = rng.below(k);
  P.targets.resize(n * k);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t kind = rng.below(4);  // 0: one-hot, 1: hard 0/1 entries, 2-3: soft
    for (int64_t j = 0; j < k; ++j) {
      double t = kind == 0 ? double(j == P.labels[i]) : kind == 1 ? double(rng.below(2)) : rng.uniform();
      P.targets[i * k + j] = f32(t);
    }
  }
  P.sample_weight.resize(n);
  for (double& w : P.sample_weight) w = rng.below(5) == 0 ? 0.0 : f32(2.0 * rng.uniform());
  return P;
}

enum class Targets { labels, dense };
const char* head_name(Head head) {
  return head == Head::sigmoid ? "sigmoid" : head == Head::softmax ? "softmax" : "identity";
}
struct Variant {
  Head head;
  Targets targets;
  bool weighted;
  Reduction reduction;
  bool input_grad;
  std::string str() const {
    return std::string(head_name(head)) +
           (targets == Targets::labels ? " labels" : " dense") + (weighted ? " weighted" : "") +
           (reduction == Reduction::mean ? " mean" : " sum") + (input_grad ? " dX" : "");
  }
};

// All 32 variants: the sigmoid and identity heads take dense targets only.
std::vector<Variant> all_variants() {
  std::vector<Variant> v;
  for (Head head : {Head::sigmoid, Head::softmax, Head::identity})
    for (Targets t : {Targets::labels, Targets::dense}) {
      if (head != Head::softmax && t == Targets::labels) continue;
      for (bool w : {false, true})
        for (Reduction r : {Reduction::sum, Reduction::mean})
          for (bool dx : {false, true}) v.push_back({head, t, w, r, dx});
    }
  return v;
}

// ---------------------------------------------------------------------------------------------------
// The reference: the definition, with plain loops, in double.

double sigmoid_ref(double z) { return 1.0 / (1.0 + std::exp(-z)); }
double softplus_ref(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))); }

struct Activations {
  std::vector<std::vector<double>> h;  // h[0] = X, h[l] (n, d_l); h[L] = logits
};

Activations forward_ref(const Problem& P) {
  const int64_t L = P.L(), n = P.n;
  Activations A;
  A.h.push_back(P.X);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t din = P.sizes[l], dout = P.sizes[l + 1];
    const std::vector<double>& h = A.h.back();
    std::vector<double> z(n * dout);
    for (int64_t i = 0; i < n; ++i) {
      double* zi = &z[i * dout];
      for (int64_t j = 0; j < dout; ++j) zi[j] = P.b[l][j];
      for (int64_t p = 0; p < din; ++p) {
        const double a = h[i * din + p];
        const double* w = &P.W[l][p * dout];
        for (int64_t j = 0; j < dout; ++j) zi[j] += a * w[j];
      }
      if (l < L - 1)
        for (int64_t j = 0; j < dout; ++j) zi[j] = sigmoid_ref(zi[j]);
    }
    A.h.push_back(std::move(z));
  }
  return A;
}

std::vector<double> probs_ref(const std::vector<double>& z, int64_t n, int64_t k, Head head) {
  std::vector<double> p(n * k);
  for (int64_t i = 0; i < n; ++i) {
    const double* zi = &z[i * k];
    if (head == Head::sigmoid) {
      for (int64_t j = 0; j < k; ++j) p[i * k + j] = sigmoid_ref(zi[j]);
    } else if (head == Head::identity) {
      for (int64_t j = 0; j < k; ++j) p[i * k + j] = zi[j];
    } else {
      const double m = *std::max_element(zi, zi + k);
      double s = 0;
      for (int64_t j = 0; j < k; ++j) s += std::exp(zi[j] - m);
      for (int64_t j = 0; j < k; ++j) p[i * k + j] = std::exp(zi[j] - m) / s;
    }
  }
  return p;
}

struct Result {  // what the library returns, or the reference
  double loss = 0;
  std::vector<std::vector<double>> dW, db;
  std::vector<double> dX;
};

// Each sample's own loss l_i (n,) and delta_L = dl_i/dz_L (n, k), unweighted: the head on the logits.
struct HeadRef {
  std::vector<double> loss, delta;
};

HeadRef head_ref(const Problem& P, const std::vector<double>& z, Head head, Targets targets) {
  const int64_t n = P.n, k = P.k();
  const std::vector<double> p = probs_ref(z, n, k, head);
  HeadRef H;
  H.loss.assign(n, 0.0);
  H.delta.assign(n * k, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* zi = &z[i * k];
    const double* ti = &P.targets[i * k];
    double* di = &H.delta[i * k];
    double li = 0;
    if (head == Head::sigmoid) {
      for (int64_t j = 0; j < k; ++j) {
        li += ti[j] * softplus_ref(-zi[j]) + (1.0 - ti[j]) * softplus_ref(zi[j]);
        di[j] = p[i * k + j] - ti[j];
      }
    } else if (head == Head::identity) {
      for (int64_t j = 0; j < k; ++j) {
        li += 0.5 * (zi[j] - ti[j]) * (zi[j] - ti[j]);
        di[j] = zi[j] - ti[j];
      }
    } else {
      const double m = *std::max_element(zi, zi + k);
      double s = 0;
      for (int64_t j = 0; j < k; ++j) s += std::exp(zi[j] - m);
      const double lse = m + std::log(s);
      if (targets == Targets::labels) {
        const int64_t y = P.labels[i];
        li = lse - zi[y];
        for (int64_t j = 0; j < k; ++j) di[j] = p[i * k + j] - double(j == y);
      } else {
        double st = 0;
        for (int64_t j = 0; j < k; ++j) {
          li += ti[j] * (lse - zi[j]);
          st += ti[j];
        }
        for (int64_t j = 0; j < k; ++j) di[j] = p[i * k + j] * st - ti[j];
      }
    }
    H.loss[i] = li;
  }
  return H;
}

// c_i (n,): w_i ("sum") or w_i / sum_j w_j ("mean"), w_i = 1 without sample weights.
std::vector<double> sample_scale_ref(const Problem& P, const Variant& v) {
  double total = v.weighted ? 0.0 : double(P.n);
  if (v.weighted)
    for (double w : P.sample_weight) total += w;
  const double scale = v.reduction == Reduction::mean ? 1.0 / total : 1.0;
  std::vector<double> c(P.n);
  for (int64_t i = 0; i < P.n; ++i) c[i] = (v.weighted ? P.sample_weight[i] : 1.0) * scale;
  return c;
}

Result grad_ref(const Problem& P, const Activations& A, const Variant& v) {
  const int64_t L = P.L(), n = P.n, k = P.k();
  const HeadRef H = head_ref(P, A.h[L], v.head, v.targets);
  const std::vector<double> c = sample_scale_ref(P, v);
  Result R;
  std::vector<double> delta(n * k);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) delta[i * k + j] = c[i] * H.delta[i * k + j];
    R.loss += c[i] * H.loss[i];
  }
  R.dW.resize(L);
  R.db.resize(L);
  for (int64_t l = L - 1; l >= 0; --l) {
    const int64_t din = P.sizes[l], dout = P.sizes[l + 1];
    const std::vector<double>& h = A.h[l];
    std::vector<double>& dW = R.dW[l];
    std::vector<double>& db = R.db[l];
    dW.assign(din * dout, 0.0);
    db.assign(dout, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* di = &delta[i * dout];
      for (int64_t j = 0; j < dout; ++j) db[j] += di[j];
      for (int64_t q = 0; q < din; ++q) {
        const double a = h[i * din + q];
        double* row = &dW[q * dout];
        for (int64_t j = 0; j < dout; ++j) row[j] += a * di[j];
      }
    }
    if (l == 0 && !v.input_grad) break;
    std::vector<double> g(n * din);  // dL/dh_l = delta W_l^T
    for (int64_t i = 0; i < n; ++i)
      for (int64_t q = 0; q < din; ++q) {
        const double* w = &P.W[l][q * dout];
        const double* di = &delta[i * dout];
        double s = 0;
        for (int64_t j = 0; j < dout; ++j) s += di[j] * w[j];
        g[i * din + q] = s;
      }
    if (l == 0) {
      R.dX = std::move(g);
    } else {
      for (int64_t i = 0; i < n * din; ++i) g[i] *= h[i] * (1.0 - h[i]);
      delta = std::move(g);
    }
  }
  return R;
}

// ---------------------------------------------------------------------------------------------------
// Comparison.

template <typename T> constexpr double tolerance() { return std::is_same<T, float>::value ? 1e-4 : 1e-10; }
template <typename T> const char* dtype_name() { return std::is_same<T, float>::value ? "float" : "double"; }

// max |a - r| / max |r| (absolute when r is all zeros); infinite when a has NaN or Inf.
template <typename T>
double rel_err(const T* a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (!std::isfinite(double(a[i]))) return std::numeric_limits<double>::infinity();
    num = std::max(num, std::fabs(double(a[i]) - r[i]));
    den = std::max(den, std::fabs(r[i]));
  }
  return den > 0 ? num / den : num;
}

double rel_err_scalar(double a, double r) {
  if (!std::isfinite(a)) return std::numeric_limits<double>::infinity();
  return r != 0 ? std::fabs(a - r) / std::fabs(r) : std::fabs(a);
}

struct Worst {
  double err = 0;
  std::string where;
};
Worst g_worst[2];     // float, double: forward, loss, loss_and_grad
Worst g_worst_ps[2];  // float, double: the per-sample quantities

template <typename T>
void record(double err, const std::string& where, Worst* worst = g_worst) {
  Worst& w = worst[std::is_same<T, float>::value ? 0 : 1];
  if (err > w.err || w.where.empty()) w = {err, where};
  if (!(err <= tolerance<T>())) {
    char msg[96];
    std::snprintf(msg, sizeof msg, ": relative error %.3g > %.0e", err, tolerance<T>());
    fail(where + msg);
  }
}

template <typename T> bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0);
}
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// ---------------------------------------------------------------------------------------------------
// The library, in dtype T.

template <typename T> std::vector<T> as(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }

template <typename T> struct Data {
  std::vector<std::vector<T>> W, b;
  std::vector<T> X, targets, sample_weight;
  std::vector<int64_t> labels;
  mlpgrad::Network<T> net;
  explicit Data(const Problem& P)
      : X(as<T>(P.X)), targets(as<T>(P.targets)), sample_weight(as<T>(P.sample_weight)), labels(P.labels) {
    net.sizes = P.sizes;
    for (int64_t l = 0; l < P.L(); ++l) {
      W.push_back(as<T>(P.W[l]));
      b.push_back(as<T>(P.b[l]));
    }
    for (int64_t l = 0; l < P.L(); ++l) {  // after every push_back: the pointers stay valid
      net.W.push_back(W[l].data());
      net.b.push_back(b[l].data());
    }
  }
  bool operator==(const Data& o) const {
    bool eq = same_bits(X, o.X) && same_bits(targets, o.targets) && same_bits(sample_weight, o.sample_weight) &&
              same_bits(labels, o.labels);
    for (size_t l = 0; l < W.size(); ++l) eq = eq && same_bits(W[l], o.W[l]) && same_bits(b[l], o.b[l]);
    return eq;
  }
  mlpgrad::Batch<T> batch(const Variant& v) const {
    mlpgrad::Batch<T> B;
    B.n = int64_t(X.size()) / net.sizes[0];
    B.X = X.data();
    if (v.targets == Targets::labels)
      B.labels = labels.data();
    else
      B.targets = targets.data();
    if (v.weighted) B.sample_weight = sample_weight.data();
    return B;
  }
};

template <typename T> struct Out {  // one call's results; pre-filled with NaN so a missed write shows
  double loss = 0, loss_only = 0;
  std::vector<std::vector<T>> dW, db;
  std::vector<T> dX;
};

template <typename T>
Out<T> run_grad(const Data<T>& D, const Problem& P, const Variant& v, int threads) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  Out<T> o;
  mlpgrad::Gradients<T> g;
  for (int64_t l = 0; l < P.L(); ++l) {
    o.dW.emplace_back(P.sizes[l] * P.sizes[l + 1], nan);
    o.db.emplace_back(P.sizes[l + 1], nan);
  }
  for (int64_t l = 0; l < P.L(); ++l) {
    g.dW.push_back(o.dW[l].data());
    g.db.push_back(o.db[l].data());
  }
  if (v.input_grad) {
    o.dX.assign(P.n * P.sizes[0], nan);
    g.dX = o.dX.data();
  }
  const mlpgrad::Batch<T> B = D.batch(v);
  o.loss = mlpgrad::loss_and_grad<T>(D.net, v.head, B, v.reduction, g, threads);
  o.loss_only = mlpgrad::loss<T>(D.net, v.head, B, v.reduction, threads);
  return o;
}

template <typename T>
std::vector<T> run_forward(const Data<T>& D, const Problem& P, Head head, int threads) {
  std::vector<T> probs(P.n * P.k(), std::numeric_limits<T>::quiet_NaN());
  mlpgrad::forward<T>(D.net, head, P.n, D.X.data(), probs.data(), threads);
  return probs;
}

// The engine's own choice ("default"), then each schedule forced.
const mlpgrad::Schedule kSchedules[] = {mlpgrad::Schedule::automatic, mlpgrad::Schedule::chunked,
                                        mlpgrad::Schedule::layered};
const char* schedule_name(mlpgrad::Schedule s) {
  return s == mlpgrad::Schedule::chunked ? "chunked" : s == mlpgrad::Schedule::layered ? "layered" : "default";
}

std::vector<Isa> isas() {
  std::vector<Isa> v;
  for (int i = 0; i <= int(mlpgrad::best_isa()); ++i) v.push_back(Isa(i));
  return v;
}

int64_t g_calls = 0;

// One case in dtype T: every variant, SIMD level and thread count.
template <typename T>
void run_case(const Problem& P, const std::vector<Variant>& variants, const std::vector<Result>& refs,
              const std::vector<std::vector<double>>& prob_refs, const std::string& name) {
  const Data<T> D(P), pristine(P);
  for (Isa isa : isas()) {
    mlpgrad::set_active_isa(isa);
    EXPECT(mlpgrad::active_isa() == isa, "set_active_isa");
    const std::string at = name + " " + dtype_name<T>() + " " + mlpgrad::isa_name(isa);
    for (Head head : {Head::sigmoid, Head::softmax, Head::identity}) {
      if (prob_refs[int(head)].empty() && P.n > 0) continue;  // head not among this case's variants
      const std::string where = at + " forward " + head_name(head);
      const std::vector<T> p1 = run_forward(D, P, head, 1);
      record<T>(rel_err(p1.data(), prob_refs[int(head)]), where);
      for (int threads : {2, 3}) {
        EXPECT(same_bits(run_forward(D, P, head, threads), p1), where + ": differs with " + std::to_string(threads) + " threads");
        ++g_calls;
      }
      ++g_calls;
    }
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      const Variant& v = variants[vi];
      const Result& R = refs[vi];
      const std::string where = at + " " + v.str();
      const Out<T> o1 = run_grad(D, P, v, 1);
      record<T>(rel_err_scalar(o1.loss, R.loss), where + " loss_and_grad loss");
      record<T>(rel_err_scalar(o1.loss_only, R.loss), where + " loss()");
      for (int64_t l = 0; l < P.L(); ++l) {
        record<T>(rel_err(o1.dW[l].data(), R.dW[l]), where + " dW[" + std::to_string(l) + "]");
        record<T>(rel_err(o1.db[l].data(), R.db[l]), where + " db[" + std::to_string(l) + "]");
      }
      if (v.input_grad) record<T>(rel_err(o1.dX.data(), R.dX), where + " dX");
      for (int threads : {2, 3}) {
        const Out<T> o = run_grad(D, P, v, threads);
        bool same = same_bits(o.loss, o1.loss) && same_bits(o.loss_only, o1.loss_only) && same_bits(o.dX, o1.dX);
        for (int64_t l = 0; l < P.L(); ++l) same = same && same_bits(o.dW[l], o1.dW[l]) && same_bits(o.db[l], o1.db[l]);
        EXPECT(same, where + ": results differ between 1 and " + std::to_string(threads) + " threads");
      }
      g_calls += 6;
    }
  }
  mlpgrad::set_active_isa(mlpgrad::best_isa());
  EXPECT(D == pristine, name + " " + dtype_name<T>() + ": the inputs were modified");
}

// ---------------------------------------------------------------------------------------------------
// The cases.

struct Case {
  std::vector<int64_t> sizes;
  std::vector<int64_t> ns;
};

// Widths 1 2 3 15 16 17 31 33 65 129 257 1030 at the input, hidden and output positions; depth 1..5.
// What they cross: NR (8 / 16 / 32 float, 4 / 8 / 16 double) and MR (6, 12) at the small widths;
// KC = 256 as the inner dimension (d_in = 257, 1030; chunk rows > 256 in dW = h^T delta); MC = 240 as
// rows (chunks of > 240 rows; d_in > 240 in dW); NC = 1024 as columns (d_out = 1030 forward, d_in = 1030
// in dX). Rows per chunk: up to 1024 for narrow networks (N = 1023 one chunk, 1025 two, 3000 three);
// ~112-240 for [1030, 1] (13-27 chunks in up to 8 groups); >= 256 when the weight gradients pass 1 MiB.
// Schedules (cpp/src/network.hpp): narrow when every width is <= 16, else chunked with >= 8 chunks,
// else layered (whole-batch products in 2-D tiles); main() also forces chunked and layered.
std::vector<Case> cases() {
  const std::vector<int64_t> all_n = {0, 1, 2, 17, 1023, 1025, 3000};
  return {
      {{1, 1}, all_n},
      {{2, 3, 2}, all_n},
      {{3, 1, 2, 1}, {1, 17, 1025}},
      {{15, 16, 17}, {2, 1023, 3000}},
      {{16, 17, 15, 16, 3}, {17, 1025}},
      {{17, 31, 33, 2, 1, 3}, {2, 3000}},
      {{1, 2, 3, 15, 16, 17}, {1025}},
      {{31, 65, 17}, {17, 1025}},
      {{33, 129, 1}, {1023}},
      {{65, 257, 3}, {17, 300}},
      {{129, 33, 65, 15}, {3000}},
      {{257, 257, 17}, {300}},
      {{1, 65, 129, 257, 31, 1}, {17}},
      {{1030, 1}, {3000}},
      {{1030, 257, 2}, {17}},
      {{3, 1030, 16}, {17}},
      {{2, 17, 1030}, {2, 33}},
      {{16, 1030, 1030, 5}, {2}},
      {{65, 15}, {0, 1023, 3000}},
      // the narrow engine (every width <= 16; chunks of 1024 rows, lanes across rows)
      {{16, 16, 16}, {17, 1025}},
      {{5, 3, 5}, {1023, 9000}},
      {{16, 15, 16, 1, 16, 3}, {2, 3000}},
      // the chunked schedule without forcing it (>= 8 chunks)
      {{17, 2}, {8200}},
  };
}

// The cost of one (problem, variant), roughly, in flops of one loss_and_grad call: the products, plus
// per-row work (head, reference, checks) that dominates for tiny widths, plus a fixed cost per call.
double cost(const std::vector<int64_t>& sizes, int64_t n) {
  double f = 0;
  for (size_t l = 0; l + 1 < sizes.size(); ++l) f += double(sizes[l]) * double(sizes[l + 1]);
  return 6.0 * f * double(n) + 2000.0 * double(n) + 1e5;
}

// ---------------------------------------------------------------------------------------------------
// Bad problems.

template <typename T>
void expect_invalid(const std::function<void()>& f, const std::string& what) {
  bool thrown = false;
  try {
    f();
  } catch (const std::invalid_argument&) {
    thrown = true;
  } catch (...) {
    fail(what + " (" + dtype_name<T>() + "): threw something other than std::invalid_argument");
    return;
  }
  EXPECT(thrown, what + " (" + dtype_name<T>() + "): no std::invalid_argument");
}

template <typename T>
void bad_inputs() {
  const Problem P = make_problem({3, 4, 2}, 5, 7);
  Data<T> D(P);
  const Variant labels{Head::softmax, Targets::labels, false, Reduction::sum, false};
  const Variant dense{Head::sigmoid, Targets::dense, true, Reduction::mean, false};
  using Net = mlpgrad::Network<T>;
  using Batch = mlpgrad::Batch<T>;

  // The valid problem passes.
  try {
    mlpgrad::check<T>(D.net, Head::softmax, nullptr, Reduction::sum, false);
    Batch B = D.batch(labels);
    mlpgrad::check<T>(D.net, Head::softmax, &B, Reduction::mean, true);
    B = D.batch(dense);
    mlpgrad::check<T>(D.net, Head::sigmoid, &B, Reduction::mean, true);
  } catch (const std::exception& e) {
    fail(std::string("check on a valid problem threw: ") + e.what());
  }

  auto check_net = [&](Net net, const std::string& what) {
    expect_invalid<T>([&] { mlpgrad::check<T>(net, Head::sigmoid, nullptr, Reduction::sum, false); }, what);
    Batch B = D.batch(labels);
    expect_invalid<T>([&] { mlpgrad::loss<T>(net, Head::softmax, B, Reduction::sum, 1); }, what + " via loss");
  };
  { Net n = D.net; n.W[1] = nullptr; check_net(n, "null W"); }
  { Net n = D.net; n.b[0] = nullptr; check_net(n, "null b"); }
  { Net n = D.net; n.sizes[1] = 0; check_net(n, "width 0"); }
  { Net n = D.net; n.sizes[0] = -1; check_net(n, "negative width"); }
  { Net n = D.net; n.sizes.pop_back(); check_net(n, "sizes one short"); }
  { Net n = D.net; n.b.pop_back(); check_net(n, "b one short"); }
  { Net n; n.sizes = {3}; check_net(n, "no layers"); }
  expect_invalid<T>([&] { mlpgrad::check<T>(D.net, Head(7), nullptr, Reduction::sum, false); }, "unknown head");

  // Gradient buffers for P (kept alive by `dW`, `db`) and their Gradients view.
  auto make_grads = [&](std::vector<std::vector<T>>& dW, std::vector<std::vector<T>>& db) {
    mlpgrad::Gradients<T> g;
    for (int64_t l = 0; l < P.L(); ++l) {
      dW.emplace_back(P.sizes[l] * P.sizes[l + 1]);
      db.emplace_back(P.sizes[l + 1]);
      g.dW.push_back(dW.back().data());
      g.db.push_back(db.back().data());
    }
    return g;
  };
  auto check_batch = [&](Batch B, Head head, Reduction red, const std::string& what) {
    expect_invalid<T>([&] { mlpgrad::check<T>(D.net, head, &B, red, true); }, what);
    expect_invalid<T>([&] { mlpgrad::loss<T>(D.net, head, B, red, 1); }, what + " via loss");
    std::vector<std::vector<T>> dW, db;
    const mlpgrad::Gradients<T> g = make_grads(dW, db);
    expect_invalid<T>([&] { mlpgrad::loss_and_grad<T>(D.net, head, B, red, g, 1); }, what + " via loss_and_grad");
  };
  std::vector<int64_t> bad_labels = D.labels;
  { Batch B = D.batch(labels); bad_labels[3] = 2; B.labels = bad_labels.data(); check_batch(B, Head::softmax, Reduction::sum, "label == k"); }
  { Batch B = D.batch(labels); bad_labels[3] = -1; B.labels = bad_labels.data(); check_batch(B, Head::softmax, Reduction::sum, "label -1"); }
  { Batch B = D.batch(labels); check_batch(B, Head::sigmoid, Reduction::sum, "labels with the sigmoid head"); }
  { Batch B = D.batch(labels); B.X = nullptr; check_batch(B, Head::softmax, Reduction::sum, "null X"); }
  { Batch B = D.batch(labels); B.n = -1; check_batch(B, Head::softmax, Reduction::sum, "negative n"); }
  { Batch B = D.batch(dense); B.targets = nullptr; check_batch(B, Head::sigmoid, Reduction::sum, "no targets"); }
  { Batch B = D.batch(labels); B.n = 0; check_batch(B, Head::softmax, Reduction::mean, "mean over N = 0"); }
  std::vector<T> zeros(P.n, T(0));
  { Batch B = D.batch(dense); B.sample_weight = zeros.data(); check_batch(B, Head::sigmoid, Reduction::mean, "mean, zero total weight"); }

  // The forward pass checks the network and X too.
  std::vector<T> probs(P.n * P.k());
  { Net n = D.net; n.W[0] = nullptr;
    expect_invalid<T>([&] { mlpgrad::forward<T>(n, Head::sigmoid, P.n, D.X.data(), probs.data(), 1); }, "forward, null W"); }
  expect_invalid<T>([&] { mlpgrad::forward<T>(D.net, Head::sigmoid, P.n, nullptr, probs.data(), 1); }, "forward, null X");
  expect_invalid<T>([&] { mlpgrad::forward<T>(D.net, Head::sigmoid, -2, D.X.data(), probs.data(), 1); }, "forward, n < 0");

  // loss_and_grad: one dW and one db per layer.
  {
    Batch B = D.batch(labels);
    std::vector<std::vector<T>> dW, db;
    mlpgrad::Gradients<T> g = make_grads(dW, db);
    g.dW.pop_back();
    expect_invalid<T>([&] { mlpgrad::loss_and_grad<T>(D.net, Head::softmax, B, Reduction::sum, g, 1); }, "one dW short");
  }
  EXPECT(D == Data<T>(P), "bad-input calls modified the inputs");
}

// scan(): each value rule found (labels, targets of both heads, weights), the labels' range, the total weight
// in row order; a batch marked scanned runs with the scan's total and gives the unscanned call's bits. Layout:
// scikit-learn's pack order, and a call on flat parameters and a flat gradient equals one on separate arrays.
template <typename T>
void scan_and_layout() {
  using Batch = mlpgrad::Batch<T>;
  using mlpgrad::Fault;
  const Problem P = make_problem({3, 4, 2}, 9, 11);
  Data<T> D(P);
  const Variant labels{Head::softmax, Targets::labels, true, Reduction::mean, false};
  const Variant dense{Head::sigmoid, Targets::dense, true, Reduction::mean, false};
  const std::string dt = dtype_name<T>();
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();

  Batch B = D.batch(labels);
  mlpgrad::Scan sc = mlpgrad::scan<T>(B, Head::softmax, 2);
  double total = 0;
  for (T w : D.sample_weight) total += double(w);
  EXPECT(sc.fault == Fault::none && sc.total_weight == total, "scan of a valid batch (" + dt + ")");
  B.sample_weight = nullptr;
  EXPECT(mlpgrad::scan<T>(B, Head::softmax, 2).total_weight == double(P.n), "scan: total without weights");
  std::vector<int64_t> bad_labels = D.labels;
  bad_labels[2] = 5;
  bad_labels[7] = -3;
  B.labels = bad_labels.data();
  sc = mlpgrad::scan<T>(B, Head::softmax, 2);
  EXPECT(sc.fault == Fault::label_range && sc.label_min == -3 && sc.label_max == 5, "scan: labels' range (" + dt + ")");
  B.n = 0;
  EXPECT(mlpgrad::scan<T>(B, Head::softmax, 2).fault == Fault::none, "scan of no rows");

  auto target_fault = [&](Head head, T value) {
    std::vector<T> t = D.targets;
    t[5] = value;
    Batch Bt = D.batch(dense);
    Bt.targets = t.data();
    return mlpgrad::scan<T>(Bt, head, 2).fault == Fault::target_range;
  };
  EXPECT(target_fault(Head::sigmoid, T(1.5)) && target_fault(Head::sigmoid, T(-0.1)) && target_fault(Head::sigmoid, nan),
         "scan: sigmoid targets outside [0, 1] (" + dt + ")");
  EXPECT(target_fault(Head::softmax, T(-1)) && target_fault(Head::softmax, inf) && target_fault(Head::softmax, nan),
         "scan: softmax targets negative or not finite (" + dt + ")");
  EXPECT(!target_fault(Head::softmax, T(7)), "scan: a softmax target above 1 is valid");
  EXPECT(target_fault(Head::identity, inf) && target_fault(Head::identity, -inf) && target_fault(Head::identity, nan),
         "scan: identity targets not finite (" + dt + ")");
  EXPECT(!target_fault(Head::identity, T(-7)) && !target_fault(Head::identity, std::numeric_limits<T>::max()),
         "scan: any finite identity target is valid (" + dt + ")");
  for (T w : {T(-1), nan, inf}) {
    std::vector<T> sw = D.sample_weight;
    sw[4] = w;
    Batch Bw = D.batch(dense);
    Bw.sample_weight = sw.data();
    EXPECT(mlpgrad::scan<T>(Bw, Head::sigmoid, 2).fault == Fault::sample_weight, "scan: a bad weight (" + dt + ")");
  }

  // Layout: offsets, and the same call on flat buffers.
  const mlpgrad::Layout layout(P.sizes);
  EXPECT(layout.w == (std::vector<int64_t>{0, 12}) && layout.b == (std::vector<int64_t>{20, 24}) &&
             layout.n_weights == 20 && layout.n_params == 26, "Layout offsets");
  std::vector<T> theta(26), flat_grad(26, nan);
  for (int64_t l = 0; l < P.L(); ++l) {
    std::copy(D.W[l].begin(), D.W[l].end(), theta.begin() + layout.w[l]);
    std::copy(D.b[l].begin(), D.b[l].end(), theta.begin() + layout.b[l]);
  }
  const Out<T> o = run_grad(D, P, dense, 2);
  const Batch Bd = D.batch(dense);
  const double flat_loss = mlpgrad::loss_and_grad<T>(layout.network<T>(theta.data()), Head::sigmoid, Bd,
                                                     Reduction::mean, layout.gradients<T>(flat_grad.data()), 2);
  bool same = flat_loss == o.loss;
  for (int64_t l = 0; l < P.L(); ++l) {
    same = same && std::memcmp(o.dW[l].data(), flat_grad.data() + layout.w[l], sizeof(T) * o.dW[l].size()) == 0;
    same = same && std::memcmp(o.db[l].data(), flat_grad.data() + layout.b[l], sizeof(T) * o.db[l].size()) == 0;
  }
  EXPECT(same, "a call through Layout views equals the call on separate arrays (" + dt + ")");

  // A batch marked scanned (as the binding hands it over) runs with the scan's total: the same bits.
  Batch Bs = Bd;
  Bs.total_weight = mlpgrad::scan<T>(Bd, Head::sigmoid, 2).total_weight;
  std::vector<T> grad2(26, nan);
  const double scanned_loss = mlpgrad::loss_and_grad<T>(layout.network<T>(theta.data()), Head::sigmoid, Bs,
                                                        Reduction::mean, layout.gradients<T>(grad2.data()), 2);
  EXPECT(scanned_loss == flat_loss && std::memcmp(grad2.data(), flat_grad.data(), sizeof(T) * 26) == 0,
         "a scanned batch gives the unscanned call's bits (" + dt + ")");
  bool threw = false;
  try {
    mlpgrad::Layout bad(std::vector<int64_t>{3, 0, 2});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "Layout with a zero width throws std::invalid_argument");
  EXPECT(D == Data<T>(P), "scan and layout calls modified the inputs");
}

// Saturated sigmoids and softmax, logits in the hundreds to thousands (exp clamps, exact 0 and 1
// activations): finite losses and gradients, the same for every thread count, and in double still
// within tolerance of the reference. NaN in a row of X: a NaN loss, no crash.
template <typename T>
void extremes() {
  const Problem P = make_problem({5, 7, 4}, 50, 99, 300.0);
  const Data<T> D(P);
  const Activations A = forward_ref(P);
  for (const Variant& v : {Variant{Head::sigmoid, Targets::dense, true, Reduction::sum, true},
                           Variant{Head::softmax, Targets::labels, false, Reduction::mean, true},
                           Variant{Head::softmax, Targets::dense, true, Reduction::sum, true}}) {
    const Result R = grad_ref(P, A, v);
    for (Isa isa : isas()) {
      mlpgrad::set_active_isa(isa);
      const std::string where = std::string("extreme logits ") + dtype_name<T>() + " " + mlpgrad::isa_name(isa) + " " + v.str();
      const Out<T> o = run_grad(D, P, v, 1);
      bool finite = std::isfinite(o.loss) && std::isfinite(o.loss_only);
      for (int64_t l = 0; l < P.L(); ++l)
        for (const std::vector<T>* a : {&o.dW[l], &o.db[l]})
          for (T x : *a) finite = finite && std::isfinite(x);
      for (T x : o.dX) finite = finite && std::isfinite(x);
      EXPECT(finite, where + ": non-finite loss or gradient");
      if (std::is_same<T, double>::value) {
        record<T>(rel_err_scalar(o.loss, R.loss), where + " loss");
        for (int64_t l = 0; l < P.L(); ++l) record<T>(rel_err(o.dW[l].data(), R.dW[l]), where + " dW[" + std::to_string(l) + "]");
        record<T>(rel_err(o.dX.data(), R.dX), where + " dX");
      }
      const Out<T> o3 = run_grad(D, P, v, 3);
      EXPECT(same_bits(o.loss, o3.loss) && same_bits(o.dX, o3.dX) && same_bits(o.dW[0], o3.dW[0]),
             where + ": results differ between 1 and 3 threads");
      g_calls += 4;
    }
  }
  Data<T> bad(P);
  bad.X[3 * P.sizes[0] + 1] = std::numeric_limits<T>::quiet_NaN();
  const Variant v{Head::softmax, Targets::labels, false, Reduction::sum, true};
  for (Isa isa : isas()) {
    mlpgrad::set_active_isa(isa);
    const Out<T> o = run_grad(bad, P, v, 2);
    EXPECT(std::isnan(o.loss), std::string("NaN in X: loss not NaN, ") + dtype_name<T>() + " " + mlpgrad::isa_name(isa));
    g_calls += 2;
  }
  mlpgrad::set_active_isa(mlpgrad::best_isa());
}

// Interrupts (mlpgrad::Interrupt): a poll that fires at once or after a while makes the call throw
// mlpgrad::Interrupted (or, when the call ended before the next poll, return normally); a poll that
// never fires changes nothing; and a call after an interrupted one gives the same bits as before it.
struct PollCounter {
  int calls = 0, fire_at = 1;  // poll number that returns true (0: never)
  static bool poll(void* ctx) {
    PollCounter* c = static_cast<PollCounter*>(ctx);
    return ++c->calls == c->fire_at;
  }
};

template <typename T>
void interrupts() {
  const Variant v{Head::softmax, Targets::labels, true, Reduction::mean, true};
  for (mlpgrad::Schedule forced : kSchedules) {
    mlpgrad::set_schedule(forced);
    const char* schedule = schedule_name(forced);
    for (const std::vector<int64_t>& sizes : {std::vector<int64_t>{5, 3, 5}, std::vector<int64_t>{40, 33, 7}}) {
      const Problem P = make_problem(sizes, 20000, 123);
      const Data<T> D(P);
      const std::string where = std::string("interrupt ") + dtype_name<T>() + " " + schedule + " " + shape_str(sizes);
      const Out<T> before = run_grad(D, P, v, 2);
      for (int fire_at : {0, 1, 2}) {
        PollCounter counter;
        counter.fire_at = fire_at;
        mlpgrad::Interrupt intr;
        intr.poll = &PollCounter::poll;
        intr.ctx = &counter;
        std::vector<std::vector<T>> dW, db;
        std::vector<T> dX(P.n * P.sizes[0]), probs(P.n * P.k());
        mlpgrad::Gradients<T> g;
        for (int64_t l = 0; l < P.L(); ++l) {
          dW.emplace_back(P.sizes[l] * P.sizes[l + 1]);
          db.emplace_back(P.sizes[l + 1]);
        }
        for (int64_t l = 0; l < P.L(); ++l) {
          g.dW.push_back(dW[l].data());
          g.db.push_back(db[l].data());
        }
        g.dX = dX.data();
        const mlpgrad::Batch<T> B = D.batch(v);
        const std::string w = where + " fire at poll " + std::to_string(fire_at);
        // Only the calling thread (OpenMP thread 0) polls, before the units of work it takes: with one
        // thread a poll that fires at once stops the call for sure; with two it may not be reached.
        for (int threads : {1, 2})
          for (int mode = 0; mode < 3; ++mode) {
            counter.calls = 0;
            bool interrupted = false;
            double value = 0;
            try {
              if (mode == 0) mlpgrad::forward<T>(D.net, v.head, P.n, D.X.data(), probs.data(), threads, &intr);
              if (mode == 1) value = mlpgrad::loss<T>(D.net, v.head, B, v.reduction, threads, &intr);
              if (mode == 2) value = mlpgrad::loss_and_grad<T>(D.net, v.head, B, v.reduction, g, threads, &intr);
            } catch (const mlpgrad::Interrupted&) {
              interrupted = true;
            }
            ++g_calls;
            const std::string wm = w + (mode == 0 ? " forward" : mode == 1 ? " loss" : " loss_and_grad") + ", " +
                                   std::to_string(threads) + " threads";
            const bool fired = fire_at > 0 && counter.calls >= fire_at;
            EXPECT(interrupted == fired, wm + (fired ? ": no mlpgrad::Interrupted after the poll fired"
                                                     : ": mlpgrad::Interrupted though the poll never fired"));
            EXPECT(threads > 1 || counter.calls >= 1, wm + ": the interrupt was never polled");
            if (interrupted) continue;
            if (mode == 1) EXPECT(same_bits(value, before.loss_only), wm + ": loss differs from the plain call's");
            if (mode == 2) {
              bool same = same_bits(value, before.loss) && same_bits(dX, before.dX);
              for (int64_t l = 0; l < P.L(); ++l)
                same = same && same_bits(dW[l], before.dW[l]) && same_bits(db[l], before.db[l]);
              EXPECT(same, wm + ": results differ from the plain call's");
            }
          }
      }
      const Out<T> after = run_grad(D, P, v, 2);
      bool same = same_bits(after.loss, before.loss) && same_bits(after.loss_only, before.loss_only) &&
                  same_bits(after.dX, before.dX);
      for (int64_t l = 0; l < P.L(); ++l) same = same && same_bits(after.dW[l], before.dW[l]) && same_bits(after.db[l], before.db[l]);
      EXPECT(same, where + ": results after interrupted calls differ from those before");
      g_calls += 4;
    }
  }
  mlpgrad::set_schedule(mlpgrad::Schedule::automatic);
}

// The matrix product (cpp/src/gemm.hpp) of every ISA against a naive triple loop in double, on sizes
// around its blocks: MR (6, 12), NR (4 to 32), kSmallN = 4, KC = 256, MC = 240, NC = 1024. Four layouts, as
// the engine uses them: A row-major with B pre-packed (forward, dX), overwriting and accumulating; A
// transposed (rsa = 1, the h^T of dW) with B packed by gemm from rows, plus its column sums (db); and B
// from columns (rsb = 1). Checked: each element within 4 k eps sum_p |a_ip b_pj| of the exact sum, the
// column sums likewise, and the columns past n of each row untouched.
template <typename T>
void gemm_case(Isa isa, int64_t m, int64_t n, int64_t k, int layout, Rng& rng, double& worst) {
  const int64_t ldc = n + 3;
  const bool a_transposed = layout == 2, b_columns = layout == 3, prepacked = layout <= 1;
  std::vector<T> A(m * k), B(k * n), C(m * ldc), bsum(n);
  for (T& v : A) v = T(2 * rng.uniform() - 1);
  for (T& v : B) v = T(2 * rng.uniform() - 1);
  for (T& v : C) v = T(2 * rng.uniform() - 1);
  for (T& v : bsum) v = T(2 * rng.uniform() - 1);
  const std::vector<T> C0 = C, bsum0 = bsum;
  // A (i, p): row-major A[i k + p], or the same values stored transposed; B (p, j) likewise.
  std::vector<T> At(A.size()), Bt(B.size());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) At[p * m + i] = A[i * k + p];
  for (int64_t p = 0; p < k; ++p)
    for (int64_t j = 0; j < n; ++j) Bt[j * k + p] = B[p * n + j];
  const bool accumulate = layout != 0;
  mlpgrad::GemmTestCase<T> c{m, n, k, a_transposed ? At.data() : A.data(), a_transposed ? 1 : k,
                             a_transposed ? m : 1, b_columns ? Bt.data() : B.data(), b_columns ? 1 : n,
                             b_columns ? k : 1, prepacked, C.data(), ldc, accumulate, prepacked ? nullptr : bsum.data()};
  switch (isa) {
#ifdef MLPGRAD_HAVE_AVX512
    case Isa::avx512: mlpgrad::avx512::gemm_for_tests<T>(c); break;
#endif
#ifdef MLPGRAD_HAVE_AVX2
    case Isa::avx2: mlpgrad::avx2::gemm_for_tests<T>(c); break;
#endif
    default: mlpgrad::generic::gemm_for_tests<T>(c); break;
  }
  const double eps = std::numeric_limits<T>::epsilon();
  const std::string where = std::string("gemm ") + mlpgrad::isa_name(isa) + " " + dtype_name<T>() + " m=" +
                            std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                            " layout " + std::to_string(layout);
  bool ok = true;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double exact = accumulate ? double(C0[i * ldc + j]) : 0.0, bound = std::fabs(exact);
      for (int64_t p = 0; p < k; ++p) {
        exact += double(A[i * k + p]) * double(B[p * n + j]);
        bound += std::fabs(double(A[i * k + p]) * double(B[p * n + j]));
      }
      const double err = std::fabs(double(C[i * ldc + j]) - exact) / (4 * double(k + 1) * eps * bound + 1e-300);
      worst = std::max(worst, std::isfinite(err) ? err : 1e300);
      ok = ok && err <= 1;
    }
    for (int64_t j = n; j < ldc; ++j) ok = ok && same_bits(double(C[i * ldc + j]), double(C0[i * ldc + j]));
  }
  EXPECT(ok, where + ": C differs from the naive product (or a column past n was written)");
  if (!prepacked) {
    bool sums_ok = true;
    for (int64_t j = 0; j < n; ++j) {
      double exact = double(bsum0[j]), bound = std::fabs(exact);
      for (int64_t p = 0; p < k; ++p) {
        exact += double(B[p * n + j]);
        bound += std::fabs(double(B[p * n + j]));
      }
      sums_ok = sums_ok && std::fabs(double(bsum[j]) - exact) <= 4 * double(k + 1) * eps * bound;
    }
    EXPECT(sums_ok, where + ": the column sums of B differ from the naive ones");
  }
  ++g_calls;
}

// The FMA peak runs on every SIMD level and thread count and returns a rate (a positive finite number; its size
// depends on the machine and its load, so it is printed, not checked).
template <typename T> void fma_peaks() {
  for (Isa isa : isas()) {
    mlpgrad::set_active_isa(isa);
    for (int threads : {1, 2}) {
      const double rate = mlpgrad::fma_peak<T>(threads);
      const std::string where = std::string("fma_peak ") + dtype_name<T>() + " " + mlpgrad::isa_name(isa) + " " +
                                std::to_string(threads) + " threads";
      EXPECT(std::isfinite(rate) && rate > 0, where + ": " + std::to_string(rate));
      std::printf("%s: %.1f GFLOP/s\n", where.c_str(), rate);
      ++g_calls;
    }
  }
  mlpgrad::set_active_isa(mlpgrad::best_isa());
}

template <typename T> void gemm_products() {
  Rng rng(2024);
  double worst = 0;
  int64_t count = 0;
  for (Isa isa : isas())
    for (int64_t m : {1, 2, 5, 6, 7, 11, 12, 13, 127, 241})
      for (int64_t n : {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65})
        for (int64_t k : {1, 2, 7, 255, 256, 257}) {
          if (m * n * k > 600000) continue;
          gemm_case<T>(isa, m, n, k, int(count++ % 4), rng, worst);
        }
  for (Isa isa : isas())  // NC + 1 columns; KC and MC crossed twice
    for (int layout = 0; layout < 4; ++layout) {
      gemm_case<T>(isa, 13, 1025, 3, layout, rng, worst);
      gemm_case<T>(isa, 481, 33, 513, layout, rng, worst);
      count += 2;
    }
  std::printf("gemm %s: %lld products, largest error %.3g times its bound 4 (k + 1) eps sum |a b|\n", dtype_name<T>(),
              (long long)count, worst);
}

// train_epoch (mlpgrad/train.hpp) against the same loop written here from loss_and_grad and the optimizer
// steps: bit-identical parameters, state, loss and step count; shuffled rows, weights with a zero-weight
// batch, a short last batch; an index out of range throws std::invalid_argument.
template <typename T>
void training() {
  const std::vector<int64_t> sizes{6, 11, 3};
  const int64_t n = 53, bs = 8, L = 2;
  int64_t n_reg = 0, n_params = 0;
  for (int64_t l = 0; l < L; ++l) n_reg += sizes[l] * sizes[l + 1];
  n_params = n_reg + sizes[1] + sizes[2];
  Rng rng(77);
  std::vector<T> p0(n_params), X(n * sizes[0]), sw(n);
  std::vector<int64_t> labels(n), order(n);
  for (auto& v : p0) v = T(0.3 * rng.normal());
  for (auto& v : X) v = T(rng.normal());
  for (auto& v : labels) v = rng.below(sizes[2]);
  for (auto& v : sw) v = T(rng.uniform());
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  for (int64_t i = 0; i < bs; ++i) sw[order[i]] = T(0);  // the first batch weighs nothing: no step
  mlpgrad::Batch<T> data;
  data.n = n;
  data.X = X.data();
  data.labels = labels.data();
  data.sample_weight = sw.data();
  const double alpha = 0.01, lr = 0.02;
  for (mlpgrad::Solver solver : {mlpgrad::Solver::adam, mlpgrad::Solver::sgd}) {
    const std::string where = std::string("train_epoch ") + dtype_name<T>() +
                              (solver == mlpgrad::Solver::adam ? " adam" : " sgd");
    // native
    std::vector<T> p = p0, grad(n_params), s1(n_params, T(0)), s2(n_params, T(0));
    int64_t t = 2;
    mlpgrad::Optimizer<T> opt;
    opt.solver = solver;
    opt.state1 = s1.data();
    opt.state2 = s2.data();
    opt.t = &t;
    opt.lr = lr;
    double sumsq0 = 0;
    for (int64_t i = 0; i < n_reg; ++i) sumsq0 += double(p0[i]) * double(p0[i]);
    const mlpgrad::EpochResult r =
        mlpgrad::train_epoch<T>(sizes, Head::softmax, p.data(), grad.data(), data, order.data(), bs, alpha, sumsq0,
                                opt, 2);
    // the loop by hand
    std::vector<T> q = p0, g(n_params), u1(n_params, T(0)), u2(n_params, T(0)), Xb(bs * sizes[0]), wb(bs);
    std::vector<int64_t> lb(bs);
    mlpgrad::Network<T> net;
    net.sizes = sizes;
    net.W = {q.data(), q.data() + sizes[0] * sizes[1]};
    net.b = {q.data() + n_reg, q.data() + n_reg + sizes[1]};
    mlpgrad::Gradients<T> gr;
    gr.dW = {g.data(), g.data() + sizes[0] * sizes[1]};
    gr.db = {g.data() + n_reg, g.data() + n_reg + sizes[1]};
    double loss_sum = 0, sumsq = sumsq0;
    int64_t steps = 0, tt = 2;
    for (int64_t start = 0; start < n; start += bs) {
      const int64_t rows = std::min(bs, n - start);
      double wsum = 0;
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t j = order[start + i];
        std::copy_n(X.data() + j * sizes[0], sizes[0], Xb.data() + i * sizes[0]);
        lb[i] = labels[j];
        wb[i] = sw[j];
        wsum += double(sw[j]);
      }
      if (!(wsum > 0)) continue;
      mlpgrad::Batch<T> b;
      b.n = rows;
      b.X = Xb.data();
      b.labels = lb.data();
      b.sample_weight = wb.data();
      double loss = mlpgrad::loss_and_grad<T>(net, Head::softmax, b, Reduction::mean, gr, 1);
      loss += 0.5 * alpha * sumsq / wsum;
      loss_sum += loss * double(rows);
      ++tt;
      ++steps;
      if (solver == mlpgrad::Solver::adam) {
        const double rate = lr * std::sqrt(1 - std::pow(0.999, double(tt))) / (1 - std::pow(0.9, double(tt)));
        sumsq = mlpgrad::adam_step<T>(q.data(), g.data(), u1.data(), u2.data(), n_params, n_reg, alpha / wsum, rate,
                                      0.9, 0.999, 1e-8);
      } else {
        sumsq = mlpgrad::sgd_step<T>(q.data(), g.data(), u1.data(), n_params, n_reg, alpha / wsum, lr, 0.9, true);
      }
    }
    EXPECT(r.steps == 6 && steps == 6 && t == 8, where + ": expected 6 steps (7 batches, one of zero weight)");
    EXPECT(same_bits(r.loss_sum, loss_sum) && same_bits(r.sumsq, sumsq), where + ": loss or sumsq differs");
    EXPECT(same_bits(p, q) && same_bits(s1, u1) && same_bits(s2, u2), where + ": parameters or state differ");
    g_calls += 2 * 7;
    std::vector<int64_t> bad = order;
    bad[n - 1] = n;
    bool threw = false;
    try {
      mlpgrad::train_epoch<T>(sizes, Head::softmax, p.data(), grad.data(), data, bad.data(), bs, alpha, sumsq0, opt, 1);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    EXPECT(threw, where + ": an order index out of range did not throw std::invalid_argument");
  }
}

// ---------------------------------------------------------------------------------------------------
// Per-sample quantities (mlpgrad/per_sample.hpp) against their definitions: every sample's gradient g_i of
// its own loss, written out in pack order (mlpgrad/layout.hpp) as the explicit outer products
// h_{l-1,i} delta_{l,i}^T and the deltas, then each quantity from those rows with plain loops. Every op and
// output combination, both dtypes, every SIMD level, 1, 2 and 3 threads (the same bits); outputs pre-filled
// with NaN; the inputs unchanged; bad requests throw std::invalid_argument.

// G (n, P): row i = g_i in pack order, from unit deltas (each sample's own loss, unweighted); and l_i.
struct PerSampleRef {
  std::vector<double> G, loss;
};

PerSampleRef per_sample_ref(const Problem& P, const Activations& A, Head head, Targets targets) {
  const int64_t L = P.L(), n = P.n;
  const mlpgrad::Layout layout(P.sizes);
  const int64_t np = layout.n_params;
  HeadRef H = head_ref(P, A.h[L], head, targets);
  std::vector<std::vector<double>> delta(L);
  delta[L - 1] = std::move(H.delta);
  for (int64_t l = L - 1; l >= 1; --l) {  // delta_{l-1} = (delta_l W_l^T) * h_l (1 - h_l)
    const int64_t din = P.sizes[l], dout = P.sizes[l + 1];
    delta[l - 1].assign(n * din, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t q = 0; q < din; ++q) {
        double s = 0;
        for (int64_t j = 0; j < dout; ++j) s += delta[l][i * dout + j] * P.W[l][q * dout + j];
        const double h = A.h[l][i * din + q];
        delta[l - 1][i * din + q] = s * h * (1.0 - h);
      }
  }
  PerSampleRef R;
  R.loss = std::move(H.loss);
  R.G.assign(n * np, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t l = 0; l < L; ++l) {
      const int64_t din = P.sizes[l], dout = P.sizes[l + 1];
      double* g = &R.G[i * np];
      for (int64_t a = 0; a < din; ++a)
        for (int64_t j = 0; j < dout; ++j) g[layout.w[l] + a * dout + j] = A.h[l][i * din + a] * delta[l][i * dout + j];
      for (int64_t j = 0; j < dout; ++j) g[layout.b[l] + j] = delta[l][i * dout + j];
    }
  return R;
}

// ||g_{i,l}|| (n, L): W_l's and b_l's entries of row i.
std::vector<double> layer_norms_ref(const Problem& P, const std::vector<double>& G) {
  const mlpgrad::Layout layout(P.sizes);
  const int64_t L = P.L(), np = layout.n_params;
  std::vector<double> N(P.n * L);
  for (int64_t i = 0; i < P.n; ++i)
    for (int64_t l = 0; l < L; ++l) {
      double s = 0;
      for (int64_t p = layout.w[l]; p < layout.w[l] + P.sizes[l] * P.sizes[l + 1]; ++p)
        s += G[i * np + p] * G[i * np + p];
      for (int64_t p = layout.b[l]; p < layout.b[l] + P.sizes[l + 1]; ++p) s += G[i * np + p] * G[i * np + p];
      N[i * L + l] = std::sqrt(s);
    }
  return N;
}

// ||g_i|| (n,).
std::vector<double> norms_ref(const Problem& P, const std::vector<double>& G) {
  const int64_t np = mlpgrad::Layout(P.sizes).n_params;
  std::vector<double> N(P.n);
  for (int64_t i = 0; i < P.n; ++i) {
    double s = 0;
    for (int64_t p = 0; p < np; ++p) s += G[i * np + p] * G[i * np + p];
    N[i] = std::sqrt(s);
  }
  return N;
}

// The layer of every parameter (P,), in pack order.
std::vector<int64_t> param_layers(const Problem& P) {
  const mlpgrad::Layout layout(P.sizes);
  std::vector<int64_t> layer(layout.n_params);
  for (int64_t l = 0; l < P.L(); ++l) {
    std::fill_n(layer.begin() + layout.w[l], P.sizes[l] * P.sizes[l + 1], l);
    std::fill_n(layer.begin() + layout.b[l], P.sizes[l + 1], l);
  }
  return layer;
}

// sum_i c_i f_i g_i (P,), f_i = min(1, max_norm / ||g_i||) (one max_norm) or per layer min(1, max_norm[l] /
// ||g_{i,l}||); f = 1 where the norm is 0.
std::vector<double> clipped_ref(const Problem& P, const std::vector<double>& G, const std::vector<double>& c,
                                const std::vector<double>& max_norm) {
  const std::vector<int64_t> layer = param_layers(P);
  const int64_t np = int64_t(layer.size()), L = P.L();
  const bool per_layer = max_norm.size() > 1;
  const std::vector<double> norms = per_layer ? layer_norms_ref(P, G) : norms_ref(P, G);
  std::vector<double> out(np, 0.0);
  for (int64_t i = 0; i < P.n; ++i)
    for (int64_t p = 0; p < np; ++p) {
      const double norm = per_layer ? norms[i * L + layer[p]] : norms[i];
      const double limit = max_norm[per_layer ? layer[p] : 0];
      const double f = norm > limit ? limit / norm : 1.0;
      out[p] += c[i] * f * G[i * np + p];
    }
  return out;
}

// (n, m): g_i . V[:, v], V (P, m) row-major.
std::vector<double> dot_ref(const std::vector<double>& G, int64_t n, const std::vector<double>& V, int64_t m) {
  const int64_t np = int64_t(V.size()) / m;
  std::vector<double> D(n * m, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = 0; p < np; ++p)
      for (int64_t v = 0; v < m; ++v) D[i * m + v] += G[i * np + p] * V[p * m + v];
  return D;
}

// sum_i w_i g_i * g_i (P,), w_i = 1 when w is empty.
std::vector<double> sumsq_ref(const std::vector<double>& G, int64_t n, int64_t np, const std::vector<double>& w) {
  std::vector<double> out(np, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = 0; p < np; ++p) out[p] += (w.empty() ? 1.0 : w[i]) * G[i * np + p] * G[i * np + p];
  return out;
}

// K (n, nb): g_i . g'_j.
std::vector<double> gram_ref(const std::vector<double>& G, int64_t n, const std::vector<double>& Gb, int64_t nb,
                             int64_t np) {
  std::vector<double> K(n * nb, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < nb; ++j) {
      double s = 0;
      for (int64_t p = 0; p < np; ++p) s += G[i * np + p] * Gb[j * np + p];
      K[i * nb + j] = s;
    }
  return K;
}

// One request: the op, its outputs, the batch it runs on (head, targets, weights, reduction), and its reference.
struct PsCall {
  std::string name;
  mlpgrad::PerSampleOp op;
  Variant v;  // input_grad unused
  bool norms = false, layer_norms = false;
  std::vector<double> max_norm;
  int64_t m = 0;          // dot: the number of vectors
  std::vector<double> V;  // dot: (P, m) row-major
  // the reference: the loss sum_i c_i l_i, the norms asked for, and the flat gradient (clipped, sumsq) or
  // the rows (grads, dot)
  double loss = 0;
  std::vector<double> ref_norms, ref_layer_norms, ref_result;
};

template <typename T> struct PsOut {  // pre-filled with NaN
  double loss = 0;
  std::vector<T> norms, layer_norms, grad, rows;  // grad: flat (P,) in pack order
  bool operator==(const PsOut& o) const {
    return same_bits(loss, o.loss) && same_bits(norms, o.norms) && same_bits(layer_norms, o.layer_norms) &&
           same_bits(grad, o.grad) && same_bits(rows, o.rows);
  }
};

template <typename T>
PsOut<T> run_per_sample(const Data<T>& D, const Problem& P, const PsCall& c, const std::vector<T>& V, int threads) {
  using Op = mlpgrad::PerSampleOp;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const mlpgrad::Layout layout(P.sizes);
  PsOut<T> o;
  mlpgrad::PerSampleRequest<T> q;
  q.op = c.op;
  q.max_norm = c.max_norm;
  if (c.norms) {
    o.norms.assign(P.n, nan);
    q.norms = o.norms.data();
  }
  if (c.layer_norms) {
    o.layer_norms.assign(P.n * P.L(), nan);
    q.layer_norms = o.layer_norms.data();
  }
  if (c.op == Op::clipped || c.op == Op::sumsq) {
    o.grad.assign(layout.n_params, nan);
    q.grads = layout.gradients<T>(o.grad.data());
  }
  if (c.op == Op::grads) o.rows.assign(P.n * layout.n_params, nan);
  if (c.op == Op::dot) {
    o.rows.assign(P.n * c.m, nan);
    q.V = V.data();
    q.m = c.m;
  }
  if (c.op == Op::grads || c.op == Op::dot) q.rows = o.rows.data();
  o.loss = mlpgrad::per_sample<T>(D.net, c.v.head, D.batch(c.v), c.v.reduction, q, threads);
  return o;
}

template <typename T>
std::vector<T> run_gram(const Data<T>& D, Head head, const mlpgrad::Batch<T>& a, const mlpgrad::Batch<T>& b,
                        int threads) {
  std::vector<T> K(a.n * b.n, std::numeric_limits<T>::quiet_NaN());
  mlpgrad::grad_gram<T>(D.net, head, a, b, K.data(), threads);
  return K;
}

// A flat (P,) result against the reference, tensor by tensor (dW_l, db_l).
template <typename T>
void record_flat(const Problem& P, const std::vector<T>& got, const std::vector<double>& ref,
                 const std::string& where) {
  const mlpgrad::Layout layout(P.sizes);
  for (int64_t l = 0; l < P.L(); ++l) {
    const auto w = ref.begin() + layout.w[l], b = ref.begin() + layout.b[l];
    record<T>(rel_err(got.data() + layout.w[l], std::vector<double>(w, w + P.sizes[l] * P.sizes[l + 1])),
              where + " dW[" + std::to_string(l) + "]", g_worst_ps);
    record<T>(rel_err(got.data() + layout.b[l], std::vector<double>(b, b + P.sizes[l + 1])),
              where + " db[" + std::to_string(l) + "]", g_worst_ps);
  }
}

// 0.9 times the value that a fraction `below` of the values lie under: some samples clipped, some not, none
// at the threshold; 1 when that value is 0.
double clip_level(std::vector<double> values, double below) {
  if (values.empty()) return 1.0;
  const size_t at = std::min(values.size() - 1, size_t(below * double(values.size())));
  std::nth_element(values.begin(), values.begin() + at, values.end());
  return values[at] > 0 ? 0.9 * values[at] : 1.0;
}

// The heads and targets (the sigmoid and identity heads take dense targets only).
constexpr int kNumPsKinds = 4;
const Variant kPsKinds[kNumPsKinds] = {{Head::sigmoid, Targets::dense, false, Reduction::sum, false},
                                       {Head::softmax, Targets::labels, false, Reduction::sum, false},
                                       {Head::softmax, Targets::dense, false, Reduction::sum, false},
                                       {Head::identity, Targets::dense, false, Reduction::sum, false}};
int ps_kind(const Variant& v) {
  return v.head == Head::sigmoid ? 0 : v.head == Head::identity ? 3 : v.targets == Targets::labels ? 1 : 2;
}

// grad_gram's calls on a problem and their references: with a second batch (same network, other rows), and
// with the same batch object when its reference is cheap enough (else `same` empty).
struct GramCalls {
  Variant v;
  Problem second;
  std::vector<double> with_second, same;
};

// One problem in dtype T: every call, then grad_gram, at every SIMD level and 1, 2, 3 threads.
template <typename T>
void per_sample_case(const Problem& P, const std::vector<PsCall>& calls, const GramCalls& gram,
                     const std::string& name) {
  const Data<T> D(P), pristine(P), D2(gram.second), pristine2(gram.second);
  for (Isa isa : isas()) {
    mlpgrad::set_active_isa(isa);
    const std::string at = name + " " + dtype_name<T>() + " " + mlpgrad::isa_name(isa);
    for (const PsCall& c : calls) {
      const std::string where = at + " " + c.name + " (" + c.v.str() + ")";
      const std::vector<T> V = as<T>(c.V), V0 = V;
      PsOut<T> o1;
      try {
        o1 = run_per_sample<T>(D, P, c, V, 1);
      } catch (const std::exception& e) {
        fail(where + ": threw " + e.what());
        continue;
      }
      record<T>(rel_err_scalar(o1.loss, c.loss), where + " loss", g_worst_ps);
      if (c.norms) record<T>(rel_err(o1.norms.data(), c.ref_norms), where + " norms", g_worst_ps);
      if (c.layer_norms)
        record<T>(rel_err(o1.layer_norms.data(), c.ref_layer_norms), where + " layer norms", g_worst_ps);
      if (!o1.grad.empty()) record_flat<T>(P, o1.grad, c.ref_result, where);
      if (!o1.rows.empty()) record<T>(rel_err(o1.rows.data(), c.ref_result), where + " rows", g_worst_ps);
      for (int threads : {2, 3})
        EXPECT(run_per_sample<T>(D, P, c, V, threads) == o1,
               where + ": results differ between 1 and " + std::to_string(threads) + " threads");
      EXPECT(same_bits(V, V0), where + ": V was modified");
      g_calls += 3;
    }
    const Head head = gram.v.head;
    const mlpgrad::Batch<T> a = D.batch(gram.v), b = D2.batch(gram.v), a_copy = a;
    const std::string where = at + " gram (" + gram.v.str() + ")";
    const std::vector<T> K1 = run_gram<T>(D, head, a, b, 1);
    record<T>(rel_err(K1.data(), gram.with_second), where + " second batch N2=" + std::to_string(b.n), g_worst_ps);
    std::vector<T> S1;
    if (!gram.same.empty()) {
      S1 = run_gram<T>(D, head, a, a, 1);
      record<T>(rel_err(S1.data(), gram.same), where + " same batch", g_worst_ps);
      EXPECT(same_bits(run_gram<T>(D, head, a, a_copy, 1), S1),
             where + ": a copy of the batch gives other bits than the batch");
    }
    for (int threads : {2, 3}) {
      const std::string t = std::to_string(threads);
      EXPECT(same_bits(run_gram<T>(D, head, a, b, threads), K1),
             where + " second batch: differs between 1 and " + t + " threads");
      if (!gram.same.empty())
        EXPECT(same_bits(run_gram<T>(D, head, a, a, threads), S1),
               where + " same batch: differs between 1 and " + t + " threads");
    }
    g_calls += gram.same.empty() ? 3 : 7;
  }
  mlpgrad::set_active_isa(mlpgrad::best_isa());
  EXPECT(D == pristine && D2 == pristine2, name + " " + dtype_name<T>() + ": the inputs were modified");
}

struct PsCase {
  std::vector<int64_t> sizes;
  std::vector<int64_t> ns;
};

// Widths 1, 5, 13, 33, 40 at the input, hidden and output positions, depth 1-3; N = 0, 1, 7, 61, 300. The
// per-sample engine always runs the chunked schedule: N = 300 makes 2 chunks in 2 groups, and [5, 13, 2] at
// N = 9000 16 chunks in 8 groups (the group buffers' first write, then adds). Softmax with k = 1: every
// gradient 0 (clip factor 1). grad_gram's tiles are 96 x 512: N = 300 crosses rows, a second batch of 530 rows
// (for N <= 7) crosses columns. Dot products with 300 vectors run on blocks of 4096 / 300 = 13 columns of a
// layer (widths 33 and 40: a short last block).
std::vector<PsCase> ps_cases() {
  return {
      {{1, 1}, {0, 1, 7, 61, 300}},
      {{5, 1}, {7}},
      {{5, 1, 13, 5}, {0, 7, 300}},
      {{13, 40, 33}, {1, 61, 300}},
      {{40, 33, 5, 13}, {7, 300}},
      {{1, 40, 5}, {61}},
      {{33, 13, 40, 1}, {1, 300}},
      {{13, 5}, {61}},
      {{40, 1, 40}, {1, 61}},
      {{33, 5}, {0, 300}},
      {{1, 13, 1, 33}, {7, 61}},
      {{5, 13, 2}, {9000}},
  };
}

// The calls on one problem and their references; `seed` rotates which head and targets each call takes.
void per_sample_problem(const std::vector<int64_t>& sizes, int64_t n, uint64_t seed) {
  using Op = mlpgrad::PerSampleOp;
  const Problem P = make_problem(sizes, n, seed);
  const int64_t L = P.L(), np = mlpgrad::Layout(sizes).n_params;
  const Activations A = forward_ref(P);
  PerSampleRef refs[kNumPsKinds];
  for (int kind = 0; kind < kNumPsKinds; ++kind) refs[kind] = per_sample_ref(P, A, kPsKinds[kind].head, kPsKinds[kind].targets);
  double total_weight = 0;
  for (double w : P.sample_weight) total_weight += w;
  auto variant = [&](int64_t j, bool weighted, Reduction r) {
    Variant v = kPsKinds[(seed + j) % kNumPsKinds];
    v.weighted = weighted;
    // "mean" over nothing, or over weights summing to 0, is invalid (bad_per_sample)
    v.reduction = n == 0 || (weighted && total_weight == 0) ? Reduction::sum : r;
    return v;
  };
  // clip levels from the norms of the clipped calls' kind: about half the samples clipped (a tenth for "low")
  const std::vector<double>& G0 = refs[ps_kind(variant(0, false, Reduction::sum))].G;
  const std::vector<double> nn = norms_ref(P, G0), ln = layer_norms_ref(P, G0);
  std::vector<double> per_layer(L);
  for (int64_t l = 0; l < L; ++l) {
    std::vector<double> col(n);
    for (int64_t i = 0; i < n; ++i) col[i] = ln[i * L + l];
    per_layer[l] = clip_level(col, 0.5);
  }
  const double inf = std::numeric_limits<double>::infinity();
  const bool many = (sizes == std::vector<int64_t>{13, 40, 33} && n == 61) ||
                    (sizes == std::vector<int64_t>{40, 33, 5, 13} && n == 7);
  std::vector<PsCall> calls = {
      {"norms+layer_norms", Op::norms, variant(0, false, Reduction::sum), true, true, {}, 0},
      {"norms", Op::norms, variant(1, false, Reduction::sum), true, false, {}, 0},
      {"layer_norms", Op::norms, variant(2, true, Reduction::mean), false, true, {}, 0},
      {"clipped", Op::clipped, variant(0, true, Reduction::mean), true, false, {clip_level(nn, 0.5)}, 0},
      {"clipped inf", Op::clipped, variant(0, false, Reduction::sum), true, false, {inf}, 0},
      {"clipped low", Op::clipped, variant(0, true, Reduction::sum), false, false, {clip_level(nn, 0.1)}, 0},
      {"clipped per layer", Op::clipped, variant(0, true, Reduction::sum), false, true, per_layer, 0},
      {"clipped per layer", Op::clipped, variant(0, false, Reduction::mean), true, true, per_layer, 0},
      {"grads", Op::grads, variant(1, false, Reduction::sum), false, false, {}, 0},
      {"dot m=1", Op::dot, variant(2, false, Reduction::sum), false, false, {}, 1},
      {"dot m=3", Op::dot, variant(1, false, Reduction::sum), false, false, {}, 3},
      {"sumsq", Op::sumsq, variant(2, true, Reduction::sum), false, false, {}, 0},  // "mean": bad_per_sample
      {"sumsq", Op::sumsq, variant(1, false, Reduction::sum), false, false, {}, 0},
  };
  if (many) calls.push_back({"dot m=300", Op::dot, variant(0, false, Reduction::sum), false, false, {}, 300});
  Rng rng(seed * 31 + 7);
  for (PsCall& c : calls) {
    const PerSampleRef& R = refs[ps_kind(c.v)];
    const std::vector<double> cs = sample_scale_ref(P, c.v);
    for (int64_t i = 0; i < n; ++i) c.loss += cs[i] * R.loss[i];
    if (c.norms) c.ref_norms = norms_ref(P, R.G);
    if (c.layer_norms) c.ref_layer_norms = layer_norms_ref(P, R.G);
    switch (c.op) {
      case Op::clipped: c.ref_result = clipped_ref(P, R.G, cs, c.max_norm); break;
      case Op::grads: c.ref_result = R.G; break;
      case Op::dot:
        c.V.resize(np * c.m);
        for (double& x : c.V) x = f32(rng.normal());
        c.ref_result = dot_ref(R.G, n, c.V, c.m);
        break;
      case Op::sumsq:
        c.ref_result = sumsq_ref(R.G, n, np, c.v.weighted ? P.sample_weight : std::vector<double>{});
        break;
      default: break;
    }
  }
  GramCalls gram{variant(3, false, Reduction::sum), make_problem(sizes, n <= 7 ? 530 : 13, seed + 1000), {}, {}};
  gram.second.W = P.W;  // the same network, other rows
  gram.second.b = P.b;
  const PerSampleRef& GA = refs[ps_kind(gram.v)];
  const PerSampleRef GB = per_sample_ref(gram.second, forward_ref(gram.second), gram.v.head, gram.v.targets);
  gram.with_second = gram_ref(GA.G, n, GB.G, gram.second.n, np);
  if (n > 0 && double(n) * double(n) * double(np) < 5e7) gram.same = gram_ref(GA.G, n, GA.G, n, np);

  const std::string name = "per-sample " + shape_str(sizes) + " N=" + std::to_string(n);
  per_sample_case<float>(P, calls, gram, name);
  per_sample_case<double>(P, calls, gram, name);
}

// Bad requests throw std::invalid_argument: max_norm empty, of a wrong length, <= 0 or NaN; outputs missing;
// m < 1; V null; an unknown op; grad_gram's output null; a bad batch (either of grad_gram's). Valid edge
// requests do not: N = 0 without outputs, max_norm inf.
template <typename T>
void bad_per_sample() {
  using Op = mlpgrad::PerSampleOp;
  const Problem P = make_problem({3, 4, 2}, 5, 7);
  const Data<T> D(P);
  const mlpgrad::Layout layout(P.sizes);
  const Variant labels{Head::softmax, Targets::labels, true, Reduction::sum, false};
  std::vector<T> flat(layout.n_params), norms(P.n), rows(P.n * layout.n_params), V(layout.n_params * 2), K(P.n * P.n);
  auto request = [&](Op op) {
    mlpgrad::PerSampleRequest<T> q;
    q.op = op;
    q.norms = norms.data();
    q.max_norm = {1.0};
    q.grads = layout.gradients<T>(flat.data());
    q.rows = rows.data();
    q.V = V.data();
    q.m = 2;
    return q;
  };
  auto call = [&](const mlpgrad::PerSampleRequest<T>& q, const mlpgrad::Batch<T>& B, Reduction r) {
    mlpgrad::per_sample<T>(D.net, Head::softmax, B, r, q, 1);
  };
  const mlpgrad::Batch<T> B = D.batch(labels);
  auto bad = [&](const mlpgrad::PerSampleRequest<T>& q, const std::string& what) {
    expect_invalid<T>([&] { call(q, B, Reduction::sum); }, "per_sample: " + what);
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  // Valid requests; each returns the loss with the call's reduction and weights, whatever the op
  // (mlpgrad/per_sample.hpp: "returns the loss sum_i c_i l_i, c_i = w_i ("sum") or w_i / sum_j w_j ("mean")").
  for (Reduction r : {Reduction::sum, Reduction::mean}) {
    const double want = mlpgrad::loss<T>(D.net, Head::softmax, B, r, 1);
    for (Op op : {Op::norms, Op::clipped, Op::grads, Op::dot, Op::sumsq}) {
      const std::string what = std::string("per_sample (") + dtype_name<T>() + ", op " + std::to_string(int(op)) +
                               (r == Reduction::mean ? ", mean)" : ", sum)");
      try {
        const double got = mlpgrad::per_sample<T>(D.net, Head::softmax, B, r, request(op), 1);
        EXPECT(rel_err_scalar(got, want) <= tolerance<T>(),
               what + ": returned loss " + std::to_string(got) + ", loss() gives " + std::to_string(want));
      } catch (const std::exception& e) {
        fail(what + ": a valid request threw: " + e.what());
      }
    }
  }
  const std::vector<std::vector<double>> bad_max_norms = {{}, {1.0, 1.0, 1.0}, {0.0}, {-1.0}, {nan}, {-inf},
                                                          {1.0, 0.0}, {nan, 1.0}, {1.0, -2.0}};
  for (const std::vector<double>& mn : bad_max_norms) {
    mlpgrad::PerSampleRequest<T> q = request(Op::clipped);
    q.max_norm = mn;
    std::string s = "{";
    for (double x : mn) s += std::to_string(x) + " ";
    bad(q, "clipped, max_norm " + s + "}");
  }
  { auto q = request(Op::clipped); q.grads.dW.pop_back(); bad(q, "clipped, one dW short"); }
  { auto q = request(Op::clipped); q.grads.db[1] = nullptr; bad(q, "clipped, null db"); }
  { auto q = request(Op::clipped); q.grads = {}; bad(q, "clipped, no gradient"); }
  { auto q = request(Op::sumsq); q.grads = {}; bad(q, "sumsq, no gradient"); }
  { auto q = request(Op::sumsq); q.grads.dW[0] = nullptr; bad(q, "sumsq, null dW"); }
  { auto q = request(Op::norms); q.norms = nullptr; q.layer_norms = nullptr; bad(q, "norms, no output"); }
  { auto q = request(Op::grads); q.rows = nullptr; bad(q, "grads, null rows"); }
  { auto q = request(Op::dot); q.m = 0; bad(q, "dot, m = 0"); }
  { auto q = request(Op::dot); q.m = -1; bad(q, "dot, m = -1"); }
  { auto q = request(Op::dot); q.V = nullptr; bad(q, "dot, null V"); }
  { auto q = request(Op::dot); q.rows = nullptr; bad(q, "dot, null rows"); }
  { auto q = request(Op::norms); q.op = Op(9); bad(q, "unknown op"); }
  // the batch's rules, through per_sample and grad_gram
  std::vector<int64_t> bad_labels = D.labels;
  bad_labels[2] = 2;
  mlpgrad::Batch<T> Bbad = B;
  Bbad.labels = bad_labels.data();
  expect_invalid<T>([&] { call(request(Op::norms), Bbad, Reduction::sum); }, "per_sample: label == k");
  mlpgrad::Batch<T> B0 = B;
  B0.n = 0;
  expect_invalid<T>([&] { call(request(Op::clipped), B0, Reduction::mean); }, "per_sample: mean over N = 0");
  std::vector<T> zeros(P.n, T(0));
  mlpgrad::Batch<T> Bz = B;
  Bz.sample_weight = zeros.data();
  expect_invalid<T>([&] { call(request(Op::clipped), Bz, Reduction::mean); }, "per_sample: mean, zero total weight");
  expect_invalid<T>([&] { mlpgrad::grad_gram<T>(D.net, Head::softmax, B, B, nullptr, 1); }, "grad_gram: null K");
  expect_invalid<T>([&] { mlpgrad::grad_gram<T>(D.net, Head::softmax, B, Bbad, K.data(), 1); },
                    "grad_gram: bad second batch");
  expect_invalid<T>([&] { mlpgrad::grad_gram<T>(D.net, Head::softmax, Bbad, B, K.data(), 1); },
                    "grad_gram: bad first batch");
  expect_invalid<T>([&] { mlpgrad::grad_gram<T>(D.net, Head::sigmoid, B, B, K.data(), 1); },
                    "grad_gram: labels with the sigmoid head");
  // valid edges: N = 0 with no outputs at all, and an infinite max_norm, per layer too
  try {
    for (Op op : {Op::norms, Op::grads, Op::dot}) {
      auto q = request(op);
      q.norms = nullptr;
      q.rows = nullptr;
      call(q, B0, Reduction::sum);
    }
    mlpgrad::grad_gram<T>(D.net, Head::softmax, B0, B, nullptr, 1);
    auto q = request(Op::clipped);
    q.max_norm = {inf, inf};
    call(q, B, Reduction::sum);
  } catch (const std::exception& e) {
    fail(std::string("per_sample: a valid edge request threw (") + dtype_name<T>() + "): " + e.what());
  }
  EXPECT(D == Data<T>(P), "bad per-sample requests modified the inputs");
}

// Deltas whose squares overflow or underflow float where the norms do not: [1, 1, 1], x = 0, h_1 = 0.5,
// W_2 = w and b_2 = -w / 2 (logit 0): delta_1 = 0.5 * w * 0.25. For w = 1e21, delta_1 = 1.25e20 and
// delta_1^2 = 1.6e40 > FLT_MAX; for w = 1e-21, delta_1^2 = 1.6e-44 is subnormal (2 significant bits); for
// w = 1e-24 it rounds to 0 (a sum of squares of 0 must not be taken for a zero delta). The
// norms finite and within tolerance of the reference; clipped to max_norm (1, or 1e-23 for the small one),
// the sample's gradient has norm max_norm (not 0, as an infinite norm would make it).
template <typename T>
void per_sample_extreme_deltas(double w, double max_norm, const char* name) {
  using Op = mlpgrad::PerSampleOp;
  Problem P = make_problem({1, 1, 1}, 1, 3);
  P.X = {0.0};
  P.W = {{1.0}, {f32(w)}};
  P.b = {{0.0}, {-f32(w) / 2}};
  P.targets = {0.0};
  const Variant v{Head::sigmoid, Targets::dense, false, Reduction::sum, false};
  const PerSampleRef R = per_sample_ref(P, forward_ref(P), v.head, v.targets);
  const Data<T> D(P);
  for (Isa isa : isas()) {
    mlpgrad::set_active_isa(isa);
    const std::string where = std::string("per-sample ") + name + " deltas " + dtype_name<T>() + " " + mlpgrad::isa_name(isa);
    PsCall norms{"norms", Op::norms, v, true, true, {}, 0};
    PsCall clipped{"clipped", Op::clipped, v, true, false, {max_norm}, 0};
    const PsOut<T> o = run_per_sample<T>(D, P, norms, {}, 1), c = run_per_sample<T>(D, P, clipped, {}, 1);
    record<T>(rel_err(o.norms.data(), norms_ref(P, R.G)), where + " norms", g_worst_ps);
    const std::vector<double> ln = layer_norms_ref(P, R.G);
    record<T>(rel_err(o.layer_norms.data(), ln), where + " layer norms", g_worst_ps);
    for (size_t l = 0; l < ln.size(); ++l)  // each on its own: the tiny layer's error hides under the other's norm
      record<T>(rel_err_scalar(double(o.layer_norms[l]), ln[l]), where + " layer norm " + std::to_string(l), g_worst_ps);
    record<T>(rel_err(c.grad.data(), clipped_ref(P, R.G, {1.0}, {max_norm})), where + " clipped", g_worst_ps);
    g_calls += 2;
  }
  mlpgrad::set_active_isa(mlpgrad::best_isa());
}

// Every per-sample case: both dtypes, every SIMD level, 1-3 threads.
// ---------------------------------------------------------------------------------------------------
// Curvature products (mlpgrad/curvature.hpp). H v against central differences of the library's own
// gradient in double; G against H where they are equal (no hidden layer); diag(G) against G's products with
// the unit vectors; float against double; the same bits for 1, 2 and 3 threads; every SIMD level; bad
// requests. Under the sanitizers this is the memory check of the R-pass's buffers and packed directions.

template <typename T>
std::vector<T> curvature_run(const Data<T>& D, const Variant& v, mlpgrad::CurvatureOp op, const std::vector<T>& V,
                             int64_t m, int threads) {
  const mlpgrad::Layout layout(D.net.sizes);
  const bool diag = op == mlpgrad::CurvatureOp::ggn_diag;
  std::vector<T> out(layout.n_params * (diag ? 1 : m), std::numeric_limits<T>::quiet_NaN());
  mlpgrad::CurvatureRequest<T> q;
  q.op = op;
  q.V = diag ? nullptr : V.data();
  q.m = diag ? 0 : m;
  q.out = out.data();
  mlpgrad::curvature<T>(D.net, v.head, D.batch(v), v.reduction, q, threads);
  ++g_calls;
  return out;
}

// The flat gradient (P,) at theta + e v, by the library (double).
std::vector<double> gradient_at(const Problem& P, const Data<double>& D, const Variant& v, const std::vector<double>& dir,
                                double e) {
  const mlpgrad::Layout layout(P.sizes);
  std::vector<double> theta(layout.n_params), g(layout.n_params);
  for (int64_t l = 0; l < P.L(); ++l) {
    std::copy(P.W[l].begin(), P.W[l].end(), theta.begin() + layout.w[l]);
    std::copy(P.b[l].begin(), P.b[l].end(), theta.begin() + layout.b[l]);
  }
  for (int64_t i = 0; i < layout.n_params; ++i) theta[i] += e * dir[i];
  mlpgrad::loss_and_grad<double>(layout.network<double>(theta.data()), v.head, D.batch(v), v.reduction,
                                 layout.gradients<double>(g.data()), 1);
  return g;
}

double max_rel(const std::vector<double>& got, const std::vector<double>& want) {
  double d = 0, s = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    d = std::max(d, std::fabs(got[i] - want[i]));
    s = std::max(s, std::fabs(want[i]));
  }
  return s > 0 ? d / s : d;
}

template <typename T> std::vector<double> column(const std::vector<T>& a, int64_t m, int64_t j) {
  std::vector<double> c(a.size() / m);
  for (size_t i = 0; i < c.size(); ++i) c[i] = double(a[i * m + j]);
  return c;
}

void curvature_problem(const std::vector<int64_t>& sizes, int64_t n, uint64_t seed, const Variant& v) {
  using Op = mlpgrad::CurvatureOp;
  const Problem P = make_problem(sizes, n, seed);
  const mlpgrad::Layout layout(sizes);
  const int64_t np = layout.n_params, m = 2;
  const std::string name = "curvature " + shape_str(sizes) + " N=" + std::to_string(n) + " " + v.str();
  Rng rng{seed * 7 + 1};
  std::vector<double> V(np * m);
  for (double& x : V) x = f32(rng.normal());
  const Data<double> Dd(P);
  const Data<float> Df(P);
  const std::vector<float> Vf = as<float>(V);
  std::vector<double> H = curvature_run<double>(Dd, v, Op::hvp, V, m, 1);
  const std::vector<double> G = curvature_run<double>(Dd, v, Op::ggn_vp, V, m, 1);
  const std::vector<double> diag = curvature_run<double>(Dd, v, Op::ggn_diag, {}, 0, 1);
  // H v = (g(theta + e v) - g(theta - e v)) / 2e + O(e^2)
  const double e = 1e-4;
  for (int64_t j = 0; j < m; ++j) {
    const std::vector<double> dir = column(V, m, j);
    const std::vector<double> gp = gradient_at(P, Dd, v, dir, e), gm = gradient_at(P, Dd, v, dir, -e);
    std::vector<double> fd(np);
    for (int64_t i = 0; i < np; ++i) fd[i] = (gp[i] - gm[i]) / (2 * e);
    const double err = max_rel(column(H, m, j), fd);
    EXPECT(err <= 1e-6, name + ": H v against differences of the gradient, rel err " + std::to_string(err));
  }
  if (P.L() == 1) EXPECT(max_rel(column(H, m, 0), column(G, m, 0)) <= 1e-12, name + ": H != G without hidden layers");
  if (np <= 200) {  // diag(G) = the diagonal of G's columns
    std::vector<double> unit(np * np, 0.0);
    for (int64_t i = 0; i < np; ++i) unit[i * np + i] = 1.0;
    const std::vector<double> Gcols = curvature_run<double>(Dd, v, Op::ggn_vp, unit, np, 1);
    std::vector<double> gd(np);
    for (int64_t i = 0; i < np; ++i) gd[i] = Gcols[i * np + i];
    EXPECT(max_rel(diag, gd) <= 1e-12, name + ": ggn_diag != diagonal of ggn_vp(I)");
  }
  for (Op op : {Op::hvp, Op::ggn_vp, Op::ggn_diag}) {
    const std::vector<double>& want = op == Op::hvp ? H : op == Op::ggn_vp ? G : diag;
    const char* what = op == Op::hvp ? " hvp" : op == Op::ggn_vp ? " ggn_vp" : " ggn_diag";
    for (Isa isa : isas()) {
      mlpgrad::set_active_isa(isa);
      const std::vector<float> f1 = curvature_run<float>(Df, v, op, Vf, m, 1);
      const std::vector<double> d1 = curvature_run<double>(Dd, v, op, V, m, 1);
      record<float>(max_rel(std::vector<double>(f1.begin(), f1.end()), want), name + what + " float " +
                    mlpgrad::isa_name(isa), g_worst_ps);
      record<double>(max_rel(d1, want), name + what + " double " + mlpgrad::isa_name(isa), g_worst_ps);
      for (int threads : {2, 3}) {
        EXPECT(same_bits(curvature_run<float>(Df, v, op, Vf, m, threads), f1), name + what + " float: threads differ");
        EXPECT(same_bits(curvature_run<double>(Dd, v, op, V, m, threads), d1), name + what + " double: threads differ");
      }
    }
    mlpgrad::set_active_isa(mlpgrad::best_isa());
  }
}

template <typename T> void bad_curvature() {
  using Op = mlpgrad::CurvatureOp;
  const Problem P = make_problem({3, 4, 2}, 5, 11);
  const Data<T> D(P);
  const Variant v{Head::softmax, Targets::labels, false, Reduction::sum, false};
  const mlpgrad::Layout layout(P.sizes);
  std::vector<T> V(layout.n_params, T(1)), out(layout.n_params);
  auto run = [&](Op op, const T* Vp, int64_t m, T* o) {
    mlpgrad::CurvatureRequest<T> q;
    q.op = op;
    q.V = Vp;
    q.m = m;
    q.out = o;
    mlpgrad::curvature<T>(D.net, v.head, D.batch(v), v.reduction, q, 1);
  };
  expect_invalid<T>([&] { run(Op::hvp, V.data(), 0, out.data()); }, "curvature: m = 0");
  expect_invalid<T>([&] { run(Op::ggn_vp, nullptr, 1, out.data()); }, "curvature: V null");
  expect_invalid<T>([&] { run(Op::ggn_diag, nullptr, 0, nullptr); }, "curvature: out null");
  expect_invalid<T>([&] { run(Op(7), V.data(), 1, out.data()); }, "curvature: unknown op");
}

void curvature_all() {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const std::vector<Variant> every = all_variants();
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> shapes = {
      {{3, 1}, {1, 40}}, {{5, 7, 3}, {5, 130}}, {{4, 13, 1}, {97}}, {{9, 17, 33, 5}, {1, 400}},
      {{2, 3, 5, 7, 2}, {60}}, {{40, 70, 10}, {700}}};
  uint64_t seed = 9000;
  int64_t count = 0;
  for (const auto& [sizes, ns] : shapes)
    for (int64_t n : ns) {
      Variant v = every[(seed * 5) % every.size()];
      if (n == 0) v.reduction = Reduction::sum;
      curvature_problem(sizes, n, seed++, v);
      ++count;
    }
  // the identity head (Hhead = I) for certain, with and without a hidden layer (then H = G)
  for (const auto& sizes : {std::vector<int64_t>{3, 2}, std::vector<int64_t>{5, 7, 3}}) {
    curvature_problem(sizes, 50, seed++, Variant{Head::identity, Targets::dense, true, Reduction::mean, false});
    ++count;
  }
  bad_curvature<float>();
  bad_curvature<double>();
  std::printf("curvature: %lld problems, %.1f s\n", (long long)count,
              std::chrono::duration<double>(clock::now() - t0).count());
}

void per_sample_all() {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  int64_t n_problems = 0;
  uint64_t seed = 5000;
  for (const PsCase& c : ps_cases())
    for (int64_t n : c.ns) {
      const auto tc = clock::now();
      per_sample_problem(c.sizes, n, seed++);
      ++n_problems;
      if (g_verbose)
        std::printf("  per-sample %-22s N=%-5lld %6.2f s\n", shape_str(c.sizes).c_str(), (long long)n,
                    std::chrono::duration<double>(clock::now() - tc).count());
    }
  std::printf("per-sample: %lld problems, %.1f s; largest relative error, float %.3g at %s; double %.3g at %s\n",
              (long long)n_problems, std::chrono::duration<double>(clock::now() - t0).count(), g_worst_ps[0].err,
              g_worst_ps[0].where.c_str(), g_worst_ps[1].err, g_worst_ps[1].where.c_str());
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Sparse X (CSR): every entry point against the same X dense, the sparse results' bits for 1, 2 and 3
// threads, and a malformed structure refused.

template <typename T> struct Csr {
  std::vector<int64_t> indptr{0}, indices;
  std::vector<T> values;
  explicit Csr(const std::vector<T>& X, int64_t d0) {
    for (int64_t i = 0; i < int64_t(X.size()) / d0; ++i) {
      for (int64_t j = 0; j < d0; ++j)
        if (X[i * d0 + j] != T(0)) {
          indices.push_back(j);
          values.push_back(X[i * d0 + j]);
        }
      indptr.push_back(int64_t(indices.size()));
    }
  }
  mlpgrad::SparseRows<T> rows() const { return {indptr.data(), indices.data(), values.data()}; }
};

template <typename T> double max_rel_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(double(a[i])));
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

template <typename T> std::vector<T> flat_grad(const Data<T>& D, const mlpgrad::Batch<T>& B, const Variant& v,
                                               int threads, double& loss, std::vector<T>* dX) {
  const mlpgrad::Layout layout(D.net.sizes);
  std::vector<T> g(layout.n_params, std::numeric_limits<T>::quiet_NaN());
  mlpgrad::Gradients<T> grads = layout.gradients<T>(g.data());
  if (dX) {
    dX->assign(B.n * D.net.sizes[0], std::numeric_limits<T>::quiet_NaN());
    grads.dX = dX->data();
  }
  loss = mlpgrad::loss_and_grad<T>(D.net, v.head, B, v.reduction, grads, threads);
  return g;
}

template <typename T> void sparse_case(const std::vector<int64_t>& sizes, int64_t n, double density, uint64_t seed) {
  Problem P = make_problem(sizes, n, seed);
  Rng rng(seed + 99);
  for (double& x : P.X)
    if (rng.uniform() >= density) x = 0.0;
  Data<T> D(P);
  const Csr<T> csr(D.X, sizes[0]);
  const std::string name = "sparse " + shape_str(sizes) + " N=" + std::to_string(n) + " " + dtype_name<T>();
  const mlpgrad::Layout layout(sizes);
  Rng vr(seed + 7);
  std::vector<T> theta(layout.n_params), V(layout.n_params * 2);
  for (int64_t l = 0; l < P.L(); ++l) {
    std::copy(D.W[l].begin(), D.W[l].end(), theta.begin() + layout.w[l]);
    std::copy(D.b[l].begin(), D.b[l].end(), theta.begin() + layout.b[l]);
  }
  for (T& x : V) x = T(vr.normal());
  const mlpgrad::Network<T> net = layout.network<T>(theta.data());
  for (const Variant& v : {Variant{Head::softmax, Targets::labels, true, Reduction::sum, true},
                           Variant{Head::sigmoid, Targets::dense, false, Reduction::mean, true},
                           Variant{Head::identity, Targets::dense, true, Reduction::sum, false}}) {
    const mlpgrad::Batch<T> dense = D.batch(v);
    mlpgrad::Batch<T> sparse = dense;
    sparse.X = nullptr;
    sparse.Xs = csr.rows();
    const std::string at = name + " " + v.str();
    const double tol = tolerance<T>();
    // loss_and_grad (and dX), loss, forward; bits for 1, 2, 3 threads
    double ld, ls, ls1;
    std::vector<T> dXd, dXs, dXs1;
    const std::vector<T> gd = flat_grad<T>(D, dense, v, 2, ld, &dXd), gs = flat_grad<T>(D, sparse, v, 2, ls, &dXs);
    EXPECT(max_rel_diff(gd, gs) < tol && rel_err_scalar(ls, ld) < tol && max_rel_diff(dXd, dXs) < tol,
           at + ": loss_and_grad sparse = dense");
    for (int threads : {1, 3}) {
      const std::vector<T> g1 = flat_grad<T>(D, sparse, v, threads, ls1, &dXs1);
      EXPECT(same_bits(g1, gs) && same_bits(ls1, ls) && same_bits(dXs1, dXs),
             at + ": sparse bits for " + std::to_string(threads) + " threads");
    }
    EXPECT(rel_err_scalar(mlpgrad::loss<T>(D.net, v.head, sparse, v.reduction, 2), ld) < tol, at + ": loss");
    std::vector<T> pd(n * P.k()), ps(n * P.k());
    mlpgrad::forward<T>(D.net, v.head, dense, pd.data(), 2);
    mlpgrad::forward<T>(D.net, v.head, sparse, ps.data(), 2);
    EXPECT(max_rel_diff(pd, ps) < tol, at + ": forward");
    // per-sample norms and a clipped gradient; a curvature product; the Gram matrix
    for (mlpgrad::PerSampleOp op : {mlpgrad::PerSampleOp::norms, mlpgrad::PerSampleOp::clipped}) {
      std::vector<T> nd(n), ns(n), cd(layout.n_params), cs(layout.n_params);
      mlpgrad::PerSampleRequest<T> qd, qs;
      qd.op = qs.op = op;
      qd.norms = nd.data();
      qs.norms = ns.data();
      qd.max_norm = qs.max_norm = {0.5};
      qd.grads = layout.gradients<T>(cd.data());
      qs.grads = layout.gradients<T>(cs.data());
      mlpgrad::per_sample<T>(net, v.head, dense, v.reduction, qd, 2);
      mlpgrad::per_sample<T>(net, v.head, sparse, v.reduction, qs, 2);
      EXPECT(max_rel_diff(nd, ns) < tol && (op != mlpgrad::PerSampleOp::clipped || max_rel_diff(cd, cs) < tol),
             at + ": per_sample");
    }
    std::vector<T> hd(layout.n_params * 2), hs(layout.n_params * 2);
    mlpgrad::CurvatureRequest<T> cq;
    cq.V = V.data();
    cq.m = 2;
    cq.out = hd.data();
    mlpgrad::curvature<T>(net, v.head, dense, v.reduction, cq, 2);
    cq.out = hs.data();
    mlpgrad::curvature<T>(net, v.head, sparse, v.reduction, cq, 2);
    EXPECT(max_rel_diff(hd, hs) < tol, at + ": hvp");
    std::vector<T> Kd(n * n), Ks(n * n);
    mlpgrad::grad_gram<T>(net, v.head, dense, dense, Kd.data(), 2);
    mlpgrad::grad_gram<T>(net, v.head, sparse, dense, Ks.data(), 2);
    EXPECT(max_rel_diff(Kd, Ks) < tol, at + ": grad_gram");
  }
  // train_epoch: two adam epochs over shuffled rows
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = (i * 7 + 3) % n;
  const bool coprime = n % 7 != 0;
  std::vector<T> pd = theta, ps = theta;
  for (std::vector<T>* p : {&pd, &ps}) {
    std::vector<T> grad(layout.n_params), s1(layout.n_params, T(0)), s2(layout.n_params, T(0));
    int64_t t = 0;
    mlpgrad::Optimizer<T> opt;
    opt.state1 = s1.data();
    opt.state2 = s2.data();
    opt.t = &t;
    mlpgrad::Batch<T> data = D.batch(Variant{Head::softmax, Targets::labels, false, Reduction::sum, false});
    if (p == &ps) {
      data.X = nullptr;
      data.Xs = csr.rows();
    }
    for (int epoch = 0; epoch < 2; ++epoch)
      mlpgrad::train_epoch<T>(sizes, Head::softmax, p->data(), grad.data(), data, coprime ? order.data() : nullptr,
                              16, 1e-3, 0.0, opt, 2);
  }
  EXPECT(max_rel_diff(pd, ps) < tolerance<T>(), name + ": train_epoch sparse = dense");
}

template <typename T> void sparse_inputs() {
  uint64_t seed = 500;
  for (Isa isa : isas()) {
    mlpgrad::set_active_isa(isa);
    sparse_case<T>({30, 17, 3}, 97, 0.1, seed++);
  }
  mlpgrad::set_active_isa(mlpgrad::best_isa());
  for (const auto& sizes : {std::vector<int64_t>{40, 7, 3}, std::vector<int64_t>{300, 33, 5},
                            std::vector<int64_t>{64, 20, 9, 4}, std::vector<int64_t>{50, 2}})
    for (int64_t n : {1, 95, 200})
      for (double density : {0.0, 0.05, 0.6}) sparse_case<T>(sizes, n, density, seed++);
  // a malformed structure is refused
  Problem P = make_problem({4, 3, 2}, 3, 9);
  Data<T> D(P);
  const Variant v{Head::softmax, Targets::labels, false, Reduction::sum, false};
  std::vector<int64_t> indptr{0, 2, 3, 4}, indices{1, 0, 2, 3};  // row 0 not increasing
  std::vector<T> values{1, 2, 3, 4};
  mlpgrad::Batch<T> B = D.batch(v);
  B.X = nullptr;
  B.Xs = {indptr.data(), indices.data(), values.data()};
  expect_invalid<T>([&] { mlpgrad::loss<T>(D.net, v.head, B, v.reduction, 1); }, "sparse: unsorted row");
  indices = {0, 1, 2, 4};  // column 4 of 4
  expect_invalid<T>([&] { mlpgrad::loss<T>(D.net, v.head, B, v.reduction, 1); }, "sparse: index out of range");
  indices = {0, 1, 2, 3};
  indptr = {0, 2, 1, 4};  // decreasing
  expect_invalid<T>([&] { mlpgrad::loss<T>(D.net, v.head, B, v.reduction, 1); }, "sparse: indptr decreases");
  indptr = {1, 2, 3, 4};
  expect_invalid<T>([&] { mlpgrad::loss<T>(D.net, v.head, B, v.reduction, 1); }, "sparse: indptr[0] != 0");
  std::vector<T> probs(6);
  expect_invalid<T>([&] { mlpgrad::forward<T>(D.net, v.head, B, probs.data(), 1); }, "sparse forward: indptr[0] != 0");
}

int main() {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  g_verbose = std::getenv("MLPGRAD_TEST_VERBOSE") && std::string(std::getenv("MLPGRAD_TEST_VERBOSE")) != "0";
  std::printf("mlpgrad core test: %s, OpenMP %s (max threads %d), SIMD levels:", mlpgrad::compiler(),
              mlpgrad::openmp_enabled() ? "on" : "off", mlpgrad::default_threads());
  for (Isa isa : isas()) std::printf(" %s", mlpgrad::isa_name(isa));
  std::printf("\n");

  // set_active_isa clamps to the best level.
  mlpgrad::set_active_isa(Isa::avx512);
  EXPECT(mlpgrad::active_isa() == mlpgrad::best_isa(), "set_active_isa(avx512) is clamped to best_isa()");
  for (mlpgrad::Schedule s : kSchedules) {
    mlpgrad::set_schedule(s);
    EXPECT(mlpgrad::schedule() == s, std::string("set_schedule(") + schedule_name(s) + ")");
  }
  mlpgrad::set_schedule(mlpgrad::Schedule::automatic);

  bad_inputs<float>();
  bad_inputs<double>();
  scan_and_layout<float>();
  scan_and_layout<double>();
  extremes<float>();
  extremes<double>();
  interrupts<float>();
  interrupts<double>();
  training<float>();
  training<double>();
  gemm_products<float>();
  gemm_products<double>();
  fma_peaks<float>();
  fma_peaks<double>();
  bad_per_sample<float>();
  bad_per_sample<double>();
  for (const auto& [w, max_norm, name] : {std::tuple{1e21, 1.0, "large"}, std::tuple{1e-21, 1e-23, "small"},
                                          std::tuple{1e-24, 1e-26, "tiny"}}) {
    per_sample_extreme_deltas<float>(w, max_norm, name);
    per_sample_extreme_deltas<double>(w, max_norm, name);
  }
  per_sample_all();
  curvature_all();
  {
    const auto ts = clock::now();
    sparse_inputs<float>();
    sparse_inputs<double>();
    std::printf("sparse X: %.1f s\n", std::chrono::duration<double>(clock::now() - ts).count());
  }

  // Variants per (case, N): all 24 when cheap, fewer (at least 3, in rotation) when not. Each runs
  // with the engine's own choice of schedule; a quarter of them (at least one) again with the chunked
  // and with the layered schedule forced (mlpgrad::set_schedule; forcing either also turns the narrow
  // engine off), so every schedule meets every shape.
  const std::vector<Variant> every = all_variants();
  const double budget = 5e7;  // flops of one loss_and_grad, times variants, per (case, N)
  int64_t n_problems = 0, n_variants = 0;
  uint64_t seed = 1;
  for (const Case& c : cases()) {
    for (int64_t n : c.ns) {
      const auto tc = clock::now();
      const Problem P = make_problem(c.sizes, n, seed);
      const int64_t count = std::clamp<int64_t>(int64_t(budget / cost(c.sizes, n)), 3, int64_t(every.size()));
      std::vector<Variant> variants;
      for (int64_t j = 0; j < count; ++j) {
        Variant v = every[(seed * 5 + j * 7) % every.size()];  // 7 is coprime to 32: no repeats
        if (n == 0) v.reduction = Reduction::sum;  // "mean" over nothing is invalid (tested above)
        variants.push_back(v);
      }
      ++seed;
      const Activations A = forward_ref(P);
      std::vector<Result> refs;
      std::vector<std::vector<double>> prob_refs(3);
      for (const Variant& v : variants) {
        refs.push_back(grad_ref(P, A, v));
        if (prob_refs[int(v.head)].empty()) prob_refs[int(v.head)] = probs_ref(A.h.back(), n, P.k(), v.head);
      }
      const std::string name = shape_str(c.sizes) + " N=" + std::to_string(n);
      const int64_t forced = std::max<int64_t>(1, count / 4);
      for (mlpgrad::Schedule schedule : kSchedules) {
        const bool is_default = schedule == mlpgrad::Schedule::automatic;
        const int64_t first = schedule == mlpgrad::Schedule::layered ? count - forced : 0;
        const int64_t last = is_default ? count : first + forced;
        const std::vector<Variant> vs(variants.begin() + first, variants.begin() + last);
        const std::vector<Result> rs(refs.begin() + first, refs.begin() + last);
        mlpgrad::set_schedule(schedule);
        const std::string at = name + " " + schedule_name(schedule);
        run_case<float>(P, vs, rs, prob_refs, at);
        run_case<double>(P, vs, rs, prob_refs, at);
        n_variants += int64_t(vs.size());
      }
      mlpgrad::set_schedule(mlpgrad::Schedule::automatic);
      ++n_problems;
      if (g_verbose)
        std::printf("  %-28s %2lld variants  %6.2f s\n", name.c_str(), (long long)variants.size(),
                    std::chrono::duration<double>(clock::now() - tc).count());
    }
  }

  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  std::printf("%lld problems, %lld (problem, variant, schedule) runs, %lld library calls, %.1f s\n", (long long)n_problems,
              (long long)n_variants, (long long)g_calls, secs);
  std::printf("largest relative error, float:  %.3g (tolerance %.0e) at %s\n", g_worst[0].err, tolerance<float>(),
              g_worst[0].where.c_str());
  std::printf("largest relative error, double: %.3g (tolerance %.0e) at %s\n", g_worst[1].err, tolerance<double>(),
              g_worst[1].where.c_str());
  if (g_failures) {
    std::printf("FAILED: %d checks\n", g_failures);
    return 1;
  }
  std::printf("all passed\n");
  return 0;
}
