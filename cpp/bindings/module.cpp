// mlpgrad._core: the thin layer between Python and the core. It checks and converts the arrays
// (C-contiguous, in the weights' dtype; the caller's arrays are only read), allocates the results,
// releases the GIL and calls the core. Friendly argument checking happens first, in Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "mlpgrad/mlp.hpp"
#include "mlpgrad/optim.hpp"
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

template <typename T>
CArray<T> as_c_array(py::handle obj, const std::string& name, py::ssize_t ndim) {
  // The converting constructor keeps NumPy's own error (a MemoryError for a copy too large, say);
  // Python has checked the types already.
  CArray<T> arr(py::reinterpret_borrow<py::object>(obj));
  if (arr.ndim() != ndim)
    throw py::value_error(name + ": expected " + std::to_string(ndim) + "-D, got " + std::to_string(arr.ndim()) + "-D");
  return arr;
}

void expect_dim(py::ssize_t got, py::ssize_t want, const std::string& what) {
  if (got != want)
    throw py::value_error(what + ": expected " + std::to_string(want) + ", got " + std::to_string(got));
}

// The parameters, converted and checked to chain; arrays are kept alive by `keep`.
template <typename T>
mlpgrad::Network<T> network(const py::list& weights, const py::list& biases, std::vector<py::object>& keep) {
  if (weights.size() == 0 || weights.size() != biases.size())
    throw py::value_error("weights and biases: expected equal, non-zero lengths");
  mlpgrad::Network<T> net;
  for (size_t l = 0; l < weights.size(); ++l) {
    auto W = as_c_array<T>(weights[l], "weights[" + std::to_string(l) + "]", 2);
    auto b = as_c_array<T>(biases[l], "biases[" + std::to_string(l) + "]", 1);
    if (l == 0) net.sizes.push_back(W.shape(0));
    expect_dim(W.shape(0), net.sizes.back(), "weights[" + std::to_string(l) + "] rows");
    expect_dim(b.shape(0), W.shape(1), "biases[" + std::to_string(l) + "] length");
    net.sizes.push_back(W.shape(1));
    net.W.push_back(W.data());
    net.b.push_back(b.data());
    keep.push_back(W);
    keep.push_back(b);
  }
  return net;
}

// A batch's arrays (X with d0 columns; labels, or targets with k columns; sample weights) converted,
// checked for shape and pointed to by `batch`; they live as long as this object.
template <typename T> struct BatchArrays {
  CArray<T> X, targets, sample_weight;
  CArray<int64_t> labels;
  mlpgrad::Batch<T> batch;
  BatchArrays(py::handle X_obj, int64_t d0, py::handle labels_obj, py::handle targets_obj, py::handle weight_obj,
              py::ssize_t k) {
    X = as_c_array<T>(X_obj, "X", 2);
    expect_dim(X.shape(1), d0, "X columns");
    const py::ssize_t n = X.shape(0);
    batch.n = n;
    batch.X = X.data();
    if (!labels_obj.is_none()) {
      labels = as_c_array<int64_t>(labels_obj, "labels", 1);
      expect_dim(labels.shape(0), n, "labels length");
      batch.labels = labels.data();
    } else if (!targets_obj.is_none()) {
      targets = as_c_array<T>(targets_obj, "targets", 2);
      expect_dim(targets.shape(0), n, "targets rows");
      expect_dim(targets.shape(1), k, "targets columns");
      batch.targets = targets.data();
    } else {
      throw py::value_error("labels or targets: expected one of them");
    }
    if (!weight_obj.is_none()) {
      sample_weight = as_c_array<T>(weight_obj, "sample_weight", 1);
      expect_dim(sample_weight.shape(0), n, "sample_weight length");
      batch.sample_weight = sample_weight.data();
    }
  }
};

