// mlpgrad._core: the thin layer between Python and the core, imported by mlpgrad/_native.py only. Each entry
// point views typed arrays, releases the GIL for every pass over the data (value scans included), calls
// the core and returns. The friendly checks and their messages are Python's (mlpgrad/_checks.py); the guards
// here and in the core only keep a mistaken call from reading or writing out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mlpgrad/layout.hpp"
#include "mlpgrad/mlp.hpp"
#include "mlpgrad/curvature.hpp"
#include "mlpgrad/peak.hpp"
#include "mlpgrad/per_sample.hpp"
#include "mlpgrad/train.hpp"

namespace py = pybind11;
using mlpgrad::Head;
using mlpgrad::Reduction;

namespace {

// Ctrl-C: the core calls this from the calling thread between chunks of work (GIL released). In the
// main thread it takes the GIL and runs Python's signal handlers; a KeyboardInterrupt (or whatever a
// handler raises) stops the call, and the error is re-raised when the core returns.
unsigned long g_main_thread = 0;

bool poll_signals(void*) {
  if (PyThread_get_thread_ident() != g_main_thread) return false;  // only the main thread gets signals
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

const mlpgrad::Interrupt kInterrupt{&poll_signals, nullptr};

// Runs a core call with the GIL released; an interrupt comes back as the Python error it raised.
template <typename F>
auto without_gil(F&& f) {
  try {
    py::gil_scoped_release release;
    return f(&kInterrupt);
  } catch (const mlpgrad::Interrupted&) {
    if (PyErr_Occurred()) throw py::error_already_set();
    throw;
  }
}

template <typename T> using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// Whether an array's dtype is T's, by value (numpy's PyArray_EquivTypes), never by identity: a dtype
// that went through pickle (multiprocessing, Dask workers) equals np.dtype(np.float64) but is another
// object.
template <typename T> bool has_dtype(const py::array& a) { return py::array_t<T>::check_(a); }

template <typename T>
CArray<T> as_c_array(py::handle obj, const char* name, py::ssize_t ndim) {
  // The converting constructor keeps NumPy's own error (a MemoryError for a copy too large, say).
  CArray<T> arr(py::reinterpret_borrow<py::object>(obj));
  if (arr.ndim() != ndim) throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + "-D");
  return arr;
}

// A C-ordered copy that nobody else holds: as_c_array's result if it converted, else a copy.
template <typename T>
CArray<T> owned_c_array(py::handle obj, const char* name, py::ssize_t ndim) {
  CArray<T> arr = as_c_array<T>(obj, name, ndim);
  if (arr.ptr() != obj.ptr()) return arr;
  CArray<T> copy(std::vector<py::ssize_t>(arr.shape(), arr.shape() + ndim));
  if (arr.size()) std::memcpy(copy.mutable_data(), arr.data(), sizeof(T) * size_t(arr.size()));
  return copy;
}

void expect(bool ok, const std::string& what) {
  if (!ok) throw py::value_error(what);
}

// A writeable C-contiguous array of dtype T and `size` elements (out= buffers, optimizer state).
template <typename T>
T* writeable_array(py::handle obj, const char* name, py::ssize_t size) {
  if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + ": expected a NumPy array");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!has_dtype<T>(arr) || !(arr.flags() & py::array::c_style) || !arr.writeable() || arr.size() != size)
    throw py::type_error(std::string(name) + ": expected a writeable C-contiguous array of the parameters' dtype " +
                         "with " + std::to_string(size) + " elements");
  return static_cast<T*>(arr.mutable_data());
}

