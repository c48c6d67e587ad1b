"""``mlpgrad.MLPClassifier`` and ``mlpgrad.MLPRegressor``: scikit-learn's MLPClassifier and MLPRegressor with
``activation="logistic"``, trained on the native core.

The objective, the initialization, the use of ``random_state``, the mini-batches, the optimizers and the
stopping rules are scikit-learn's (``sklearn/neural_network/_multilayer_perceptron.py``), so that from the
same ``random_state`` both estimators take the same steps up to rounding. What differs is where the work
happens: each epoch of adam / sgd is one native call (``_native.train_epoch``, cpp/src/train.cpp) that
gathers each mini-batch, computes its loss and gradients and applies the step in one fused pass over one flat
parameter buffer (``mlpgrad.pack`` order), of which ``coefs_`` and ``intercepts_`` are views; lbfgs minimizes an
``mlpgrad.Objective`` (one native call per evaluation). ``_BaseMLP`` holds all of this; the two estimators differ
in their targets, output layer and score only.

Objective (scikit-learn's), for a batch B with sample weights w (all ones by default):

    L_B = sum_{i in B} w_i l_i / sum_{i in B} w_i  +  alpha / 2 * sum_l ||W_l||^2 / sum_{i in B} w_i

with l_i the loss of sample i. MLPClassifier: the log-loss, binary cross-entropy summed over the outputs (sigmoid
output, for binary and multi-label targets) or the cross-entropy of the softmax (multiclass). MLPRegressor: the
squared error 1/2 sum_j (z_ij - y_ij)^2 of the identity output z_i, summed over the k outputs (the core's head
"identity"). The biases are not penalized. ``lbfgs`` minimizes L over the whole training set with scipy's
L-BFGS-B.

The loss scikit-learn reports (``loss_``, ``loss_curve_``, and the value its L-BFGS-B sees) is L with the
regressor's data term divided by k: its squared error averages over the outputs while its gradient is the one of
L, summed over them (scikit-learn issue #8349). MLPRegressor reports the same values and, for lbfgs, hands
L-BFGS-B the same (value, gradient) pairs; ``_BaseMLP._reported_scale`` is the factor, 1 for the classifier (the
native epoch takes it as ``loss_scale``: the factor of each batch's data loss, not of its penalty).

``newton-cg`` (in neither of scikit-learn's estimators) minimizes the same L with scipy's Newton-CG, Hessian-free:
each outer iteration solves (G + alpha I_W + lambda I) p = -grad by conjugate gradients, G the Gauss-Newton matrix
of the data term through ``Objective.ggn_vp`` (one native pass per product), lambda = ``NEWTON_DAMPING``, then a
Wolfe line search along p on L itself. ``max_iter`` counts outer iterations; it stops when the gradient's largest
component is at most ``tol`` (lbfgs's rule), else warns (ConvergenceWarning). ``max_fun`` applies to lbfgs only,
as in scikit-learn.

scikit-learn is needed here (``pip install "mlpgrad[sklearn]"``); ``import mlpgrad`` works without it.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real
from typing import Optional, Sequence, Union

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight, check_is_fitted
from threadpoolctl import threadpool_limits

from . import _dask_estimator, _native
from ._checks import check_n_threads, check_X, float_dtype, is_sparse, native_order
from ._types import ArrayLike
from ._flat import n_params, n_weights, unpack
from .objective import Objective

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_STOCHASTIC_SOLVERS = ("sgd", "adam")


# Sparse X as scikit-learn's MLP takes it: CSR and CSC as they are, other formats converted to CSR by its
# validation; the core runs CSR (_checks.check_X converts a CSC once).
_SPARSE_FORMATS = ("csr", "csc")


def _rows_of(X, dtype):
    """Validated X in ``dtype``: C-ordered if dense, CSR if sparse (without a copy when it already is)."""
    if is_sparse(X):
        return X.tocsr().astype(dtype, copy=False)
    return np.ascontiguousarray(X, dtype=dtype)


def _as_numpy(X):
    """NumPy arrays in the machine's byte order (``_checks.native_order``: scikit-learn's validation would turn
    '>f4' into float64), and arrays of other libraries (PyTorch, JAX, CuPy on the host...) as NumPy arrays,
    without a copy when the layout allows (DLPack, ``np.from_dlpack``). Anything else (lists, pandas and other
    data frames, whose column names the validation records as ``feature_names_in_``) is left to scikit-learn's
    validation."""
    if isinstance(X, np.ndarray):
        return native_order(X)
    if X is None or not hasattr(X, "__dlpack__"):
        return X
    try:
        return np.from_dlpack(X)
    except Exception:  # other device, unsupported dtype (bool), or a tensor that requires grad
        pass
    try:
        return native_order(np.asarray(X))
    except Exception:
        detach = getattr(X, "detach", None)  # torch tensors that require grad
        if detach is not None:
            return np.asarray(detach().cpu())
        raise


def _shuffled(idx, random_state):
    """sklearn.utils.shuffle(idx, random_state=random_state), the same permutation from the same random state,
    without its per-call argument validation (about 0.25 ms, paid every epoch: a fifth of a digits fit)."""
    perm = np.arange(idx.shape[0])
    random_state.shuffle(perm)
    return idx[perm]


def _progress(total, desc, enabled):
    """A tqdm progress bar, or None (verbose off, or tqdm not installed: then lines are printed)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=True, dynamic_ncols=True)


# newton-cg (one place for its settings). scipy's "Newton-CG" (a line search along the truncated conjugate-gradient
# step) rather than "trust-ncg" (Steihaug CG inside a trust region), measured in native passes to reach lbfgs's final
# training loss from the same initialization (hidden (100,), random_state=0; the demo's cases): on digits Newton-CG
# took 28 gradients and 169 Gauss-Newton products, trust-ncg 25 and 204; on 16000 rows of the synthetic case (lbfgs
# stopped at max_iter=10) Newton-CG 4 and 11, trust-ncg 5 and 16, and after 10 iterations Newton-CG's loss was 0.090
# against trust-ncg's 0.219: trust-ncg's first steps are held back by its initial radius, Newton-CG takes the full
# step whenever the line search accepts it. One product costs about 1.6 gradients' flops.
#
# NEWTON_DAMPING, lambda: the conjugate gradients solve (G + alpha I_W + lambda I) p = -grad, a fixed Levenberg-
# Marquardt damping of the Gauss-Newton matrix of scikit-learn's mean loss. G + alpha I_W is only semi-definite: G
# vanishes on directions that do not change the outputs (the incoming weights of a saturated unit, say) and alpha I_W
# does not reach the biases, nor count for much with alpha / N = 1e-4 / N; lambda makes the system definite and bounds
# the step in those directions, where an undamped step is long and wasted by the line search. Measured (the same counts)
# for lambda = 1e-2 ... 1e-6: 1e-2 never reached lbfgs's loss on digits in 40 iterations, 1e-3 reached it at iteration
# 28, 1e-4 at 24 (169 products), 1e-6 at 20 (148 products); on the synthetic case 1e-3 ... 1e-6 all at iteration 3, 1e-4
# with the lowest loss after 10 iterations. 1e-4: within 15% of the fewest products on digits and above float32's
# rounding of the products (about 1e-7 of their size).
NEWTON_DAMPING = 1e-4