// Element-wise checks of the targets and weights, in one pass each; the messages are those of
// mlpgrad/_checks.py (which makes the same checks for the reference). Labels: see mlpgrad::check.
template <typename T>
void check_values(const mlpgrad::Batch<T>& batch, int64_t k, int head, int reduction) {
  const int64_t n = batch.n;  // (the label range is checked by the core, with the same message)
  if (batch.targets) {
    bool ok = true;
    if (head == 0) {
      for (int64_t i = 0; i < n * k; ++i) ok &= batch.targets[i] >= T(0) && batch.targets[i] <= T(1);
      if (!ok) throw py::value_error("y must hold values in [0, 1] for the sigmoid head");
    } else {
      for (int64_t i = 0; i < n * k; ++i) ok &= std::isfinite(batch.targets[i]) && batch.targets[i] >= T(0);
      if (!ok) throw py::value_error("y as 2-D softmax targets must be finite and >= 0");
    }
  }
  double total = double(n);
  if (batch.sample_weight) {
    bool ok = true;
    total = 0;
    for (int64_t i = 0; i < n; ++i) {
      ok &= std::isfinite(batch.sample_weight[i]) && batch.sample_weight[i] >= T(0);
      total += double(batch.sample_weight[i]);
    }
    if (!ok) throw py::value_error("sample_weight must be finite and >= 0");
  }
  if (reduction == 1 && !(total > 0))
    throw py::value_error(std::string("reduction='mean' needs a positive total weight: ") +
                          (n == 0 ? "X has no rows (N = 0)" : "sample_weight sums to 0"));
}

template <typename T>
py::array forward_impl(const py::list& weights, const py::list& biases, py::handle X_obj, int head, int n_threads) {
  std::vector<py::object> keep;
  const auto net = network<T>(weights, biases, keep);
  auto X = as_c_array<T>(X_obj, "X", 2);
  expect_dim(X.shape(1), net.n_inputs(), "X columns");
  const py::ssize_t n = X.shape(0), k = net.n_outputs();
  py::array_t<T> probs({n, k});
  T* out = probs.mutable_data();
  const T* x = X.data();
  without_gil([&](const mlpgrad::Interrupt* intr) {
    mlpgrad::forward<T>(net, static_cast<Head>(head), n, x, out, n_threads, intr);
    return 0;
  });
  return std::move(probs);
}

template <typename T>
py::tuple loss_and_grad_impl(const py::list& weights, const py::list& biases, py::handle X_obj, py::handle labels_obj,
                             py::handle targets_obj, py::handle weight_obj, int head, int reduction, bool want_grad,
                             bool input_grad, int n_threads) {
  std::vector<py::object> keep;
  const auto net = network<T>(weights, biases, keep);
  const py::ssize_t k = net.n_outputs();
  const BatchArrays<T> arrays(X_obj, net.n_inputs(), labels_obj, targets_obj, weight_obj, k);
  const mlpgrad::Batch<T>& batch = arrays.batch;
  const py::ssize_t n = batch.n;
  check_values<T>(batch, k, head, reduction);

  py::list dWs, dbs;
  mlpgrad::Gradients<T> grads;
  py::object dX = py::none();
  if (want_grad) {
    for (size_t l = 0; l + 1 < net.sizes.size(); ++l) {
      py::array_t<T> dW({net.sizes[l], net.sizes[l + 1]}), db(net.sizes[l + 1]);
      grads.dW.push_back(dW.mutable_data());
      grads.db.push_back(db.mutable_data());
      dWs.append(dW);
      dbs.append(db);
    }
    if (input_grad) {
      py::array_t<T> dX_arr({n, py::ssize_t(net.n_inputs())});
      grads.dX = dX_arr.mutable_data();
      dX = dX_arr;
    }
  }
  const double value = without_gil([&](const mlpgrad::Interrupt* intr) {
    return want_grad ? mlpgrad::loss_and_grad<T>(net, static_cast<Head>(head), batch,
                                                 static_cast<Reduction>(reduction), grads, n_threads, intr)
                     : mlpgrad::loss<T>(net, static_cast<Head>(head), batch, static_cast<Reduction>(reduction),
                                        n_threads, intr);
  });
  return py::make_tuple(value, dWs, dbs, dX);
}