// ---------------------------------------------------------------------------------------------- data
// A sparse X, given as the tuple (values, indices, indptr, n_cols) of a canonical CSR matrix (mlpgrad/_native.py
// builds it): the arrays in C order (values of dtype T, indices and indptr int64), their lengths checked against
// each other and the structure against SparseRows' rules (GIL released), else ValueError. own: private copies
// of indices and indptr, so that no later change to the caller's arrays can point the engine out of bounds.
template <typename T> struct SparseArrays {
  CArray<T> values;
  CArray<int64_t> indices, indptr;
  int64_t n = 0, d0 = 0;

  SparseArrays(py::handle obj, bool own) {
    const auto t = py::reinterpret_borrow<py::tuple>(obj);
    expect(t.size() == 4, "X: expected (values, indices, indptr, n_cols) for a sparse X");
    values = as_c_array<T>(t[0], "X values", 1);
    indices = own ? owned_c_array<int64_t>(t[1], "X indices", 1) : as_c_array<int64_t>(t[1], "X indices", 1);
    indptr = own ? owned_c_array<int64_t>(t[2], "X indptr", 1) : as_c_array<int64_t>(t[2], "X indptr", 1);
    d0 = t[3].cast<int64_t>();
    expect(indptr.shape(0) >= 1 && d0 >= 0, "X: indptr must have N + 1 >= 1 values and n_cols be >= 0");
    n = indptr.shape(0) - 1;
    expect(indices.shape(0) == values.shape(0) && indptr.data()[n] == values.shape(0),
           "X: indices and values must have indptr[N] elements each");
    const mlpgrad::SparseRows<T> r = rows();
    bool ok;
    {
      py::gil_scoped_release release;
      ok = mlpgrad::sparse_rows_valid<T>(r, n, d0);
    }
    expect(ok, "X: indptr must start at 0 and not decrease, indices lie in [0, n_cols) and increase within a row");
  }
  mlpgrad::SparseRows<T> rows() const { return {indptr.data(), indices.data(), values.data()}; }
  py::tuple tuple() const { return py::make_tuple(values, indices, indptr, d0); }
};

inline bool is_sparse_X(py::handle X) { return py::isinstance<py::tuple>(X); }

// A batch converted once (X in C order and the dtype, by reference when it already is) and scanned once, with
// the GIL released. The engine trusts a scanned batch: a Data whose scan found a fault is never run. A Data
// kept for many calls (own = true) holds private copies of the labels, targets and sample weights, so that
// nothing can change them after the scan; a one-call Data references them like X.
class Data {
 public:
  Data(py::handle X, py::handle labels, py::handle targets, py::handle weight, Head head, int64_t k, bool float32,
       bool own)
      : float32_(float32), own_(own), head_(head), k_(k) {
    if (float32_) convert<float>(X, labels, targets, weight);
    else convert<double>(X, labels, targets, weight);
  }
  bool float32() const { return float32_; }
  Head head() const { return head_; }
  int64_t n() const { return n_; }
  int64_t d0() const { return d0_; }
  int64_t k() const { return k_; }
  const mlpgrad::Scan& scan() const { return scan_; }
  py::object X() const { return X_; }
  // What pickle needs to make it again (Dask moves bound batches between processes); unpickling scans again.
  py::tuple state() const { return py::make_tuple(X_, labels_, targets_, weight_, head_, k_, float32_, own_); }

  // The core's view; only for a batch without a fault.
  template <typename T> mlpgrad::Batch<T> batch() const {
    if (scan_.fault != mlpgrad::Fault::none) throw py::value_error("data: its values were rejected");
    mlpgrad::Batch<T> b = view<T>();
    b.total_weight = scan_.total_weight;
    return b;
  }

 private:
  template <typename T> mlpgrad::Batch<T> view() const {
    mlpgrad::Batch<T> b;
    b.n = n_;
    if (is_sparse_X(X_)) {
      const auto t = py::reinterpret_borrow<py::tuple>(X_);
      b.Xs = {static_cast<const int64_t*>(py::reinterpret_borrow<py::array>(t[2]).data()),
              static_cast<const int64_t*>(py::reinterpret_borrow<py::array>(t[1]).data()),
              static_cast<const T*>(py::reinterpret_borrow<py::array>(t[0]).data())};
    } else {
      b.X = static_cast<const T*>(py::reinterpret_borrow<py::array>(X_).data());
    }
    if (!labels_.is_none()) b.labels = static_cast<const int64_t*>(py::reinterpret_borrow<py::array>(labels_).data());
    if (!targets_.is_none()) b.targets = static_cast<const T*>(py::reinterpret_borrow<py::array>(targets_).data());
    if (!weight_.is_none()) b.sample_weight = static_cast<const T*>(py::reinterpret_borrow<py::array>(weight_).data());
    return b;
  }