class _NewtonCG:
    """scipy.optimize.minimize's arguments for solver "newton-cg": the objective's loss_and_grad as fun (jac=True),
    its damped Gauss-Newton product as hessp, and scikit-learn's stopping rule of its full-batch solvers, max |grad|
    <= tol (scipy's Newton-CG has none: its own test, on the step's length, is turned off). The rule is checked in
    the callback on the gradient of the last evaluation, which is the new iterate's whenever the line search ended
    on it (else at the next iteration)."""

    def __init__(self, objective, max_iter, tol):
        self.objective, self.max_iter, self.tol = objective, max_iter, tol
        self.converged = False
        self._last = None

    def fun(self, theta):
        value, grad = self.objective.loss_and_grad(theta)
        self._last = (theta.copy(), grad)
        return value, grad

    def hessp(self, theta, v):
        return self.objective.ggn_vp(theta, v) + NEWTON_DAMPING * v

    def method(self):
        return dict(method="Newton-CG", hessp=self.hessp, options={"maxiter": self.max_iter, "xtol": 0.0})

    def check(self, theta):
        """Raises StopIteration (scipy's signal to stop) when theta's gradient is known and small enough."""
        last = self._last
        if last is not None and np.array_equal(last[0], theta) and np.max(np.abs(last[1])) <= self.tol:
            self.converged = True
            raise StopIteration

    def n_iter(self, result):
        """n_iter_ of scipy's result, with scikit-learn's ConvergenceWarning unless the gradient rule stopped it
        (the message as sklearn.utils.optimize._check_optimize_result's for lbfgs)."""
        n_iter = min(result.nit, self.max_iter)
        if not (self.converged or result.status == 0):
            msg = (f"newton-cg failed to converge after {n_iter} iteration(s) (status={result.status}):\n"
                   f"{result.message}\n")
            if n_iter == self.max_iter:
                msg += f"\nIncrease the number of iterations to improve the convergence (max_iter={self.max_iter})."
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return n_iter


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: the parameters, the flat parameter buffer, the initialization,
    the solvers (adam / sgd epochs, lbfgs and newton-cg on an Objective), the stopping rules and the bookkeeping.

    A subclass says what its targets are and how it is scored, through these methods:

    - ``_validate_input(X, y, incremental, reset)``: scikit-learn's validation of (X, y); returns X and the targets
      as an (n, k) array Y (the classifier's binarized labels, the regressor's values), setting what the
      estimator learns of y (the classes).
    - ``_out_activation()`` (``out_activation_`` at initialization) and ``_head()`` (the core's head).
    - ``_targets(Y, dtype)``: Y as the core takes it.
    - ``_validation_score(output, y_val, sample_weight)``: early stopping's score of the network's output on the
      held-out rows (``y_val`` from ``_score_targets``).
    - optionally ``_stratify(Y)``, ``_score_targets(Y)`` and ``_reported_scale()`` (the module docstring).
    """

    activation = "logistic"  # fixed: the core's hidden layers are logistic sigmoids (not a parameter)

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "solver": [StrOptions({"lbfgs", "newton-cg", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "dtype": [None, StrOptions({"float32", "float64"}), type, np.dtype],
        "n_threads": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, hidden_layer_sizes: Union[int, Sequence[int]] = (100,), *, solver: str = "adam",
                 alpha: float = 0.0001, batch_size: Union[int, str] = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: Union[None, int, np.random.RandomState] = None, tol: float = 1e-4,
                 verbose: Union[bool, int] = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False, validation_fraction: float = 0.1,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8, n_iter_no_change: float = 10,
                 max_fun: int = 15000, dtype: Union[None, str, type, np.dtype] = None,
                 n_threads: Optional[int] = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads


    # ------------------------------------------------------------------ parameters
    def _param_dtype(self, X_dtype):
        if self.dtype is None:
            return np.dtype(np.float32) if X_dtype == np.float32 else np.dtype(np.float64)
        dt = np.dtype(self.dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        return dt

    def _bind(self, flat, layer_units):
        """coefs_ / intercepts_ become views into the flat buffer (mlpgrad.pack order)."""
        self._flat = flat
        self._n_reg = n_weights(layer_units)
        self.coefs_, self.intercepts_ = unpack(flat, layer_units)

    def _layer_units(self):
        return [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]

    def _ensure_flat(self):
        """Re-pack coefs_ / intercepts_ when they are no longer views of the flat buffer (assigned by the
        user, as lists or tuples of arrays of any real dtype and byte order, or after unpickling). The buffer
        is float32 when coefs_[0] is, else float64."""
        flat = getattr(self, "_flat", None)
        params = list(self.coefs_) + list(self.intercepts_)
        if flat is not None and all(getattr(p, "base", None) is flat for p in params):
            return
        params = [np.asarray(p) for p in params]
        n_layers = len(self.coefs_)
        layer_units = [params[0].shape[0]] + [c.shape[1] for c in params[:n_layers]]
        dtype = float_dtype(params[0].dtype) if params[0].dtype.kind == "f" else None
        self._bind(np.empty(n_params(layer_units), dtype=dtype or np.dtype(np.float64)), layer_units)
        for dst, src in zip(self.coefs_ + self.intercepts_, params):
            dst[...] = src

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_flat", None)  # coefs_ / intercepts_ are pickled; the buffer is rebuilt on demand
        state.pop("_state", None)
        return state

    # ------------------------------------------------------------------ data
    def _objective(self, X, T, sample_weight, reduction="mean", alpha=0.0):
        """The Objective of (X, T) at this network's sizes and dtype (T from _targets)."""
        return Objective(self._layer_units(), X, T, head=self._head(), reduction=reduction,
                         sample_weight=sample_weight, alpha=alpha, dtype=self._flat.dtype, n_threads=self.n_threads)

    def _stratify(self, Y):
        """The labels that early stopping's split keeps in proportion (None: a plain random split)."""
        return None

    def _score_targets(self, Y):
        """The held-out targets as ``_validation_score`` takes them."""
        return Y

    def _reported_scale(self):
        """The factor of the data term in the loss scikit-learn reports, against the core's mean loss (the module
        docstring): 1 but for the regressor with several outputs."""
        return 1.0

    def _reported_loss(self, objective, value, theta):
        """scikit-learn's reported loss at theta from the value of ``objective`` (the core's mean loss plus the
        penalty objective.alpha / 2 ||W||^2): the data term times _reported_scale, the penalty as it is."""
        scale = self._reported_scale()
        if scale == 1.0:
            return float(value)
        w = np.asarray(theta[:self._n_reg], dtype=np.float64)
        penalty = 0.5 * objective.alpha * float(np.dot(w, w))
        return (float(value) - penalty) * scale + penalty

    # ------------------------------------------------------------------ fitting
    def _initialize(self, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = layer_units[-1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        flat = np.empty(n_params(layer_units), dtype=dtype)
        self._bind(flat, layer_units)
        for i, (fan_in, fan_out) in enumerate(zip(layer_units[:-1], layer_units[1:])):  # sklearn's _init_coef order
            bound = np.sqrt(2.0 / (fan_in + fan_out))  # Glorot uniform, factor 2 for the logistic
            self.coefs_[i][...] = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            self.intercepts_[i][...] = self._random_state.uniform(-bound, bound, fan_out)
        self._best_flat = flat.copy()
        self._state = None
        self.validation_loss_curve_ = None
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _hidden_sizes(self):
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if np.any(np.array(hidden) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % hidden)
        return hidden

    def _fit(self, X, y, sample_weight=None, incremental=False):
        """fit and partial_fit: the data's side (validation, classes, the arrays or the Objective) is _InMemory's
        or, for dask arrays, _dask_estimator.OnDask's; the rest is shared."""
        self._validate_params()
        t0 = time.perf_counter()
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        if _dask_estimator.is_dask_array(X, y, sample_weight):
            data = _dask_estimator.OnDask(self, X, y, sample_weight, first_pass)
        else:
            data = _InMemory(self, X, y, sample_weight, incremental, first_pass)
        layer_units = [data.n_features] + hidden + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units, self._param_dtype(data.dtype))
        else:
            self._ensure_flat()
        self._n_threads = check_n_threads(self.n_threads)

        with data:
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(data, incremental)
            else:
                self._minimize(data.objective())

        if not np.all(np.isfinite(self._flat)):
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _minimize(self, objective):
        """The full-batch solvers on the flat parameters of ``objective`` (an mlpgrad.Objective, or
        mlpgrad.dask.Objective for dask arrays): lbfgs is L-BFGS-B on scikit-learn's (value, gradient) pairs
        (_lbfgs_fun), newton-cg is _NewtonCG's on the objective itself. One loss_curve_ entry per iteration, the
        loss scikit-learn reports."""
        flat = self._flat
        newton = _NewtonCG(objective, self.max_iter, self.tol) if self.solver == "newton-cg" else None
        bar = _progress(self.max_iter, "mlpgrad " + self.solver, self.verbose)
        self.loss_curve_ = []
        if newton is None:
            fun, method = self._lbfgs_fun(objective), dict(method="L-BFGS-B", options={
                "maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
            report = lambda value, theta: float(value)  # noqa: E731 - fun's values are already the reported ones
        else:
            fun, method = newton.fun, newton.method()
            report = lambda value, theta: self._reported_loss(objective, value, theta)  # noqa: E731

        def callback(intermediate_result):
            loss = report(intermediate_result.fun, intermediate_result.x)
            self.loss_curve_.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.6f}")
            elif self.verbose:
                print("Iteration %d, loss = %.8f" % (len(self.loss_curve_), loss))
            if newton is not None:
                newton.check(intermediate_result.x)

        try:
            # L-BFGS-B's vector operations call BLAS, whose worker threads keep spinning after each call and
            # take the cores from the native threads of the next loss evaluation: one BLAS thread (measured
            # on 2 cores, 200000 x 100 float64: 149 -> 100 ms per native call, 4.1 -> 2.4 s per fit). The
            # conjugate gradients of newton-cg are vector operations of the same kind.
            with threadpool_limits(limits=1, user_api="blas"):
                opt_res = scipy.optimize.minimize(fun, flat.astype(np.float64), jac=True, callback=callback,
                                                  **method)
        finally:
            if bar is not None:
                bar.close()
        if newton is None:
            self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        else:
            self.n_iter_ = newton.n_iter(opt_res)
        self.loss_ = report(opt_res.fun, opt_res.x)
        self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else self.loss_
        self.validation_scores_ = None
        self.best_validation_score_ = None
        self.validation_loss_curve_ = None
        flat[...] = opt_res.x

    def _lbfgs_fun(self, objective):
        """scipy's fun (jac=True) for lbfgs: the objective's gradient with scikit-learn's reported loss as the
        value, the pair scikit-learn's L-BFGS-B sees (the objective's own pair but for the regressor with several
        outputs, module docstring)."""
        if self._reported_scale() == 1.0:
            return objective.loss_and_grad

        def fun(theta):
            value, grad = objective.loss_and_grad(theta)
            return self._reported_loss(objective, value, theta), grad
        return fun

    def _make_state(self):
        """The optimizer's state, updated in place by the core: "m" is adam's first moment or sgd's velocity,
        "v" adam's second moment, "t" the number of steps taken (adam's bias correction)."""
        n = self._flat.shape[0]
        state = {"m": np.zeros(n, self._flat.dtype), "t": np.zeros(1, np.int64), "lr": float(self.learning_rate_init)}
        if self.solver == "adam":
            state["v"] = np.zeros(n, self._flat.dtype)
        return state

    def _trigger_stopping(self, msg):
        s = self._state
        if self.solver == "adam" or self.learning_rate != "adaptive":
            if self.verbose:
                self._say(msg + " Stopping.")
            return True
        if s["lr"] <= 1e-6:
            if self.verbose:
                self._say(msg + " Learning rate too small. Stopping.")
            return True
        s["lr"] /= 5.0
        if self.verbose:
            self._say(msg + " Setting learning rate to %f" % s["lr"])
        return False

    def _say(self, msg):
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.write(msg)
        else:
            print(msg)

    def _batch_size(self, n_samples):
        """scikit-learn's mini-batch size for n_samples rows (min(200, n) for "auto"; clipped, with its warning)."""
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
        return int(np.clip(self.batch_size, 1, n_samples))

    def _train_options(self, batch_size):
        """The keyword arguments of _native.train_options at the current learning rate."""
        return dict(solver=self.solver, batch_size=batch_size, alpha=float(self.alpha), lr=self._state["lr"],
                    beta1=float(self.beta_1), beta2=float(self.beta_2), eps=float(self.epsilon),
                    momentum=float(self.momentum), nesterov=bool(self.nesterovs_momentum),
                    loss_scale=self._reported_scale())

    def _resume_bookkeeping(self):
        """The stopping rule's state of adam / sgd, created where a later fit or partial_fit finds it missing or
        None: after a full-batch fit (lbfgs sets none of it; scikit-learn then raises AttributeError), after a fit
        without early stopping when early stopping is now on, or in a state set by hand. A first fit has it from
        _initialize, and values present are kept."""
        defaults = {"t_": 0, "loss_curve_": [], "_no_improvement_count": 0}
        if self.early_stopping:
            defaults.update(validation_scores_=[], best_validation_score_=-np.inf)
        else:
            defaults.update(best_loss_=np.inf)
        for name, value in defaults.items():
            if getattr(self, name, None) is None:
                setattr(self, name, value)
        if self.early_stopping and getattr(self, "validation_loss_curve_", None) is None:  # mlpgrad's own curve:
            self.validation_loss_curve_ = [np.nan] * len(self.validation_scores_)      # NaN for epochs it missed

    def _fit_stochastic(self, data, incremental):
        """adam / sgd: the epochs come from the data's side (``data.epochs()``: _Epochs in memory, the row blocks'
        _dask_estimator.Epochs on dask arrays); the bookkeeping between epochs (loss curve, stopping rules,
        learning-rate schedules, early stopping) is this loop's."""
        if not incremental or getattr(self, "_state", None) is None:
            self._state = self._make_state()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        self._resume_bookkeeping()
        epochs, validation = data.epochs()
        early_stopping = validation is not None
        X_val, y_val, sw_val, val_objective = validation if early_stopping else (None,) * 4
        batch_size = self._batch_size(epochs.n_samples)
        w = self._flat[:self._n_reg]
        sumsq = float(np.dot(w, w))
        n_epochs = 1 if incremental else self.max_iter
        self._bar = _progress(n_epochs, "mlpgrad " + self.solver, self.verbose and not incremental)
        try:
            self.n_iter_ = 0
            for it in range(self.max_iter):
                accumulated_loss, sumsq = epochs.run(self._train_options(batch_size), sumsq)
                self.n_iter_ += 1
                self.loss_ = accumulated_loss / epochs.n_samples
                self.t_ += epochs.n_samples
                self.loss_curve_.append(self.loss_)
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val, val_objective)
                self._report(early_stopping)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._state["lr"] = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t

                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0

                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
                                  "hasn't converged yet." % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
        if early_stopping and getattr(self, "_best_flat", None) is not None:  # None: no epoch improved on a
            self._flat[...] = self._best_flat                                    # best score set by hand

    def _report(self, early_stopping):
        """The progress bar's or the verbose line's epoch: the loss, and with early stopping the validation score
        and loss (read only then: a state set by hand, as scikit-learn's tests set it, need not have them)."""
        bar = self._bar
        info = {"loss": f"{self.loss_:.6f}"}
        if early_stopping and self.validation_scores_:
            info["val_score"] = f"{self.validation_scores_[-1]:.4f}"
            info["val_loss"] = f"{self.validation_loss_curve_[-1]:.6f}"
        if bar is not None:
            bar.update(1)
            bar.set_postfix(info)
        elif self.verbose:
            print("Iteration %d, " % self.n_iter_ + ", ".join(f"{k} = {v}" for k, v in info.items()))

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sw_val, val_objective):
        if early_stopping:
            output = self._forward(X_val)
            val_score = (np.nan if not np.isfinite(output).all()
                         else self._validation_score(output, y_val, sw_val))
            self.validation_scores_.append(val_score)
            self.validation_loss_curve_.append(val_objective.loss(self._flat) * self._reported_scale())
            if val_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if val_score > self.best_validation_score_:
                self.best_validation_score_ = val_score
                self._best_flat = self._flat.copy()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]


    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR natively; CSC and other formats converted once
        return tags

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError("partial_fit is only available for stochastic optimizers. %s is not stochastic."
                                 % self.solver)
        return True

    def _forward(self, X):
        """The network's output (n, k) for checked X, in the parameters' dtype."""
        self._ensure_flat()
        X = check_X(X, self._layer_units()[0], self._flat.dtype)  # dense, or canonical CSR
        return _native.forward(list(self.coefs_), list(self.intercepts_), X, self._head(),
                               check_n_threads(self.n_threads))

    def _check_X(self, X):
        check_is_fitted(self)
        return _validate_data(self, _as_numpy(X), accept_sparse=_SPARSE_FORMATS, dtype=(np.float64, np.float32), reset=False)

    def _input_gradient(self, X, Y):
        """dL/dX of each row of checked X for the (n, k) targets Y (as from _validate_input), reduction "sum"."""
        self._ensure_flat()
        sizes, dtype = self._layer_units(), self._flat.dtype
        data = _native.bind_data(X, self._targets(Y, dtype), None, self._head(), sizes[0], sizes[-1], dtype)
        _, _, dX = _native.loss_and_grad(list(self.coefs_), list(self.intercepts_), data, "sum", True, True,
                                         check_n_threads(self.n_threads))
        return dX


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier with logistic-sigmoid hidden layers, trained on mlpgrad's core.

    A drop-in for ``sklearn.neural_network.MLPClassifier(activation="logistic")``: the same parameters
    (those that apply; ``activation`` is always ``"logistic"``), defaults, objective, initialization and
    solvers, and the same fitted attributes. The output layer is a sigmoid for binary and multi-label
    targets and a softmax for multiclass targets, as in scikit-learn.

    ``verbose=True`` shows a progress bar (tqdm, if installed; otherwise one line per epoch) with the epoch,
    the loss and the validation score. ``mlpgrad.plot_loss_curve(est)`` draws the curves.
    ``input_gradient(X, y)`` returns dL/dX, the gradient of each sample's loss with respect to its input.

    Dask arrays chunked along rows (the "dask" extra): ``fit`` with solver "lbfgs" or "newton-cg" computes each
    iteration's loss, gradients (and Gauss-Newton products) on the cluster (``mlpgrad.dask``) and runs the optimizer
    on the client; ``fit`` with "adam" or "sgd" runs each epoch over the row blocks on their workers (mini-batches
    within blocks, block order shuffled per epoch from ``random_state``); ``partial_fit`` is one call per row
    block, in order; ``predict``, ``predict_proba`` and ``predict_log_proba`` return lazy dask arrays computed on
    the workers, ``score`` a float computed there. See ``mlpgrad._dask_estimator``.

    Parameters
    ----------
    hidden_layer_sizes, alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter, shuffle, \