// Whether an array's dtype is T's, by value (numpy's PyArray_EquivTypes), never by identity: a dtype
// that went through pickle (multiprocessing, Dask workers) equals np.dtype(np.float64) but is another
// object.
template <typename T> bool has_dtype(const py::array& a) { return py::array_t<T>::check_(a); }
std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// The dtype of the computation: that of weights[0] (float32 or float64).
bool is_float32(const py::list& weights) {
  if (weights.size() == 0) throw py::value_error("weights: expected at least one layer");
  const auto arr = py::array::ensure(weights[0]);
  if (has_dtype<float>(arr)) return true;
  if (has_dtype<double>(arr)) return false;
  throw py::type_error("weights[0]: expected dtype float32 or float64, got " + dtype_name(arr));
}

void check_codes(int head, int reduction, int n_threads) {
  if (head != 0 && head != 1) throw py::value_error("head: expected 0 (sigmoid) or 1 (softmax)");
  if (reduction != 0 && reduction != 1) throw py::value_error("reduction: expected 0 (sum) or 1 (mean)");
  if (n_threads < 0) throw py::value_error("n_threads: expected >= 0");
}

// The optimizer steps update their arrays in place: they must be C-contiguous, writeable and of the
// parameters' dtype already (no conversion, which would update a copy).
template <typename T>
T* inplace_array(py::handle obj, const char* name, py::ssize_t n) {
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!has_dtype<T>(arr) || !(arr.flags() & py::array::c_style) || !arr.writeable() || arr.ndim() != 1 ||
      (n >= 0 && arr.shape(0) != n))
    throw py::type_error(std::string(name) + ": expected a writeable C-contiguous 1-D array of the parameters' dtype" +
                         " and length");
  return static_cast<T*>(arr.mutable_data());
}

template <typename T>
const T* input_array(py::handle obj, const char* name, py::ssize_t n) {
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!has_dtype<T>(arr) || !(arr.flags() & py::array::c_style) || arr.ndim() != 1 || arr.shape(0) != n)
    throw py::type_error(std::string(name) + ": expected a C-contiguous 1-D array of the parameters' dtype and length");
  return static_cast<const T*>(arr.data());
}

bool params_float32(py::handle params) {
  if (!py::isinstance<py::array>(params)) throw py::type_error("params: expected a NumPy array");
  const auto arr = py::reinterpret_borrow<py::array>(params);
  if (has_dtype<float>(arr)) return true;
  if (has_dtype<double>(arr)) return false;
  throw py::type_error("params: expected dtype float32 or float64, got " + dtype_name(arr));
}

template <typename T>
double adam_step_impl(py::handle p, py::handle g, py::handle m, py::handle v, int64_t n_reg, double l2, double lr,
                      double beta1, double beta2, double eps) {
  T* params = inplace_array<T>(p, "params", -1);
  const py::ssize_t n = py::reinterpret_borrow<py::array>(p).shape(0);
  if (n_reg < 0 || n_reg > n) throw py::value_error("n_reg: expected 0 <= n_reg <= len(params)");
  const T* grads = input_array<T>(g, "grads", n);
  T* ms = inplace_array<T>(m, "m", n);
  T* vs = inplace_array<T>(v, "v", n);
  py::gil_scoped_release release;
  return mlpgrad::adam_step<T>(params, grads, ms, vs, n, n_reg, l2, lr, beta1, beta2, eps);
}

template <typename T>
double sgd_step_impl(py::handle p, py::handle g, py::handle u, int64_t n_reg, double l2, double lr, double momentum,
                     bool nesterov) {
  T* params = inplace_array<T>(p, "params", -1);
  const py::ssize_t n = py::reinterpret_borrow<py::array>(p).shape(0);
  if (n_reg < 0 || n_reg > n) throw py::value_error("n_reg: expected 0 <= n_reg <= len(params)");
  const T* grads = input_array<T>(g, "grads", n);
  T* velocity = inplace_array<T>(u, "velocity", n);
  py::gil_scoped_release release;
  return mlpgrad::sgd_step<T>(params, grads, velocity, n, n_reg, l2, lr, momentum, nesterov);
}