  template <typename T> void convert(py::handle X, py::handle labels, py::handle targets, py::handle weight) {
    if (is_sparse_X(X)) {
      const SparseArrays<T> sp(X, own_);
      n_ = sp.n;
      d0_ = sp.d0;
      X_ = sp.tuple();
    } else {
      const auto Xa = as_c_array<T>(X, "X", 2);
      n_ = Xa.shape(0);
      d0_ = Xa.shape(1);
      X_ = Xa;
    }
    expect(labels.is_none() != targets.is_none(), "data: expected labels or targets");
    if (!labels.is_none()) {
      const auto a = own_ ? owned_c_array<int64_t>(labels, "labels", 1) : as_c_array<int64_t>(labels, "labels", 1);
      expect(a.shape(0) == n_, "labels: expected one per row of X");
      expect(head_ == Head::softmax, "labels: need the softmax head");
      labels_ = a;
    } else {
      const auto a = own_ ? owned_c_array<T>(targets, "targets", 2) : as_c_array<T>(targets, "targets", 2);
      expect(a.shape(0) == n_ && a.shape(1) == k_, "targets: expected (N, k)");
      targets_ = a;
    }
    if (!weight.is_none()) {
      const auto a = own_ ? owned_c_array<T>(weight, "sample_weight", 1) : as_c_array<T>(weight, "sample_weight", 1);
      expect(a.shape(0) == n_, "sample_weight: expected one per row of X");
      weight_ = a;
    }
    const mlpgrad::Batch<T> b = view<T>();
    py::gil_scoped_release release;
    scan_ = mlpgrad::scan<T>(b, head_, k_);
  }

  bool float32_, own_;
  Head head_;
  int64_t k_, n_ = 0, d0_ = 0;
  py::object X_ = py::none(), labels_ = py::none(), targets_ = py::none(), weight_ = py::none();
  mlpgrad::Scan scan_;
};

// ---------------------------------------------------------------------------------------------- network
// The parameters as lists of arrays, converted to C order (no copy when they are already) and checked to
// chain; the arrays are kept alive by `keep`.
template <typename T>
mlpgrad::Network<T> network(const py::list& weights, const py::list& biases, std::vector<py::object>& keep) {
  expect(weights.size() > 0 && weights.size() == biases.size(), "weights and biases: expected equal, non-zero lengths");
  mlpgrad::Network<T> net;
  for (size_t l = 0; l < weights.size(); ++l) {
    auto W = as_c_array<T>(weights[l], "weights[l]", 2);
    auto b = as_c_array<T>(biases[l], "biases[l]", 1);
    if (l == 0) net.sizes.push_back(W.shape(0));
    expect(W.shape(0) == net.sizes.back() && b.shape(0) == W.shape(1), "weights and biases: shapes do not chain");
    net.sizes.push_back(W.shape(1));
    net.W.push_back(W.data());
    net.b.push_back(b.data());
    keep.push_back(W);
    keep.push_back(b);
  }
  return net;
}

// ---------------------------------------------------------------------------------------------- entry points
// The loss of `data` for `net` and, with `grad_out` (a flat (P,) buffer, pack order), every gradient written
// into it; with dX, dL/dX too. Returns the loss.
template <typename T>
double run_loss(const mlpgrad::Network<T>& net, const mlpgrad::Layout& layout, const Data& data, Reduction reduction,
                T* grad_out, T* dX, int n_threads) {
  expect(data.d0() == net.n_inputs() && data.k() == net.n_outputs(), "data: its shapes do not match the network");
  const mlpgrad::Batch<T> batch = data.batch<T>();
  if (!grad_out)
    return without_gil([&](const mlpgrad::Interrupt* intr) {
      return mlpgrad::loss<T>(net, data.head(), batch, reduction, n_threads, intr);
    });
  mlpgrad::Gradients<T> grads = layout.gradients<T>(grad_out);
  grads.dX = dX;
  return without_gil([&](const mlpgrad::Interrupt* intr) {
    return mlpgrad::loss_and_grad<T>(net, data.head(), batch, reduction, grads, n_threads, intr);
  });
}