random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, \
beta_2, epsilon, n_iter_no_change, max_fun
        scikit-learn's MLPClassifier's: the same names, defaults and meanings (see its documentation).
    solver : {"adam", "sgd", "lbfgs", "newton-cg"}, default="adam"
        scikit-learn's three, and "newton-cg": a full-batch Hessian-free Newton method on the Gauss-Newton
        curvature (module docstring); its fitted attributes are lbfgs's.
    dtype : None, "float32" or "float64", default=None
        The dtype of the parameters and of the computation. None follows X as scikit-learn does
        (float32 data, of either byte order, trains in float32, anything else in float64). float32 is about
        twice as fast.
    n_threads : None or int >= 1, default=None
        Threads of each native call (None: OpenMP's setting, ``OMP_NUM_THREADS``).

    Attributes
    ----------
    classes_, coefs_, intercepts_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, \
t_, n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        scikit-learn's: ``coefs_[l]`` (d_l, d_{l+1}) and ``intercepts_[l]`` are views of one flat parameter
        buffer in ``mlpgrad.pack`` order; ``feature_names_in_`` is set when X has column names (a pandas
        DataFrame).
    validation_loss_curve_ : list of float or None
        With ``early_stopping=True``, the mean log-loss (without the penalty) of the held-out validation
        set after each epoch; otherwise None.
    fit_time_ : float
        Seconds spent in the last ``fit`` / ``partial_fit``.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        At ``fit`` / ``partial_fit``, for a parameter outside its constraints (a ValueError, as in scikit-learn).

    Examples
    --------
    >>> import numpy as np
    >>> from mlpgrad import MLPClassifier
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 5)
    >>> y = np.array([0, 1, 1, 0] * 5)
    >>> clf = MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=500, random_state=0).fit(X, y)
    >>> clf.predict(X[:4])
    array([0, 1, 1, 0])
    """

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multilabel": True}

    # ------------------------------------------------------------------ targets
    def _validate_input(self, X, y, incremental, reset):
        """scikit-learn's validation; the classes (a new label binarizer on a first fit, else y's classes checked
        against ``classes_``); returns X and the binarized targets (n, k) as bools."""
        X, y = self._validate_labels(X, y, reset)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                     f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            else:
                self._check_known_classes(classes)
        Y = self._label_binarizer.transform(y).astype(bool)
        return X, Y.reshape(len(Y), -1)

    def _validate_labels(self, X, y, reset):
        """scikit-learn's validation of X and the labels y (rows matching X); a column vector y raveled."""
        X, y = _validate_data(self, _as_numpy(X), _as_numpy(y), accept_sparse=_SPARSE_FORMATS, multi_output=True,
                              dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _check_known_classes(self, classes):
        """Every class of y (``unique_labels(y)``) one of ``classes_`` (partial_fit's rule, scikit-learn's message):
        the label binarizer would give an unknown label a row of zeros."""
        if len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                             f"'y' has {classes}.")

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _head(self):
        return "softmax" if self.out_activation_ == "softmax" else "sigmoid"

    def _targets(self, Y, dtype):
        """The binarized targets as the core takes them: integer labels (softmax) or (n, k) floats."""
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(np.argmax(Y, axis=1), dtype=np.int64)
        return np.ascontiguousarray(Y, dtype=dtype)

    def _stratify(self, Y):
        return Y if self.n_outputs_ == 1 else None

    def _score_targets(self, Y):
        return self._label_binarizer.inverse_transform(Y)

    def _validation_score(self, proba, y_val, sample_weight):
        return accuracy_score(y_val, self._decode(proba), sample_weight=sample_weight)

    def _decode(self, proba):
        if self.n_outputs_ == 1:
            proba = proba.ravel()
        return self._label_binarizer.inverse_transform(proba)

    # ------------------------------------------------------------------ public API
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> "MLPClassifier":
        """Fit the model to X (n_samples, n_features) and y (labels, or a label indicator matrix).

        Dask arrays X, y (and sample_weight) chunked along rows, with the same row chunks: every row block is
        converted and checked once on its worker and kept there for the fit. Solvers "lbfgs" and "newton-cg": each
        iteration's loss and gradients (and Gauss-Newton products) are computed on the cluster by ``mlpgrad.dask``,
        the optimizer runs on the client. Solvers "adam" and "sgd": each epoch visits the non-empty row blocks in
        an order drawn from ``random_state`` (in order with ``shuffle=False``) and takes the in-memory epoch's
        mini-batch steps within each block (``batch_size`` rows, the block's last batch shorter, its rows
        reshuffled from the same random state) on the block's worker; the parameters and the optimizer's state go
        from block to block, the data stay put. With one block the steps are the in-memory fit's; with several,
        a fixed ``random_state`` gives the same fit every time. ``early_stopping=True`` is not supported there.
        See ``mlpgrad._dask_estimator``.

        Parameters
        ----------
        X : array_like, pandas DataFrame or dask array
            (n_samples, n_features), real; arrays of other libraries through DLPack without a copy.
        y : array_like
            Class labels (n_samples,), or a label indicator matrix (n_samples, n_classes) for multi-label targets.
        sample_weight : array_like or None, default=None
            (n_samples,) weights >= 0, as in scikit-learn >= 1.7.

        Returns
        -------
        MLPClassifier
            self, fitted.

        Raises
        ------
        ValueError
            Invalid parameters or data (scikit-learn's validation: NaN, a single class, wrong shapes...), or
            non-finite parameters after training ("Solver produced non-finite parameter weights").

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPClassifier
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        >>> clf = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> clf.n_iter_ > 0
        True
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike] = None,
                    classes: Optional[ArrayLike] = None) -> "MLPClassifier":
        """One epoch over (X, y). ``classes`` is required on the first call. Dask arrays chunked along rows: the
        same as one call per row block, in order (see ``mlpgrad._dask_estimator``).

        Only for the stochastic solvers ("adam", "sgd"): with the others the method is absent (AttributeError), as in
        scikit-learn.

        Parameters
        ----------
        X, y, sample_weight
            As in :meth:`fit`.
        classes : array_like or None, default=None
            All the classes, on the first call (not needed for multi-label targets).

        Returns
        -------
        MLPClassifier
            self.

        Raises
        ------
        ValueError
            Invalid parameters or data, classes not in ``classes_``, or ``early_stopping=True``.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPClassifier
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        >>> clf = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
        >>> clf.partial_fit(X, y, classes=[0, 1]).partial_fit(X, y).n_iter_
        1
        """
        self._validate_params()
        if _dask_estimator.is_dask_array(X, y, sample_weight):
            return _dask_estimator.partial_fit(self, X, y, sample_weight, classes=classes)
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted classes (or label indicator rows for multi-label targets). For a dask array X chunked along
        rows: a lazy dask array with X's row chunks, computed on the workers (``_dask_estimator.predict``).

        Parameters
        ----------
        X : array_like or pandas DataFrame
            (n_samples, n_features); a DataFrame's column names are checked against ``feature_names_in_``.

        Returns
        -------
        ndarray
            (n_samples,) labels from ``classes_``, or (n_samples, n_classes) indicator rows.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            X with another number of features or other column names than at fit.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPClassifier
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        >>> clf = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> clf.predict(X)
        array([0, 0, 1, 1])
        """
        if _dask_estimator.is_dask_array(X):
            return _dask_estimator.predict(self, "predict", X)
        return self._decode(self._forward(self._check_X(X)))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns ordered as ``classes_``. For a dask array X: a lazy
        dask array, as ``predict``.

        Parameters
        ----------
        X : array_like or pandas DataFrame
            As in :meth:`predict`.

        Returns
        -------
        ndarray
            (n_samples, n_classes) in the parameters' dtype; binary targets give the two columns 1 - p, p.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPClassifier
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        >>> clf = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> clf.predict_proba(X).shape
        (4, 2)
        """
        if _dask_estimator.is_dask_array(X):
            return _dask_estimator.predict(self, "predict_proba", X)
        proba = self._forward(self._check_X(X))
        if self.n_outputs_ == 1:
            p = proba.ravel()
            return np.vstack([1 - p, p]).T
        return proba

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """log(predict_proba(X)). For a dask array X: a lazy dask array, as ``predict``.

        Parameters
        ----------
        X : array_like or pandas DataFrame
            As in :meth:`predict`.

        Returns
        -------
        ndarray
            (n_samples, n_classes); -inf where a probability is 0.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPClassifier
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        >>> clf = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> bool(np.all(clf.predict_log_proba(X) <= 0))
        True
        """
        if _dask_estimator.is_dask_array(X):
            return _dask_estimator.predict(self, "predict_log_proba", X)
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
        """Mean accuracy of ``predict(X)`` against y, weighted by sample_weight (scikit-learn's
        ``ClassifierMixin.score``: subset accuracy for multi-label targets), as a float.

        Dask arrays X, y (and sample_weight) with the same row chunks: also a Python float, computed on the
        workers (one task per row block: its predictions and its weighted count of correct rows; the counts are
        added on the cluster and only the total reaches the client; ``_dask_estimator.score``).

        Parameters
        ----------
        X : array_like, pandas DataFrame or dask array
            As in :meth:`predict`.
        y : array_like or dask array
            The true labels (or indicator rows).
        sample_weight : array_like, dask array or None, default=None
            (n_samples,) weights.

        Returns
        -------
        float
            The (weighted) fraction of rows predicted right.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPClassifier
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        >>> clf = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> clf.score(X, y)
        1.0
        """
        if _dask_estimator.is_dask_array(X, y, sample_weight):
            return _dask_estimator.score(self, X, y, sample_weight)
        return float(super().score(X, y, sample_weight=sample_weight))

    def input_gradient(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """dL/dX (n_samples, n_features): row i is the gradient of sample i's log-loss (without the penalty)
        with respect to its features x_i, at the fitted parameters. Dense for a sparse X. For dask arrays X and y
        chunked along rows: a lazy dask array with X's row chunks, computed on the workers.

        Parameters
        ----------
        X : array_like or pandas DataFrame
            As in :meth:`predict`.
        y : array_like
            Labels as given to ``fit``.

        Returns
        -------
        ndarray
            (n_samples, n_features), the parameters' dtype.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            As :meth:`predict`, or labels not in ``classes_``.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPClassifier
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
        >>> clf = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> clf.input_gradient(X, y).shape
        (4, 1)
        """
        if _dask_estimator.is_dask_array(X, y):
            return _dask_estimator.input_gradient(self, X, y)
        check_is_fitted(self)
        X, y = self._validate_labels(X, y, reset=False)
        self._check_known_classes(unique_labels(y))
        Y = self._label_binarizer.transform(y)
        return self._input_gradient(X, Y.reshape(len(Y), -1))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor with logistic-sigmoid hidden layers, trained on mlpgrad's core.

    A drop-in for ``sklearn.neural_network.MLPRegressor(activation="logistic")``: the same parameters (those that
    apply; ``activation`` is always ``"logistic"``), defaults, objective, initialization and solvers, and the same
    fitted attributes. The output layer is the identity (``out_activation_ = "identity"``), the loss the squared
    error; y is (n_samples,) or (n_samples, n_outputs), and ``predict`` returns (n_samples,) for one output, as in
    scikit-learn. ``score`` is the coefficient of determination R^2 (``sklearn.metrics.r2_score``, the outputs'
    plain average), which is also early stopping's validation score.

    For several outputs, scikit-learn reports (``loss_``, ``loss_curve_``) the squared error averaged over the
    outputs while its steps follow the gradient of the sum over them; this estimator does the same, so that both
    take the same steps (module docstring).

    Everything else is as in :class:`MLPClassifier`: the progress bar (``verbose``), ``mlpgrad.plot_loss_curve``,
    ``input_gradient``, ``newton-cg``, ``dtype``, ``n_threads``, DLPack and pandas input, and dask arrays chunked
    along rows (``fit``, ``partial_fit``, lazy ``predict`` and ``score`` on the workers; see
    ``mlpgrad._dask_estimator``; not adam / sgd with several outputs and ``alpha > 0``).

    Parameters
    ----------
    loss : {"squared_error"}, default="squared_error"
        scikit-learn's; its other loss, "poisson" (an exponential output), has no head in mlpgrad's core.
    hidden_layer_sizes, alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter, shuffle, \
random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, \
beta_2, epsilon, n_iter_no_change, max_fun
        scikit-learn's MLPRegressor's: the same names, defaults and meanings (see its documentation).
    solver : {"adam", "sgd", "lbfgs", "newton-cg"}, default="adam"
        As in :class:`MLPClassifier`.
    dtype : None, "float32" or "float64", default=None
        As in :class:`MLPClassifier`.
    n_threads : None or int >= 1, default=None
        Threads of each native call (None: OpenMP's setting, ``OMP_NUM_THREADS``).

    Attributes
    ----------
    coefs_, intercepts_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_, \
n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        scikit-learn's, as in :class:`MLPClassifier`; ``validation_scores_`` are R^2 values.
    validation_loss_curve_ : list of float or None
        With ``early_stopping=True``, the squared error of the held-out validation set after each epoch (without
        the penalty, averaged over samples and outputs as ``loss_curve_``); otherwise None.
    fit_time_ : float
        Seconds spent in the last ``fit`` / ``partial_fit``.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        At ``fit`` / ``partial_fit``, for a parameter outside its constraints (a ValueError, as in scikit-learn).

    Examples
    --------
    >>> import numpy as np
    >>> from mlpgrad import MLPRegressor
    >>> X = np.linspace(0.0, 1.0, 20).reshape(-1, 1)
    >>> y = np.sin(3.0 * X).ravel()
    >>> reg = MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=500, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    >>> reg.score(X, y) > 0.99
    True
    """

    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints, "loss": [StrOptions({"squared_error"})]}

    def __init__(self, loss: str = "squared_error", hidden_layer_sizes: Union[int, Sequence[int]] = (100,), *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: Union[int, str] = "auto",
                 learning_rate: str = "constant", learning_rate_init: float = 0.001, power_t: float = 0.5,
                 max_iter: int = 200, shuffle: bool = True,
                 random_state: Union[None, int, np.random.RandomState] = None, tol: float = 1e-4,
                 verbose: Union[bool, int] = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False, validation_fraction: float = 0.1,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8, n_iter_no_change: float = 10,
                 max_fun: int = 15000, dtype: Union[None, str, type, np.dtype] = None,
                 n_threads: Optional[int] = None) -> None:
        # scikit-learn's order: loss, then hidden_layer_sizes, are its positional parameters
        super().__init__(hidden_layer_sizes, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
                         early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         dtype=dtype, n_threads=n_threads)
        self.loss = loss

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    # ------------------------------------------------------------------ targets
    def _validate_input(self, X, y, incremental, reset):
        """scikit-learn's validation (real, finite y); returns X and the targets as an (n, k) array, k the number
        of outputs, which must be the fitted one's when training continues."""
        y = _as_numpy(y)
        if getattr(y, "ndim", 0) > 2:  # arrays; scikit-learn's message would not name y
            raise ValueError(f"y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got shape {y.shape}")
        X, y = _validate_data(self, _as_numpy(X), y, accept_sparse=_SPARSE_FORMATS, multi_output=True,
                              y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        self._check_real(y.dtype)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y = y.reshape(len(y), -1)
        if not reset and getattr(self, "coefs_", None) is not None:
            self._check_n_outputs(Y.shape[1])
        return X, Y

    @staticmethod
    def _check_real(dtype):
        """The targets' dtype is real (bool, integer or floating)."""
        if dtype.kind not in "biuf":
            raise ValueError(f"y must hold real numbers (the regression targets), got dtype {dtype}")

    def _check_n_outputs(self, k):
        fitted = np.shape(self.coefs_[-1])[-1]
        if k != fitted:
            raise ValueError(f"y has {k} output(s), but {type(self).__name__} was fitted with {fitted}: continuing "
                             "a fit (warm_start or partial_fit) needs targets of the same width")

    def _out_activation(self):
        return "identity"

    def _head(self):
        return "identity"

    def _targets(self, Y, dtype):
        return np.ascontiguousarray(Y, dtype=dtype)

    def _validation_score(self, output, y_val, sample_weight):
        return r2_score(y_val, output, sample_weight=sample_weight)

    def _reported_scale(self):
        return 1.0 / self.n_outputs_

    # ------------------------------------------------------------------ public API
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> "MLPRegressor":
        """Fit the model to X (n_samples, n_features) and the targets y.

        Dask arrays X, y (and sample_weight) chunked along rows, with the same row chunks: as
        :meth:`MLPClassifier.fit` (the blocks bound once on their workers; lbfgs and newton-cg evaluate on the
        cluster, adam and sgd run their epochs block by block on the workers), but for adam and sgd with several
        outputs and ``alpha > 0``, which raise ValueError there.

        Parameters
        ----------
        X : array_like, pandas DataFrame or dask array
            (n_samples, n_features), real; arrays of other libraries through DLPack without a copy.
        y : array_like or dask array
            (n_samples,) or (n_samples, n_outputs) real targets.
        sample_weight : array_like, dask array or None, default=None
            (n_samples,) weights >= 0, as in scikit-learn >= 1.7.

        Returns
        -------
        MLPRegressor
            self, fitted.

        Raises
        ------
        ValueError
            Invalid parameters or data (scikit-learn's validation: NaN or infinity in X or y, wrong shapes...), y
            of another width than the fitted one's with ``warm_start=True``, or non-finite parameters after
            training ("Solver produced non-finite parameter weights").

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPRegressor
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
        >>> reg = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> reg.n_outputs_, reg.out_activation_
        (2, 'identity')
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> "MLPRegressor":
        """One epoch over (X, y). Dask arrays chunked along rows: the same as one call per row block, in order (see
        ``mlpgrad._dask_estimator``).

        Only for the stochastic solvers ("adam", "sgd"): with the others the method is absent (AttributeError), as
        in MLPClassifier (scikit-learn's MLPRegressor has it for every solver, and runs a whole lbfgs fit).

        Parameters
        ----------
        X, y, sample_weight
            As in :meth:`fit`.

        Returns
        -------
        MLPRegressor
            self.

        Raises
        ------
        ValueError
            Invalid parameters or data, y of another width than the fitted one's, or ``early_stopping=True``.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPRegressor
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0.0, 0.5, 1.0, 1.5])
        >>> reg = MLPRegressor(hidden_layer_sizes=(4,), random_state=0)
        >>> reg.partial_fit(X, y).partial_fit(X, y).n_iter_
        1
        """
        self._validate_params()
        if _dask_estimator.is_dask_array(X, y, sample_weight):
            return _dask_estimator.partial_fit(self, X, y, sample_weight)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The network's outputs. For a dask array X chunked along rows: a lazy dask array with X's row chunks,
        computed on the workers (``_dask_estimator.predict``).

        Parameters
        ----------
        X : array_like, pandas DataFrame or dask array
            (n_samples, n_features); a DataFrame's column names are checked against ``feature_names_in_``.

        Returns
        -------
        ndarray
            (n_samples,) with one output, else (n_samples, n_outputs), in the parameters' dtype.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            X with another number of features or other column names than at fit.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPRegressor
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0.0, 0.5, 1.0, 1.5])
        >>> reg = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> reg.predict(X).shape
        (4,)
        """
        if _dask_estimator.is_dask_array(X):
            return _dask_estimator.predict(self, "predict", X)
        output = self._forward(self._check_X(X))
        return output.ravel() if output.shape[1] == 1 else output

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
        """The coefficient of determination R^2 of ``predict(X)`` against y, weighted by sample_weight
        (scikit-learn's ``RegressorMixin.score``: ``r2_score``, several outputs averaged uniformly), as a float.

        Dask arrays X, y (and sample_weight) with the same row chunks: also a Python float, computed on the
        workers (one task per row block: its weighted sums of the targets and of the squared residuals, merged on
        the cluster; ``_dask_estimator.score``).

        Parameters
        ----------
        X : array_like, pandas DataFrame or dask array
            As in :meth:`predict`.
        y : array_like or dask array
            The true targets, (n_samples,) or (n_samples, n_outputs).
        sample_weight : array_like, dask array or None, default=None
            (n_samples,) weights.

        Returns
        -------
        float
            1 - (sum of squared residuals) / (sum of squared deviations from the mean), per output, averaged; 1.0
            is a perfect fit.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            As :meth:`predict`, or y of another shape than the predictions'.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPRegressor
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0.0, 0.5, 1.0, 1.5])
        >>> reg = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> reg.score(X, y) > 0.9
        True
        """
        if _dask_estimator.is_dask_array(X, y, sample_weight):
            return _dask_estimator.score(self, X, y, sample_weight)
        return float(super().score(X, y, sample_weight=sample_weight))

    def input_gradient(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """dL/dX (n_samples, n_features): row i is the gradient of sample i's squared error 1/2 sum_j (z_ij -
        y_ij)^2 (summed over the outputs, without the penalty) with respect to its features x_i, at the fitted
        parameters. Dense for a sparse X. For dask arrays X and y chunked along rows: a lazy dask array with X's
        row chunks, computed on the workers.

        Parameters
        ----------
        X : array_like or pandas DataFrame
            As in :meth:`predict`.
        y : array_like
            (n_samples,) or (n_samples, n_outputs) real targets.

        Returns
        -------
        ndarray
            (n_samples, n_features), the parameters' dtype.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            As :meth:`predict`, or y of another shape than (n_samples, n_outputs_), or not finite.

        Examples
        --------
        >>> import numpy as np
        >>> from mlpgrad import MLPRegressor
        >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0.0, 0.5, 1.0, 1.5])
        >>> reg = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
        >>> reg.input_gradient(X, y).shape
        (4, 1)
        """
        if _dask_estimator.is_dask_array(X, y):
            return _dask_estimator.input_gradient(self, X, y)
        X = self._check_X(X)
        Y = np.asarray(_as_numpy(y))
        n, k = X.shape[0], self.n_outputs_
        self._check_real(Y.dtype)
        if Y.shape != (n, k) and not (k == 1 and Y.shape == (n,)):
            raise ValueError(f"y must have shape ({n}, {k})" + (f" or ({n},)" if k == 1 else "")
                             + f" (X's rows, the fitted outputs), got shape {Y.shape}")
        return self._input_gradient(X, Y.reshape(n, k))


class _InMemory:
    """The data's side of a fit on arrays in memory: the estimator's validation (``_validate_input``, which also
    sets the classes of a classifier) and its n_outputs_, then the arrays in the parameters' dtype or the lbfgs
    Objective."""

    def __init__(self, est, X, y, sample_weight, incremental, first_pass):
        self.est = est
        X, Y = est._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(_as_numpy(sample_weight), X)
        est.n_outputs_ = Y.shape[1]
        self.X, self.Y, self.sample_weight = X, Y, sample_weight
        self.n_features, self.dtype = X.shape[1], X.dtype

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def epochs(self):
        """adam / sgd's epochs (_Epochs) and, with early_stopping, the held-out validation set (X, y as the
        validation score takes it, sample_weight, its Objective), else None: scikit-learn's split, drawn from the
        estimator's random state."""
        est = self.est
        X, Y, sw = self.arrays(est._flat.dtype)
        if not est.early_stopping:
            return _Epochs(est, X, Y, sw), None
        stratify = est._stratify(Y)
        if sw is None:
            X, X_val, Y, Y_val = train_test_split(X, Y, random_state=est._random_state,
                                                  test_size=est.validation_fraction, stratify=stratify)
            sw_val = None
        else:
            X, X_val, Y, Y_val, sw, sw_val = train_test_split(X, Y, sw, random_state=est._random_state,
                                                              test_size=est.validation_fraction, stratify=stratify)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                             "your dataset.")
        X, X_val = _rows_of(X, X.dtype), _rows_of(X_val, X_val.dtype)
        val_objective = est._objective(X_val, est._targets(Y_val, est._flat.dtype), sw_val)
        return _Epochs(est, X, Y, sw), (X_val, est._score_targets(Y_val), sw_val, val_objective)

    def arrays(self, dtype):
        """(X C-ordered, the targets Y (n, k) of _validate_input, sample weights) in the parameters' dtype."""
        sw = self.sample_weight
        return (_rows_of(self.X, dtype), self.Y,
                None if sw is None else np.ascontiguousarray(sw, dtype=dtype))

    def objective(self):
        """scikit-learn's full-batch objective as an Objective: its penalty alpha / 2 ||W||^2 / sum(w) is the
        Objective's with alpha / sum(w)."""
        est = self.est
        X, Y, sw = self.arrays(est._flat.dtype)
        sw_sum = float(X.shape[0]) if sw is None else float(np.sum(sw, dtype=np.float64))
        return est._objective(X, est._targets(Y, est._flat.dtype), sw, alpha=est.alpha / sw_sum)