// One epoch of mini-batch training (mlpgrad/train.hpp). params, grad and the optimizer state are updated in
// place (checked like the optimizer steps'); the data are read (converted when needed) and checked.
template <typename T>
py::tuple train_epoch_impl(py::handle p, py::handle g, py::handle s1, py::handle s2, py::handle t_obj,
                           const std::vector<int64_t>& sizes, py::handle X_obj, py::handle labels_obj,
                           py::handle targets_obj, py::handle weight_obj, py::handle order_obj, int64_t batch_size,
                           int head, double alpha, double sumsq, int solver, double lr, double beta1, double beta2,
                           double eps, double momentum, bool nesterov, int n_threads) {
  if (sizes.size() < 2) throw py::value_error("sizes: expected at least 2 layer widths");
  int64_t n_params = 0;
  for (size_t l = 0; l + 1 < sizes.size(); ++l) {
    if (sizes[l] < 1 || sizes[l + 1] < 1) throw py::value_error("sizes: expected widths >= 1");
    n_params += sizes[l] * sizes[l + 1] + sizes[l + 1];
  }
  if (batch_size < 1) throw py::value_error("batch_size: expected >= 1");
  if (solver != 0 && solver != 1) throw py::value_error("solver: expected 0 (adam) or 1 (sgd)");
  mlpgrad::Optimizer<T> opt;
  opt.solver = static_cast<mlpgrad::Solver>(solver);
  T* params = inplace_array<T>(p, "params", n_params);
  T* grad = inplace_array<T>(g, "grad", n_params);
  opt.state1 = inplace_array<T>(s1, "state1", n_params);
  if (opt.solver == mlpgrad::Solver::adam) opt.state2 = inplace_array<T>(s2, "state2", n_params);
  auto t_arr = py::reinterpret_borrow<py::array>(t_obj);
  if (!py::array_t<int64_t>::check_(t_arr) || t_arr.ndim() != 1 || t_arr.shape(0) != 1 || !t_arr.writeable())
    throw py::type_error("t: expected a writeable int64 array of length 1");
  opt.t = static_cast<int64_t*>(t_arr.mutable_data());
  opt.lr = lr;
  opt.beta1 = beta1;
  opt.beta2 = beta2;
  opt.eps = eps;
  opt.momentum = momentum;
  opt.nesterov = nesterov;

  const py::ssize_t k = sizes.back();
  const BatchArrays<T> arrays(X_obj, sizes.front(), labels_obj, targets_obj, weight_obj, k);
  const mlpgrad::Batch<T>& data = arrays.batch;
  const py::ssize_t n = data.n;
  check_values<T>(data, k, head, 0);
  CArray<int64_t> order;
  const int64_t* order_ptr = nullptr;
  if (!order_obj.is_none()) {
    order = as_c_array<int64_t>(order_obj, "order", 1);
    expect_dim(order.shape(0), n, "order length");
    order_ptr = order.data();
  }
  const auto r = without_gil([&](const mlpgrad::Interrupt* intr) {
    return mlpgrad::train_epoch<T>(sizes, static_cast<Head>(head), params, grad, data, order_ptr, batch_size, alpha,
                                   sumsq, opt, n_threads, intr);
  });
  return py::make_tuple(r.loss_sum, r.sumsq, r.steps);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  m.doc() = "mlpgrad's native core (use the functions of the mlpgrad package, which check their arguments)";

  m.def(
      "forward",
      [](const py::list& weights, const py::list& biases, py::handle X, int head, int n_threads) {
        check_codes(head, 0, n_threads);
        return is_float32(weights) ? forward_impl<float>(weights, biases, X, head, n_threads)
                                   : forward_impl<double>(weights, biases, X, head, n_threads);
      },
      py::arg("weights"), py::arg("biases"), py::arg("X"), py::arg("head"), py::arg("n_threads") = 0);

  m.def(
      "loss_and_grad",
      [](const py::list& weights, const py::list& biases, py::handle X, py::handle labels, py::handle targets,
         py::handle sample_weight, int head, int reduction, bool want_grad, bool input_grad, int n_threads) {
        check_codes(head, reduction, n_threads);
        return is_float32(weights)
                   ? loss_and_grad_impl<float>(weights, biases, X, labels, targets, sample_weight, head, reduction,
                                               want_grad, input_grad, n_threads)
                   : loss_and_grad_impl<double>(weights, biases, X, labels, targets, sample_weight, head, reduction,
                                                want_grad, input_grad, n_threads);
      },
      py::arg("weights"), py::arg("biases"), py::arg("X"), py::arg("labels"), py::arg("targets"),
      py::arg("sample_weight"), py::arg("head"), py::arg("reduction"), py::arg("want_grad"), py::arg("input_grad"),
      py::arg("n_threads") = 0);

  m.def("build_info", []() {
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
  });

  m.def(
      "set_simd",
      [](const std::string& name) {
        for (int i = 0; i <= static_cast<int>(mlpgrad::Isa::avx512); ++i) {
          const auto isa = static_cast<mlpgrad::Isa>(i);
          if (name == mlpgrad::isa_name(isa)) {
            mlpgrad::set_active_isa(isa);
            return std::string(mlpgrad::isa_name(mlpgrad::active_isa()));
          }
        }
        throw py::value_error("simd: expected 'generic', 'avx2' or 'avx512', got '" + name + "'");
      },
      py::arg("name"), "Use this SIMD level (clamped to the best one available); returns the level now in use.");

  m.def(
      "adam_step",
      [](py::handle params, py::handle grads, py::handle m_, py::handle v_, int64_t n_reg, double l2, double lr,
         double beta1, double beta2, double eps) {
        return params_float32(params) ? adam_step_impl<float>(params, grads, m_, v_, n_reg, l2, lr, beta1, beta2, eps)
                                      : adam_step_impl<double>(params, grads, m_, v_, n_reg, l2, lr, beta1, beta2, eps);
      },
      py::arg("params"), py::arg("grads"), py::arg("m"), py::arg("v"), py::arg("n_reg"), py::arg("l2"), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
      "One fused Adam step in place on flat arrays (see mlpgrad/optim.hpp); returns sum(params[:n_reg]**2).");

  m.def(
      "sgd_step",
      [](py::handle params, py::handle grads, py::handle velocity, int64_t n_reg, double l2, double lr, double momentum,
         bool nesterov) {
        return params_float32(params) ? sgd_step_impl<float>(params, grads, velocity, n_reg, l2, lr, momentum, nesterov)
                                      : sgd_step_impl<double>(params, grads, velocity, n_reg, l2, lr, momentum, nesterov);
      },
      py::arg("params"), py::arg("grads"), py::arg("velocity"), py::arg("n_reg"), py::arg("l2"), py::arg("lr"),
      py::arg("momentum"), py::arg("nesterov"),
      "One fused SGD (momentum / Nesterov) step in place on flat arrays; returns sum(params[:n_reg]**2).");
  m.def(
      "train_epoch",
      [](py::handle params, py::handle grad, py::handle state1, py::handle state2, py::handle t,
         const std::vector<int64_t>& sizes, py::handle X, py::handle labels, py::handle targets,
         py::handle sample_weight, py::handle order, int64_t batch_size, int head, double alpha, double sumsq,
         int solver, double lr, double beta1, double beta2, double eps, double momentum, bool nesterov,
         int n_threads) {
        check_codes(head, 0, n_threads);
        return params_float32(params)
                   ? train_epoch_impl<float>(params, grad, state1, state2, t, sizes, X, labels, targets, sample_weight,
                                             order, batch_size, head, alpha, sumsq, solver, lr, beta1, beta2, eps,
                                             momentum, nesterov, n_threads)
                   : train_epoch_impl<double>(params, grad, state1, state2, t, sizes, X, labels, targets,
                                              sample_weight, order, batch_size, head, alpha, sumsq, solver, lr, beta1,
                                              beta2, eps, momentum, nesterov, n_threads);
      },
      py::arg("params"), py::arg("grad"), py::arg("state1"), py::arg("state2"), py::arg("t"), py::arg("sizes"),
      py::arg("X"), py::arg("labels"), py::arg("targets"), py::arg("sample_weight"), py::arg("order"),
      py::arg("batch_size"), py::arg("head"), py::arg("alpha"), py::arg("sumsq"), py::arg("solver"), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("momentum"), py::arg("nesterov"),
      py::arg("n_threads") = 0,
      "One epoch of mini-batch adam / sgd (see mlpgrad/train.hpp); returns (loss_sum, sumsq, steps).");
}