// (loss, grad or None, dX or None). grad: `out` when given (checked), else a new (P,) array. layout: net's.
template <typename T>
py::tuple loss_and_grad_impl(const mlpgrad::Network<T>& net, const mlpgrad::Layout& layout, const Data& data,
                             Reduction reduction, bool want_grad, bool input_grad, int n_threads, py::handle out) {
  py::object grad = py::none(), dX = py::none();
  T* g = nullptr;
  T* dx = nullptr;
  if (want_grad) {
    const int64_t P = layout.n_params;
    if (out.is_none()) {
      py::array_t<T> a(P);
      g = a.mutable_data();
      grad = a;
    } else {
      g = writeable_array<T>(out, "out", P);
      grad = py::reinterpret_borrow<py::object>(out);
    }
    if (input_grad) {
      py::array_t<T> a({py::ssize_t(data.n()), py::ssize_t(data.d0())});
      dx = a.mutable_data();
      dX = a;
    }
  }
  const double value = run_loss<T>(net, layout, data, reduction, g, dx, n_threads);
  return py::make_tuple(value, grad, dX);
}

template <typename T>
py::tuple loss_and_grad_lists(const py::list& weights, const py::list& biases, const Data& data, Reduction reduction,
                              bool want_grad, bool input_grad, int n_threads, py::handle out) {
  std::vector<py::object> keep;
  const mlpgrad::Network<T> net = network<T>(weights, biases, keep);
  return loss_and_grad_impl<T>(net, mlpgrad::Layout(net.sizes), data, reduction, want_grad, input_grad, n_threads,
                               out);
}

template <typename T>
py::tuple loss_and_grad_flat(py::handle theta, const std::vector<int64_t>& sizes, const Data& data,
                             Reduction reduction, bool want_grad, bool input_grad, int n_threads, py::handle out) {
  const mlpgrad::Layout layout(sizes);
  const auto params = as_c_array<T>(theta, "theta", 1);
  expect(params.shape(0) == layout.n_params, "theta: expected P elements");
  return loss_and_grad_impl<T>(layout.network<T>(params.data()), layout, data, reduction, want_grad, input_grad,
                               n_threads, out);
}

template <typename T>
py::array forward_impl(const py::list& weights, const py::list& biases, py::handle X_obj, Head head, int n_threads) {
  std::vector<py::object> keep;
  const auto net = network<T>(weights, biases, keep);
  mlpgrad::Batch<T> inputs;  // X alone, dense or sparse
  CArray<T> X;
  std::unique_ptr<SparseArrays<T>> sp;
  if (is_sparse_X(X_obj)) {
    sp = std::make_unique<SparseArrays<T>>(X_obj, false);
    expect(sp->d0 == net.n_inputs(), "X: expected d_0 columns");
    inputs.n = sp->n;
    inputs.Xs = sp->rows();
    inputs.total_weight = 0;  // the structure is checked
  } else {
    X = as_c_array<T>(X_obj, "X", 2);
    expect(X.shape(1) == net.n_inputs(), "X: expected d_0 columns");
    inputs.n = X.shape(0);
    inputs.X = X.data();
  }
  const py::ssize_t n = inputs.n, k = net.n_outputs();
  py::array_t<T> probs({n, k});
  T* out = probs.mutable_data();
  without_gil([&](const mlpgrad::Interrupt* intr) {
    mlpgrad::forward<T>(net, head, inputs, out, n_threads, intr);
    return 0;
  });
  return std::move(probs);
}

