"""The one module that talks to the extension ``mlpgrad._core``: the head, reduction and solver codes, the
batch bound once (converted by ``_checks``, scanned natively), and the calls. Arguments arrive checked;
what the native scan finds is raised here with the messages of ``_checks``."""

from __future__ import annotations

import numpy as np

from . import _core
from ._checks import (SAMPLE_WEIGHT_MESSAGE, TARGET_MESSAGE, LabelRangeError, check_data, is_sparse,
                      label_range_message)

HEADS = {"sigmoid": _core.Head.sigmoid, "softmax": _core.Head.softmax, "identity": _core.Head.identity}
REDUCTIONS = {"sum": _core.Reduction.sum, "mean": _core.Reduction.mean}
SOLVERS = {"adam": _core.Solver.adam, "sgd": _core.Solver.sgd}
FAULT_NONE, FAULT_LABEL_RANGE = _core.Fault.none, _core.Fault.label_range


def core_X(X):
    """A checked X (``_checks.check_X``) as the core takes it: the array itself, or for a canonical CSR matrix the
    tuple (values, indices, indptr, n_cols) of its arrays (values of the dtype, int64 indices and indptr)."""
    return (X.data, X.indices, X.indptr, X.shape[1]) if is_sparse(X) else X


def core_X_values(X):
    """The values of an X as the core takes it (``core_X``'s result, or a bound batch's ``Data.X``): the dense
    array, or a sparse X's stored values (its unstored zeros are finite)."""
    return X[0] if isinstance(X, tuple) else X


def bind_data(X, y, sample_weight, head: str, d0: int, k: int, dtype, check: bool = True,
              own: bool = False) -> "_core.Data":
    """X, y and sample_weight checked and converted (``_checks.check_data``), then scanned once natively
    (labels in [0, k), targets, weights; with the GIL released): a batch the calls below take as it is.
    Arrays already in the dtype and C order are referenced, not copied (a sparse X's arrays too, when it already
    is a canonical CSR matrix of the dtype with int64 indices); ``own=True`` (a batch kept for many calls) copies
    the labels, targets and weights, and a sparse X's indices and indptr, so that the caller cannot change them
    after the scan.
    ``check=False`` returns a batch whose values broke a rule too (``fault_message`` says which); the core
    refuses to run it."""
    X, labels, targets, w = check_data(X, y, sample_weight, head, d0, k, dtype)
    data = _core.Data(core_X(X), labels, targets, w, HEADS[head], k, np.dtype(dtype).itemsize == 4, own)
    if check and not data.ok:
        raise fault_error(data.fault, head, k, data.label_range)
    return data


def fault_error(fault, head: str, k: int, label_range) -> ValueError:
    """The exception of the rule a scan found broken (LabelRangeError for a label out of range)."""
    kind = LabelRangeError if fault == _core.Fault.label_range else ValueError
    return kind(fault_message(fault, head, k, label_range))


def fault_message(fault, head: str, k: int, label_range) -> str:
    """The message of the rule a scan found broken (None for none)."""
    if fault == _core.Fault.none:
        return None
    if fault == _core.Fault.label_range:
        return label_range_message(k, *label_range)
    if fault == _core.Fault.target_range:
        return TARGET_MESSAGE[head]
    return SAMPLE_WEIGHT_MESSAGE


def forward(weights, biases, X, head: str, n_threads: int):
    """(N, k) probabilities; weights, biases and X checked and of one dtype (X dense or a canonical CSR matrix)."""
    return _core.forward(weights, biases, core_X(X), HEADS[head], X.dtype.itemsize == 4, n_threads)


def loss_and_grad(weights, biases, data, reduction: str, want_grad: bool, input_grad: bool, n_threads: int,
                  out=None):
    """(loss, flat gradient (P,) or None, dL/dX or None) for the parameters as lists."""
    return _core.loss_and_grad(weights, biases, data, REDUCTIONS[reduction], want_grad, input_grad, n_threads, out)


def loss_and_grad_flat(theta, sizes, data, reduction: str, want_grad: bool, input_grad: bool, n_threads: int,
                       out=None):
    """The same for the parameters as one flat vector theta (P,) of the data's dtype."""
    return _core.loss_and_grad_flat(theta, sizes, data, REDUCTIONS[reduction], want_grad, input_grad, n_threads,
                                    out)