def _epoch(flat, state, sizes, data, order, random_state, options, sumsq, n_threads):
    """One epoch of adam / sgd over the bound batch ``data``, in place on the flat parameters and the optimizer's
    state ("m", "v", "t" of _BaseMLP._make_state), in one native call (_native.train_epoch, cpp/src/train.cpp)
    that gathers each mini-batch (sklearn.utils.gen_batches' slices of the rows, in the order ``order``), computes
    its loss and gradients and applies the step in one fused pass. ``order`` (int64 row indices) is reshuffled
    from random_state first; None visits the rows in order. ``options``: _BaseMLP._train_options.
    Returns (summed loss, new sumsq of the weights, the order used)."""
    if order is not None:
        order = _shuffled(order, random_state)
    grad = np.empty_like(flat)
    loss, sumsq, _ = _native.train_epoch(flat, grad, state["m"], state.get("v"), state["t"], sizes, data, order,
                                         _native.train_options(**options), sumsq, n_threads)
    return loss, sumsq, order


class _Epochs:
    """adam / sgd's epochs over arrays in memory (_BaseMLP._fit_stochastic runs them): the rows bound once, their
    order reshuffled before each epoch when ``shuffle`` (each reshuffle applied to the last order, as
    scikit-learn's)."""

    def __init__(self, est, X, Y, sample_weight):
        sizes, dtype = est._layer_units(), est._flat.dtype
        self.est, self.sizes, self.n_samples = est, sizes, X.shape[0]
        self.data = _native.bind_data(X, est._targets(Y, dtype), sample_weight, est._head(), sizes[0], sizes[-1], dtype)
        self.order = np.arange(self.n_samples, dtype=np.int64) if est.shuffle else None

    def run(self, options, sumsq):
        """One epoch on the estimator's parameters and state: (the summed loss scikit-learn reports, new sumsq)."""
        est = self.est
        loss, sumsq, self.order = _epoch(est._flat, est._state, self.sizes, self.data, self.order,
                                         est._random_state, options, sumsq, est._n_threads)
        return loss, sumsq