// ---------------------------------------------------------------------------------------------- per sample
// One per-sample request (mlpgrad/per_sample.hpp) for the flat parameters theta: returns (loss, result, norms,
// layer_norms), result being the gradient (P,) for clipped and sumsq, the (n, P) rows for grads (`out` when
// given, checked), the (n, m) dot products for dot; the norms when asked for (norms, clipped).
template <typename T>
py::tuple per_sample_impl(py::handle theta, const std::vector<int64_t>& sizes, const Data& data, Reduction reduction,
                          mlpgrad::PerSampleOp op, const std::vector<double>& max_norm, py::handle V_obj,
                          bool want_norms, bool want_layer_norms, int n_threads, py::handle out) {
  using Op = mlpgrad::PerSampleOp;
  const mlpgrad::Layout layout(sizes);
  const auto params = as_c_array<T>(theta, "theta", 1);
  expect(params.shape(0) == layout.n_params, "theta: expected P elements");
  expect(data.d0() == sizes.front() && data.k() == sizes.back(), "data: its shapes do not match the network");
  const mlpgrad::Network<T> net = layout.network<T>(params.data());
  const py::ssize_t n = data.n(), L = py::ssize_t(sizes.size()) - 1, P = layout.n_params;
  mlpgrad::PerSampleRequest<T> q;
  q.op = op;
  q.max_norm = max_norm;
  py::object result = py::none(), norms = py::none(), layer_norms = py::none();
  if (want_norms) {
    py::array_t<T> a(n);
    q.norms = a.mutable_data();
    norms = a;
  }
  if (want_layer_norms) {
    py::array_t<T> a({n, L});
    q.layer_norms = a.mutable_data();
    layer_norms = a;
  }
  CArray<T> V;
  if (op == Op::clipped || op == Op::sumsq) {
    py::array_t<T> g(P);
    q.grads = layout.gradients<T>(g.mutable_data());
    result = g;
  } else if (op == Op::grads) {
    if (out.is_none()) {
      py::array_t<T> a({n, py::ssize_t(P)});
      q.rows = a.mutable_data();
      result = a;
    } else {
      q.rows = writeable_array<T>(out, "out", n * P);
      result = py::reinterpret_borrow<py::object>(out);
    }
  } else if (op == Op::dot) {
    V = as_c_array<T>(V_obj, "V", 2);
    expect(V.shape(0) == P && V.shape(1) >= 1, "V: expected (P, m)");
    q.V = V.data();
    q.m = V.shape(1);
    py::array_t<T> a({n, py::ssize_t(q.m)});
    q.rows = a.mutable_data();
    result = a;
  }
  const mlpgrad::Batch<T> batch = data.batch<T>();
  const double loss = without_gil([&](const mlpgrad::Interrupt* intr) {
    return mlpgrad::per_sample<T>(net, data.head(), batch, reduction, q, n_threads, intr);
  });
  return py::make_tuple(loss, result, norms, layer_norms);
}

// ---------------------------------------------------------------------------------------------- curvature
// One curvature request (mlpgrad/curvature.hpp) for the flat parameters theta: H V or G V (P, m) for V (P, m),
// or diag(G) (P,).
template <typename T>
py::array curvature_impl(py::handle theta, const std::vector<int64_t>& sizes, const Data& data, Reduction reduction,
                         mlpgrad::CurvatureOp op, py::handle V_obj, int n_threads) {
  const mlpgrad::Layout layout(sizes);
  const auto params = as_c_array<T>(theta, "theta", 1);
  expect(params.shape(0) == layout.n_params, "theta: expected P elements");
  expect(data.d0() == sizes.front() && data.k() == sizes.back(), "data: its shapes do not match the network");
  const mlpgrad::Network<T> net = layout.network<T>(params.data());
  const py::ssize_t P = layout.n_params;
  mlpgrad::CurvatureRequest<T> q;
  q.op = op;
  CArray<T> V;
  py::array_t<T> result;
  if (op == mlpgrad::CurvatureOp::ggn_diag) {
    result = py::array_t<T>(P);
  } else {
    V = as_c_array<T>(V_obj, "V", 2);
    expect(V.shape(0) == P && V.shape(1) >= 1, "V: expected (P, m)");
    q.V = V.data();
    q.m = V.shape(1);
    result = py::array_t<T>({P, py::ssize_t(q.m)});
  }
  q.out = result.mutable_data();
  const mlpgrad::Batch<T> batch = data.batch<T>();
  without_gil([&](const mlpgrad::Interrupt* intr) {
    return mlpgrad::curvature<T>(net, data.head(), batch, reduction, q, n_threads, intr);
  });
  return std::move(result);
}