def train_options(solver: str, batch_size: int, alpha: float, lr: float, beta1: float, beta2: float, eps: float,
                  momentum: float, nesterov: bool, loss_scale: float = 1.0) -> "_core.TrainOptions":
    """train_epoch's settings; loss_scale: the factor of each batch's data loss (not its penalty) in the epoch's
    loss sum."""
    o = _core.TrainOptions()
    o.solver, o.batch_size, o.alpha, o.lr = SOLVERS[solver], batch_size, alpha, lr
    o.beta1, o.beta2, o.eps, o.momentum, o.nesterov = beta1, beta2, eps, momentum, nesterov
    o.loss_scale = loss_scale
    return o


def train_epoch(params, grad, state1, state2, t, sizes, data, order, options, sumsq: float, n_threads: int):
    """One epoch of mini-batch adam / sgd in place (mlpgrad/train.hpp): (loss_sum, sumsq, steps)."""
    return _core.train_epoch(params, grad, state1, state2, t, sizes, data, order, options, sumsq, n_threads)


def build_info() -> dict:
    return dict(_core.build_info())


def fma_peak(float32: bool, n_threads: int) -> float:
    """GFLOP/s of the active SIMD level's register-only FMA loop on n_threads threads (0: OpenMP's default):
    the machine's peak for the bench (mlpgrad/peak.hpp)."""
    return _core.fma_peak(float32, n_threads)


def set_simd(level: str) -> str:
    """Use this SIMD level (clamped to the best the CPU has); returns the level in use."""
    return _core.set_simd(level)


SCHEDULES = {"automatic": _core.Schedule.automatic, "chunked": _core.Schedule.chunked,
             "layered": _core.Schedule.layered}


def set_schedule(name: str) -> str:
    """Force the engine's schedule for the calls that follow, for tests and experiments ("chunked", "layered",
    or "automatic": the engine's own choice, the narrow engine included); returns the one forced before.
    MLPGRAD_SCHEDULE sets it at load."""
    previous = _core.schedule().name
    _core.set_schedule(SCHEDULES[name])
    return previous


PER_SAMPLE_OPS = {"norms": _core.PerSampleOp.norms, "clipped": _core.PerSampleOp.clipped,
                  "grads": _core.PerSampleOp.grads, "dot": _core.PerSampleOp.dot, "sumsq": _core.PerSampleOp.sumsq}


def per_sample(theta, sizes, data, reduction: str, op: str, n_threads: int, *, max_norm=(), V=None,
               norms: bool = False, layer_norms: bool = False, out=None):
    """One per-sample request (mlpgrad/per_sample.hpp) for theta (P,): (loss, result, norms, layer_norms), result
    the gradient (P,) for "clipped" and "sumsq", the (N, P) rows for "grads" (into out when given), the (N, m)
    dot products with V (P, m) for "dot"; the norms (N,) and layer norms (N, L) when asked for."""
    return _core.per_sample(theta, sizes, data, REDUCTIONS[reduction], PER_SAMPLE_OPS[op], list(max_norm), V,
                            norms, layer_norms, n_threads, out)


def grad_gram(theta, sizes, data, data2, n_threads: int):
    """(N, N2) dot products of the per-sample gradients of data's rows with those of data2's (None: data's)."""
    return _core.grad_gram(theta, sizes, data, data2, n_threads)


CURVATURE_OPS = {"hvp": _core.CurvatureOp.hvp, "ggn_vp": _core.CurvatureOp.ggn_vp,
                 "ggn_diag": _core.CurvatureOp.ggn_diag}


def curvature(theta, sizes, data, reduction: str, op: str, n_threads: int, *, V=None):
    """One curvature request (mlpgrad/curvature.hpp) for theta (P,): H V or G V (P, m) for V (P, m) ("hvp",
    "ggn_vp"), or diag(G) (P,) ("ggn_diag")."""
    return _core.curvature(theta, sizes, data, REDUCTIONS[reduction], CURVATURE_OPS[op], V, n_threads)