// K (n_a, n_b) = the per-sample gradients' dot products between the rows of a and of b (b None: a).
template <typename T>
py::array grad_gram_impl(py::handle theta, const std::vector<int64_t>& sizes, const Data& a, py::handle b_obj,
                         int n_threads) {
  const mlpgrad::Layout layout(sizes);
  const auto params = as_c_array<T>(theta, "theta", 1);
  expect(params.shape(0) == layout.n_params, "theta: expected P elements");
  const Data& b = b_obj.is_none() ? a : b_obj.cast<const Data&>();
  for (const Data* d : {&a, &b})
    expect(d->d0() == sizes.front() && d->k() == sizes.back() && d->float32() == a.float32(),
           "data: its shapes or dtype do not match the network");
  const mlpgrad::Network<T> net = layout.network<T>(params.data());
  const mlpgrad::Batch<T> ba = a.batch<T>();
  const mlpgrad::Batch<T> bb_own = b_obj.is_none() ? ba : b.batch<T>();
  const mlpgrad::Batch<T>& bb = b_obj.is_none() ? ba : bb_own;
  py::array_t<T> K({py::ssize_t(a.n()), py::ssize_t(b.n())});
  T* k = K.mutable_data();
  without_gil([&](const mlpgrad::Interrupt* intr) {
    mlpgrad::grad_gram<T>(net, a.head(), ba, bb, k, n_threads, intr);
    return 0;
  });
  return std::move(K);
}

// ---------------------------------------------------------------------------------------------- training
// The settings of one epoch of mini-batch training (mlpgrad/train.hpp), set once by the estimator.
struct TrainOptions {
  mlpgrad::Solver solver = mlpgrad::Solver::adam;
  int64_t batch_size = 200;
  double alpha = 0, lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, momentum = 0.9;
  bool nesterov = true;
  double loss_scale = 1.0;  // the data loss's factor in the epoch's loss sum
};

// One epoch: params, grad (scratch) and the optimizer state (state1, state2 for adam, the step count t) are
// updated in place; order: None or the rows' order. Returns (loss_sum, sumsq, steps).
template <typename T>
py::tuple train_epoch_impl(py::handle p, py::handle g, py::handle s1, py::handle s2, py::handle t_obj,
                           const std::vector<int64_t>& sizes, const Data& data, py::handle order_obj,
                           const TrainOptions& o, double sumsq, int n_threads) {
  const mlpgrad::Layout layout(sizes);
  const int64_t P = layout.n_params;
  expect(data.d0() == sizes.front() && data.k() == sizes.back(), "data: its shapes do not match the network");
  mlpgrad::Optimizer<T> opt;
  opt.solver = o.solver;
  T* params = writeable_array<T>(p, "params", P);
  T* grad = writeable_array<T>(g, "grad", P);
  opt.state1 = writeable_array<T>(s1, "state1", P);
  if (opt.solver == mlpgrad::Solver::adam) opt.state2 = writeable_array<T>(s2, "state2", P);
  opt.t = writeable_array<int64_t>(t_obj, "t", 1);
  opt.lr = o.lr;
  opt.beta1 = o.beta1;
  opt.beta2 = o.beta2;
  opt.eps = o.eps;
  opt.momentum = o.momentum;
  opt.nesterov = o.nesterov;
  const mlpgrad::Batch<T> batch = data.batch<T>();
  CArray<int64_t> order;
  const int64_t* order_ptr = nullptr;
  if (!order_obj.is_none()) {
    order = as_c_array<int64_t>(order_obj, "order", 1);
    expect(order.shape(0) == data.n(), "order: expected one index per row");
    order_ptr = order.data();
  }
  const auto r = without_gil([&](const mlpgrad::Interrupt* intr) {
    return mlpgrad::train_epoch<T>(sizes, data.head(), params, grad, batch, order_ptr, o.batch_size, o.alpha, sumsq,
                                   opt, n_threads, intr, o.loss_scale);
  });
  return py::make_tuple(r.loss_sum, r.sumsq, r.steps);
}

// ---------------------------------------------------------------------------------------------- build
py::dict build_info() {
  py::dict info;
  info["compiler"] = mlpgrad::compiler();
  info["openmp"] = mlpgrad::openmp_enabled();
  info["max_threads"] = mlpgrad::default_threads();
  info["simd"] = mlpgrad::isa_name(mlpgrad::active_isa());
  info["simd_best"] = mlpgrad::isa_name(mlpgrad::best_isa());
  py::list levels;
  for (int i = 0; i <= static_cast<int>(mlpgrad::best_isa()); ++i)
    levels.append(mlpgrad::isa_name(static_cast<mlpgrad::Isa>(i)));
  info["simd_available"] = levels;
  return info;
}

// GFLOP/s of the active instruction set's register-only FMA loop on n_threads threads (mlpgrad/peak.hpp).
double fma_peak(bool float32, int n_threads) {
  py::gil_scoped_release release;
  return float32 ? mlpgrad::fma_peak<float>(n_threads) : mlpgrad::fma_peak<double>(n_threads);
}

std::string set_simd(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(mlpgrad::Isa::avx512); ++i) {
    const auto isa = static_cast<mlpgrad::Isa>(i);
    if (name == mlpgrad::isa_name(isa)) {
      mlpgrad::set_active_isa(isa);
      return mlpgrad::isa_name(mlpgrad::active_isa());
    }
  }
  throw py::value_error("simd: expected 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  m.doc() = "mlpgrad's native core; mlpgrad._native is its only user (the public functions check arguments)";

  py::enum_<Head>(m, "Head")
      .value("sigmoid", Head::sigmoid)
      .value("softmax", Head::softmax)
      .value("identity", Head::identity);
  py::enum_<Reduction>(m, "Reduction").value("sum", Reduction::sum).value("mean", Reduction::mean);
  py::enum_<mlpgrad::Solver>(m, "Solver").value("adam", mlpgrad::Solver::adam).value("sgd", mlpgrad::Solver::sgd);
  py::enum_<mlpgrad::Schedule>(m, "Schedule")
      .value("automatic", mlpgrad::Schedule::automatic)
      .value("chunked", mlpgrad::Schedule::chunked)
      .value("layered", mlpgrad::Schedule::layered);
  py::enum_<mlpgrad::Fault>(m, "Fault")
      .value("none", mlpgrad::Fault::none)
      .value("label_range", mlpgrad::Fault::label_range)
      .value("target_range", mlpgrad::Fault::target_range)
      .value("sample_weight", mlpgrad::Fault::sample_weight);

  py::class_<Data>(m, "Data", "A batch converted and scanned once (see mlpgrad/_native.py).")
      .def(py::init<py::handle, py::handle, py::handle, py::handle, Head, int64_t, bool, bool>(), py::arg("X"),
           py::arg("labels"), py::arg("targets"), py::arg("sample_weight"), py::arg("head"), py::arg("k"),
           py::arg("float32"), py::arg("own"))
      .def(py::pickle([](const Data& d) { return d.state(); },
                      [](const py::tuple& t) {
                        return Data(t[0], t[1], t[2], t[3], t[4].cast<Head>(), t[5].cast<int64_t>(),
                                    t[6].cast<bool>(), t[7].cast<bool>());
                      }))
      .def_property_readonly("n", &Data::n)
      .def_property_readonly("X", &Data::X)
      .def_property_readonly("ok", [](const Data& d) { return d.scan().fault == mlpgrad::Fault::none; })
      .def_property_readonly("fault", [](const Data& d) { return d.scan().fault; })
      .def_property_readonly("total_weight", [](const Data& d) { return d.scan().total_weight; })
      .def_property_readonly("label_range",
                             [](const Data& d) { return py::make_tuple(d.scan().label_min, d.scan().label_max); });

  py::class_<TrainOptions>(m, "TrainOptions", "The settings of train_epoch.")
      .def(py::init<>())
      .def_readwrite("solver", &TrainOptions::solver)
      .def_readwrite("batch_size", &TrainOptions::batch_size)
      .def_readwrite("alpha", &TrainOptions::alpha)
      .def_readwrite("lr", &TrainOptions::lr)
      .def_readwrite("beta1", &TrainOptions::beta1)
      .def_readwrite("beta2", &TrainOptions::beta2)
      .def_readwrite("eps", &TrainOptions::eps)
      .def_readwrite("momentum", &TrainOptions::momentum)
      .def_readwrite("nesterov", &TrainOptions::nesterov)
      .def_readwrite("loss_scale", &TrainOptions::loss_scale);

  m.def("forward", [](const py::list& weights, const py::list& biases, py::handle X, Head head, bool float32,
                      int n_threads) {
    return float32 ? forward_impl<float>(weights, biases, X, head, n_threads)
                   : forward_impl<double>(weights, biases, X, head, n_threads);
  });
  m.def("loss_and_grad", [](const py::list& weights, const py::list& biases, const Data& data, Reduction reduction,
                            bool want_grad, bool input_grad, int n_threads, py::handle out) {
    return data.float32()
               ? loss_and_grad_lists<float>(weights, biases, data, reduction, want_grad, input_grad, n_threads, out)
               : loss_and_grad_lists<double>(weights, biases, data, reduction, want_grad, input_grad, n_threads, out);
  });
  m.def("loss_and_grad_flat", [](py::handle theta, const std::vector<int64_t>& sizes, const Data& data,
                                 Reduction reduction, bool want_grad, bool input_grad, int n_threads, py::handle out) {
    return data.float32()
               ? loss_and_grad_flat<float>(theta, sizes, data, reduction, want_grad, input_grad, n_threads, out)
               : loss_and_grad_flat<double>(theta, sizes, data, reduction, want_grad, input_grad, n_threads, out);
  });
  py::enum_<mlpgrad::PerSampleOp>(m, "PerSampleOp")
      .value("norms", mlpgrad::PerSampleOp::norms)
      .value("clipped", mlpgrad::PerSampleOp::clipped)
      .value("grads", mlpgrad::PerSampleOp::grads)
      .value("dot", mlpgrad::PerSampleOp::dot)
      .value("sumsq", mlpgrad::PerSampleOp::sumsq);
  m.def("per_sample", [](py::handle theta, const std::vector<int64_t>& sizes, const Data& data, Reduction reduction,
                         mlpgrad::PerSampleOp op, const std::vector<double>& max_norm, py::handle V, bool want_norms,
                         bool want_layer_norms, int n_threads, py::handle out) {
    return data.float32() ? per_sample_impl<float>(theta, sizes, data, reduction, op, max_norm, V, want_norms,
                                                   want_layer_norms, n_threads, out)
                          : per_sample_impl<double>(theta, sizes, data, reduction, op, max_norm, V, want_norms,
                                                    want_layer_norms, n_threads, out);
  });
  py::enum_<mlpgrad::CurvatureOp>(m, "CurvatureOp")
      .value("hvp", mlpgrad::CurvatureOp::hvp)
      .value("ggn_vp", mlpgrad::CurvatureOp::ggn_vp)
      .value("ggn_diag", mlpgrad::CurvatureOp::ggn_diag);
  m.def("curvature", [](py::handle theta, const std::vector<int64_t>& sizes, const Data& data, Reduction reduction,
                        mlpgrad::CurvatureOp op, py::handle V, int n_threads) {
    return data.float32() ? curvature_impl<float>(theta, sizes, data, reduction, op, V, n_threads)
                          : curvature_impl<double>(theta, sizes, data, reduction, op, V, n_threads);
  });
  m.def("grad_gram", [](py::handle theta, const std::vector<int64_t>& sizes, const Data& a, py::handle b,
                        int n_threads) {
    return a.float32() ? grad_gram_impl<float>(theta, sizes, a, b, n_threads)
                       : grad_gram_impl<double>(theta, sizes, a, b, n_threads);
  });
  m.def("train_epoch", [](py::handle params, py::handle grad, py::handle state1, py::handle state2, py::handle t,
                          const std::vector<int64_t>& sizes, const Data& data, py::handle order,
                          const TrainOptions& options, double sumsq, int n_threads) {
    return data.float32() ? train_epoch_impl<float>(params, grad, state1, state2, t, sizes, data, order, options,
                                                    sumsq, n_threads)
                          : train_epoch_impl<double>(params, grad, state1, state2, t, sizes, data, order, options,
                                                     sumsq, n_threads);
  });
  m.def("build_info", &build_info);
  m.def("fma_peak", &fma_peak, py::arg("float32"), py::arg("n_threads"),
        "GFLOP/s of a register-only FMA loop on the active SIMD level and n_threads threads (0: the default).");
  m.def("set_simd", &set_simd, "Use this SIMD level (clamped to the best available); returns the level in use.");
  m.def("set_schedule", &mlpgrad::set_schedule, "Force a schedule (automatic: the engine's own choice).");
  m.def("schedule", &mlpgrad::schedule, "The forced schedule (MLPGRAD_SCHEDULE at load, or set_schedule's).");
}
