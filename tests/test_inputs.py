"""Argument checking and the documented input behaviours, for the native API and the reference alike.

Bad inputs raise TypeError (wrong kind of object or dtype) or ValueError (wrong shape or value) with a
message naming the argument (``weights[1]``, ``biases[0]``, ``X``, ``y``, ``sample_weight``, ``head``,
``reduction``, ``n_threads``); the rules are those of ``mlpgrad/_checks.py``, a sparse X's (scipy.sparse, any
format) those of a dense X with the same messages.  Then: N = 0, read-only
arrays, inputs never modified (bitwise), NaN in X.

The per-sample functions (issue 12), the curvature products (issue 13: hvp, ggn_vp, ggn_diag) and the
Objective's methods of both run the same battery: each data
rule on every function that takes the argument it breaks (``PS_ARGS``), the rules of X and y also on
grad_gram's second set (the messages naming X2 and y2), and the rules of their own arguments (``BAD_PS``:
max_norm, V, X2 / y2 given alone, per_sample_grads' out=).  A call that raises leaves every argument bitwise
unchanged.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
from _problems import make_network, make_targets, rel_err

try:
    import scipy.sparse as sp
except ImportError:  # scipy is in the "test" extra; without it the cases of a sparse X are left out
    sp = None

IMPLS = {"native": mlpgrad, "reference": reference}
FUNCS = ("forward", "loss", "loss_and_grad")


class _ObjectiveAPI:
    """mlpgrad.Objective as the bad-input battery calls it: made from the problem's data (its rules and messages
    are the functional API's) and evaluated at the packed parameters (mlpgrad.pack checks those)."""
    forward = staticmethod(mlpgrad.forward)

    @staticmethod
    def _evaluate(method, weights, biases, X, y, n_threads=None, **kw):
        theta = mlpgrad.pack(weights, biases)
        sizes = [np.shape(weights[0])[0]] + [np.shape(W)[1] for W in weights]
        objective = mlpgrad.Objective(sizes, X, y, dtype=theta.dtype, n_threads=n_threads, **kw)
        return getattr(objective, method)(theta)

    @staticmethod
    def loss(*args, **kw):
        return _ObjectiveAPI._evaluate("loss", *args, **kw)

    @staticmethod
    def loss_and_grad(*args, **kw):
        return _ObjectiveAPI._evaluate("loss_and_grad", *args, **kw)


def _objective_method(name, *method_keys):
    """The Objective's per-sample method `name` called like the function of that name: the data's arguments go
    to the Objective, V and `method_keys` (per_layer, max_norm, out, X2, y2) to the method."""
    def method(weights, biases, X, y, *V, n_threads=None, **kw):
        method_kw = {key: kw.pop(key) for key in method_keys if key in kw}
        theta = mlpgrad.pack(weights, biases)
        sizes = [np.shape(weights[0])[0]] + [np.shape(W)[1] for W in weights]
        objective = mlpgrad.Objective(sizes, X, y, dtype=theta.dtype, n_threads=n_threads, **kw)
        return getattr(objective, name)(theta, *V, **method_kw)
    return staticmethod(method)


for _name, _keys in (("per_sample_grad_norms", ("per_layer",)), ("clipped_grad", ("max_norm",)),
                     ("per_sample_grads", ("out",)), ("grad_dot", ()), ("grad_gram", ("X2", "y2")),
                     ("sum_squared_grads", ()), ("hvp", ()), ("ggn_vp", ()), ("ggn_diag", ())):
    setattr(_ObjectiveAPI, _name, _objective_method(_name, *_keys))


BATTERY = {**IMPLS, "objective": _ObjectiveAPI}  # the implementations the bad-input battery runs on


# -- a small valid problem and a way to call any of the six functions on it ----------------------------

def base(head="softmax", dtype=np.float64, sizes=(3, 5, 2), n=4):
    """Valid arguments: a dict of weights, biases, X, y, head, reduction, sample_weight, and the per-sample
    functions' max_norm, V (P,), X2, y2 and out (None: their defaults)."""
    rng = np.random.default_rng(0)
    Ws, bs = make_network(list(sizes), dtype, rng)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = make_targets(head, "labels", n, sizes[-1], dtype, rng)
    P = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return dict(weights=Ws, biases=bs, X=X, y=y, head=head, reduction="sum", sample_weight=None, max_norm=1.0,
                V=np.linspace(-1.0, 1.0, P), X2=None, y2=None, out=None)


PS_FUNCS = ("per_sample_grad_norms", "clipped_grad", "per_sample_grads", "grad_dot", "grad_gram",
            "sum_squared_grads", "hvp", "ggn_vp", "ggn_diag")
V_FUNCS = ("grad_dot", "hvp", "ggn_vp")  # the functions taking V after y
# The arguments each per-sample function takes besides weights, biases, X, y and head (the Objective's methods
# take reduction and sample_weight too, through the Objective).
PS_ARGS = {"per_sample_grad_norms": (), "clipped_grad": ("max_norm", "reduction", "sample_weight"),
           "per_sample_grads": ("out",), "grad_dot": ("V",), "grad_gram": ("X2", "y2"),
           "sum_squared_grads": ("sample_weight",), "hvp": ("V", "reduction", "sample_weight"),
           "ggn_vp": ("V", "reduction", "sample_weight"), "ggn_diag": ("reduction", "sample_weight")}
SECOND_SET = "grad_gram[X2, y2]"  # grad_gram with the base X, y and the case's X, y as X2, y2


def takes(impl, func) -> set:
    """The keys of ``base()`` that ``impl.func`` reads."""
    keys = {"weights", "biases", "X", "y", "head"} | set(PS_ARGS[func])
    return keys | {"reduction", "sample_weight"} if impl == "objective" else keys


def call(impl, func, args, **extra):
    """Call ``impl.func`` with the arguments it takes from ``args`` (forward takes no y / reduction / weights;
    a per-sample function those of ``PS_ARGS``)."""
    mod = BATTERY[impl]
    if func == "forward":
        return mod.forward(args["weights"], args["biases"], args["X"], head=args["head"], **extra)
    if func == SECOND_SET:
        first = base(args["head"], sizes=[args["weights"][0].shape[0]] + [W.shape[1] for W in args["weights"]])
        args = dict(args, X=first["X"], y=first["y"], X2=args["X"], y2=args["y"])
        func = "grad_gram"
    if func in PS_FUNCS:
        keys = [key for key in takes(impl, func) - {"weights", "biases", "X", "y", "head", "V"}]
        V = (args["V"],) if func in V_FUNCS else ()
        return getattr(mod, func)(args["weights"], args["biases"], args["X"], args["y"], *V, head=args["head"],
                                  **{key: args[key] for key in keys}, **extra)
    kw = dict(head=args["head"], reduction=args["reduction"], sample_weight=args["sample_weight"], **extra)
    return getattr(mod, func)(args["weights"], args["biases"], args["X"], args["y"], **kw)


def _set(**changes):
    """A change to the base problem: keyword -> value, or -> function of the base value."""
    def apply(args):
        args = dict(args, weights=list(args["weights"]), biases=list(args["biases"]))
        for key, value in changes.items():
            args[key] = value(args) if callable(value) else value
        return args
    return apply


def _layer(key, i, value):
    """Replace element i of weights / biases; value may be a function of the original element."""
    def f(args):
        seq = list(args[key])
        seq[i] = value(seq[i]) if callable(value) else value
        return seq
    return f


W, B = "weights", "biases"
F64, F32 = np.float64, np.float32
ragged = [[1.0, 2.0], [3.0]]

# (id, mutation of the base softmax problem, exception, match, functions: "all" or "loss" = loss + loss_and_grad)
BAD = [
    # weights / biases as containers
    ("weights-None", _set(weights=None), TypeError, r"weights must be a list or tuple", "all"),
    ("weights-str", _set(weights="W"), TypeError, r"weights must be a list or tuple", "all"),
    ("weights-int", _set(weights=3), TypeError, r"weights must be a list or tuple", "all"),
    ("weights-dict", _set(weights=lambda a: dict(enumerate(a[W]))), TypeError, r"weights must be a list", "all"),
    ("weights-ndarray", _set(weights=lambda a: np.zeros((2, 3, 3))), TypeError, r"weights must be a list", "all"),
    ("weights-empty", _set(weights=[], biases=[]), ValueError, r"weights must hold at least one layer", "all"),
    ("biases-None", _set(biases=None), TypeError, r"biases must be a list or tuple", "all"),
    ("biases-str", _set(biases="b"), TypeError, r"biases must be a list or tuple", "all"),
    ("biases-int", _set(biases=0), TypeError, r"biases must be a list or tuple", "all"),
    ("biases-dict", _set(biases=lambda a: dict(enumerate(a[B]))), TypeError, r"biases must be a list", "all"),
    ("biases-too-few", _set(biases=lambda a: a[B][:1]), ValueError, r"biases must have one entry per layer", "all"),
    ("biases-too-many", _set(biases=lambda a: a[B] + [a[B][-1]]), ValueError, r"biases must have one entry", "all"),
    # one weight matrix
    ("W1-None", _set(weights=_layer(W, 1, None)), TypeError, r"weights\[1\] must be an array", "all"),
    ("W1-str", _set(weights=_layer(W, 1, "W")), TypeError, r"weights\[1\] must be an array", "all"),
    ("W1-dict", _set(weights=_layer(W, 1, {})), TypeError, r"weights\[1\] must be an array", "all"),
    ("W0-ragged", _set(weights=_layer(W, 0, ragged)), TypeError, r"weights\[0\] must be an array", "all"),
    ("W1-int-scalar", _set(weights=_layer(W, 1, 3)), TypeError, r"weights\[1\] must have dtype float32 or", "all"),
    ("W0-int", _set(weights=_layer(W, 0, lambda w: w.astype(np.int64))), TypeError,
     r"weights\[0\] must have dtype float32 or float64, got int64", "all"),
    ("W1-int32", _set(weights=_layer(W, 1, lambda w: w.astype(np.int32))), TypeError,
     r"weights\[1\] must have dtype", "all"),
    ("W1-bool", _set(weights=_layer(W, 1, lambda w: w > 0)), TypeError, r"weights\[1\] must have dtype", "all"),
    ("W1-complex", _set(weights=_layer(W, 1, lambda w: w.astype(np.complex128))), TypeError,
     r"weights\[1\] must have dtype", "all"),
    ("W1-float16", _set(weights=_layer(W, 1, lambda w: w.astype(np.float16))), TypeError,
     r"weights\[1\] must have dtype", "all"),
    ("W1-object", _set(weights=_layer(W, 1, lambda w: w.astype(object))), TypeError,
     r"weights\[1\] must be a numeric array", "all"),
    ("W1-str-array", _set(weights=_layer(W, 1, lambda w: w.astype(str))), TypeError,
     r"weights\[1\] must be a numeric array", "all"),
    ("W-mixed-dtypes", _set(weights=_layer(W, 1, lambda w: w.astype(F32))), TypeError,
     r"weights\[0\] is float64, weights\[1\] is float32", "all"),
    ("W-mixed-dtypes-32-64", _set(weights=lambda a: [a[W][0].astype(F32), a[W][1]],
                                  biases=lambda a: [a[B][0].astype(F32), a[B][1]]), TypeError,
     r"weights\[1\] is float64", "all"),
    ("W1-1d", _set(weights=_layer(W, 1, lambda w: w.ravel())), ValueError, r"weights\[1\] must be 2-D", "all"),
    ("W1-3d", _set(weights=_layer(W, 1, lambda w: w[None])), ValueError, r"weights\[1\] must be 2-D", "all"),
    ("W0-0d", _set(weights=_layer(W, 0, np.float64(1.0))), ValueError, r"weights\[0\] must be 2-D", "all"),
    ("W1-no-chain", _set(weights=_layer(W, 1, np.zeros((4, 2)))), ValueError,
     r"weights\[1\] must have 5 rows to follow weights\[0\]", "all"),
    ("W1-transposed", _set(weights=_layer(W, 1, lambda w: w.T.copy())), ValueError, r"weights\[1\] must have 5 rows",
     "all"),
    ("W0-zero-width-out", _set(weights=lambda a: [np.zeros((3, 0)), np.zeros((0, 2))],
                               biases=lambda a: [np.zeros(0), a[B][1]]), ValueError,
     r"weights\[0\] has a zero width", "all"),
    ("W0-zero-width-in", _set(weights=_layer(W, 0, np.zeros((0, 5))), X=np.zeros((4, 0))), ValueError,
     r"weights\[0\] has a zero width", "all"),
    ("W1-zero-width-out", _set(weights=_layer(W, 1, np.zeros((5, 0))), biases=_layer(B, 1, np.zeros(0)),
                               y=np.zeros(4, dtype=np.int64)), ValueError, r"weights\[1\] has a zero width", "all"),
    # one bias vector
    ("b0-None", _set(biases=_layer(B, 0, None)), TypeError, r"biases\[0\] must be an array", "all"),
    ("b1-str", _set(biases=_layer(B, 1, "b")), TypeError, r"biases\[1\] must be an array", "all"),
    ("b0-dict", _set(biases=_layer(B, 0, {})), TypeError, r"biases\[0\] must be an array", "all"),
    ("b0-float32", _set(biases=_layer(B, 0, lambda b: b.astype(F32))), TypeError,
     r"biases\[0\] must have the weights' dtype float64, got float32", "all"),
    ("b1-int", _set(biases=_layer(B, 1, lambda b: b.astype(np.int64))), TypeError,
     r"biases\[1\] must have the weights' dtype", "all"),
    ("b1-int-scalar", _set(biases=_layer(B, 1, 0)), TypeError, r"biases\[1\] must have the weights' dtype", "all"),
    ("b0-object", _set(biases=_layer(B, 0, lambda b: b.astype(object))), TypeError,
     r"biases\[0\] must be a numeric array", "all"),
    ("b1-too-long", _set(biases=_layer(B, 1, np.zeros(3))), ValueError, r"biases\[1\] must have shape \(2,\)", "all"),
    ("b0-too-short", _set(biases=_layer(B, 0, np.zeros(4))), ValueError, r"biases\[0\] must have shape \(5,\)", "all"),
    ("b0-2d", _set(biases=_layer(B, 0, lambda b: b[None])), ValueError, r"biases\[0\] must be 1-D", "all"),
    ("b0-0d", _set(biases=_layer(B, 0, np.float64(0.0))), ValueError, r"biases\[0\] must be 1-D", "all"),
    # X
    ("X-None", _set(X=None), TypeError, r"X must be an array", "all"),
    ("X-str", _set(X="X"), TypeError, r"X must be an array", "all"),
    ("X-dict", _set(X={}), TypeError, r"X must be an array", "all"),
    ("X-ragged", _set(X=ragged), TypeError, r"X must be an array", "all"),
    ("X-int-scalar", _set(X=3), ValueError, r"X must be 2-D", "all"),
    ("X-complex", _set(X=lambda a: a["X"].astype(np.complex64)), TypeError, r"X must be a real array", "all"),
    ("X-bool", _set(X=lambda a: a["X"] > 0), TypeError, r"X must be a real array", "all"),
    ("X-object", _set(X=lambda a: a["X"].astype(object)), TypeError, r"X must be a numeric array", "all"),
    ("X-str-array", _set(X=lambda a: a["X"].astype(str)), TypeError, r"X must be a numeric array", "all"),
    ("X-1d", _set(X=lambda a: a["X"][0]), ValueError, r"X must be 2-D", "all"),
    ("X-3d", _set(X=lambda a: a["X"][None]), ValueError, r"X must be 2-D", "all"),
    ("X-wrong-columns", _set(X=np.zeros((4, 4))), ValueError, r"X must have 3 columns", "all"),
    ("X-transposed", _set(X=lambda a: a["X"].T), ValueError, r"X must have 3 columns", "all"),
    # head
    ("head-unknown", _set(head="relu"), ValueError, r"head must be one of", "all"),
    ("head-case", _set(head="Softmax"), ValueError, r"head must be one of", "all"),
    ("head-empty", _set(head=""), ValueError, r"head must be one of", "all"),
    ("head-None", _set(head=None), TypeError, r"head must be one of", "all"),
    ("head-int", _set(head=1), TypeError, r"head must be one of", "all"),
    ("head-bytes", _set(head=b"softmax"), TypeError, r"head must be one of", "all"),
    # reduction
    ("reduction-unknown", _set(reduction="avg"), ValueError, r"reduction must be one of", "loss"),
    ("reduction-case", _set(reduction="MEAN"), ValueError, r"reduction must be one of", "loss"),
    ("reduction-None", _set(reduction=None), TypeError, r"reduction must be one of", "loss"),
    ("reduction-int", _set(reduction=0), TypeError, r"reduction must be one of", "loss"),
    ("reduction-mean-N0", _set(X=np.zeros((0, 3)), y=np.zeros(0, dtype=np.int64), reduction="mean"), ValueError,
     r"reduction='mean' needs a positive total weight: X has no rows", "loss"),
    ("reduction-mean-zero-weights", _set(reduction="mean", sample_weight=np.zeros(4)), ValueError,
     r"reduction='mean' needs a positive total weight: sample_weight sums to 0", "loss"),
    # y, any head
    ("y-None", _set(y=None), TypeError, r"y must be an array", "loss"),
    ("y-str", _set(y="y"), TypeError, r"y must be an array", "loss"),
    ("y-dict", _set(y={}), TypeError, r"y must be an array", "loss"),
    ("y-ragged", _set(y=ragged), TypeError, r"y must be an array", "loss"),
    ("y-int-scalar", _set(y=1), ValueError, r"y must be 1-D \(N,\) or 2-D", "loss"),
    ("y-complex", _set(y=lambda a: a["y"].astype(np.complex128)), TypeError, r"y must be a real array", "loss"),
    ("y-object", _set(y=lambda a: a["y"].astype(object)), TypeError, r"y must be a numeric array", "loss"),
    ("y-3d", _set(y=np.zeros((4, 2, 1))), ValueError, r"y must be 1-D \(N,\) or 2-D", "loss"),
    ("y-too-short", _set(y=lambda a: a["y"][:3]), ValueError, r"y must have 4 rows", "loss"),
    ("y-too-long", _set(y=np.zeros(5, dtype=np.int64)), ValueError, r"y must have 4 rows", "loss"),
    ("y-2d-too-many-rows", _set(y=np.full((5, 2), 0.5)), ValueError, r"y must have 4 rows", "loss"),
    ("y-2d-wrong-columns", _set(y=np.full((4, 3), 0.5)), ValueError, r"y must have shape \(4, 2\)", "loss"),
    # softmax labels
    ("labels-too-large", _set(y=np.array([0, 1, 2, 0])), ValueError, r"y labels must lie in \[0, 2\)", "loss"),
    ("labels-negative", _set(y=np.array([0, -1, 1, 0])), ValueError, r"y labels must lie in \[0, 2\)", "loss"),
    ("labels-huge", _set(y=np.array([0, 2**40, 1, 0])), ValueError, r"y labels must lie in", "loss"),
    ("labels-int8-negative", _set(y=np.array([0, -128, 1, 0], dtype=np.int8)), ValueError, r"y labels must lie",
     "loss"),
    ("labels-uint64-max", _set(y=np.array([0, 2**64 - 1, 1, 0], dtype=np.uint64)), ValueError,
     r"y labels must lie", "loss"),
    ("labels-float-too-large", _set(y=np.array([0.0, 2.0, 1.0, 0.0])), ValueError, r"y labels must lie", "loss"),
    ("labels-non-integral", _set(y=np.array([0.0, 0.5, 1.0, 0.0])), ValueError,
     r"y as 1-D labels must hold integers", "loss"),
    ("labels-nan", _set(y=np.array([0.0, np.nan, 1.0, 0.0])), ValueError, r"y as 1-D labels must hold integers",
     "loss"),
    ("labels-inf", _set(y=np.array([0.0, np.inf, 1.0, 0.0])), ValueError, r"y as 1-D labels must hold integers",
     "loss"),
    ("labels-float32-non-integral", _set(y=np.array([0, 1, 1, 0.25], dtype=F32)), ValueError,
     r"y as 1-D labels must hold integers", "loss"),
    # softmax soft targets
    ("soft-negative", _set(y=np.array([[1.0, 0], [0.5, 0.5], [1.5, -0.5], [0, 1]])), ValueError,
     r"y as 2-D softmax targets must be finite and >= 0", "loss"),
    ("soft-nan", _set(y=np.array([[1.0, 0], [np.nan, 0.5], [0.5, 0.5], [0, 1]])), ValueError,
     r"y as 2-D softmax targets must be finite", "loss"),
    ("soft-inf", _set(y=np.array([[1.0, 0], [np.inf, 0.5], [0.5, 0.5], [0, 1]])), ValueError,
     r"y as 2-D softmax targets must be finite", "loss"),
    # sample_weight (None is valid)
    ("sw-str", _set(sample_weight="w"), TypeError, r"sample_weight must be an array", "loss"),
    ("sw-dict", _set(sample_weight={}), TypeError, r"sample_weight must be an array", "loss"),
    ("sw-ragged", _set(sample_weight=ragged), TypeError, r"sample_weight must be an array", "loss"),
    ("sw-int-scalar", _set(sample_weight=1), ValueError, r"sample_weight must be 1-D", "loss"),
    ("sw-complex", _set(sample_weight=np.ones(4, dtype=np.complex128)), TypeError,
     r"sample_weight must be a real array", "loss"),
    ("sw-object", _set(sample_weight=np.ones(4, dtype=object)), TypeError, r"sample_weight must be a numeric array",
     "loss"),
    ("sw-2d", _set(sample_weight=np.ones((4, 1))), ValueError, r"sample_weight must be 1-D", "loss"),
    ("sw-too-short", _set(sample_weight=np.ones(3)), ValueError, r"sample_weight must have shape \(4,\)", "loss"),
    ("sw-too-long", _set(sample_weight=np.ones(5)), ValueError, r"sample_weight must have shape \(4,\)", "loss"),
    ("sw-negative", _set(sample_weight=np.array([1.0, -0.5, 1.0, 1.0])), ValueError,
     r"sample_weight must be finite and >= 0", "loss"),
    ("sw-negative-int", _set(sample_weight=np.array([1, -1, 1, 1])), ValueError,
     r"sample_weight must be finite and >= 0", "loss"),
    ("sw-nan", _set(sample_weight=np.array([1.0, np.nan, 1.0, 1.0])), ValueError,
     r"sample_weight must be finite and >= 0", "loss"),
    ("sw-inf", _set(sample_weight=np.array([1.0, np.inf, 1.0, 1.0])), ValueError,
     r"sample_weight must be finite and >= 0", "loss"),
    ("sw-overflows-float32", _set(weights=lambda a: [w.astype(F32) for w in a[W]],
                                  biases=lambda a: [b.astype(F32) for b in a[B]],
                                  sample_weight=np.array([1.0, 1e300, 1.0, 1.0])), ValueError,
     r"sample_weight must be finite", "loss"),
]

# A sparse X (issue 15): the rules of a dense X, with their messages, on any format.
if sp is not None:
    BAD += [
        ("X-sparse-wrong-columns", _set(X=lambda a: sp.csr_matrix(np.ones((4, 4)))), ValueError,
         r"X must have 3 columns to match weights\[0\] of shape \(3, \.\.\.\), got shape \(4, 4\)", "all"),
        ("X-sparse-transposed", _set(X=lambda a: sp.csc_array(a["X"].T)), ValueError,
         r"X must have 3 columns .*got shape \(3, 4\)", "all"),
        ("X-sparse-complex", _set(X=lambda a: sp.csr_matrix(a["X"].astype(np.complex128))), TypeError,
         r"X must be a real array \(integer or floating\), got dtype complex128", "all"),
        ("X-sparse-bool", _set(X=lambda a: sp.coo_matrix(a["X"] > 0)), TypeError,
         r"X must be a real array \(integer or floating\), got dtype bool", "all"),
        ("X-sparse-1d", _set(X=lambda a: sp.coo_array(a["X"][0])), ValueError,
         r"X must be 2-D \(N, d_0\), got 1-D array of shape \(3,\)", "all"),
        ("X-sparse-3d", _set(X=lambda a: sp.coo_array(a["X"][None])), ValueError,
         r"X must be 2-D \(N, d_0\), got 3-D array of shape \(1, 4, 3\)", "all"),
        ("X-sparse-too-many-rows", _set(X=lambda a: sp.csr_matrix(np.ones((5, 3)))), ValueError,
         r"y must have 5 rows to match X", "loss"),
    ]

# Sigmoid-head targets: the base network has k = 2 outputs; "k1" uses a (3, 5, 1) network.
BAD_SIGMOID = [
    ("sigmoid-1d-y-with-k2", dict(y=np.array([0.0, 1.0, 1.0, 0.0])), ValueError,
     r"y of shape \(4,\) needs one output unit; the network has 2"),
    ("sigmoid-above-1", dict(y=np.array([[0.0, 1.0], [1.5, 0.0], [0.5, 0.5], [1.0, 1.0]])), ValueError,
     r"y must hold values in \[0, 1\]"),
    ("sigmoid-negative", dict(y=np.array([[0.0, 1.0], [-0.1, 0.0], [0.5, 0.5], [1.0, 1.0]])), ValueError,
     r"y must hold values in \[0, 1\]"),
    ("sigmoid-nan", dict(y=np.array([[0.0, 1.0], [np.nan, 0.0], [0.5, 0.5], [1.0, 1.0]])), ValueError,
     r"y must hold values in \[0, 1\]"),
    ("sigmoid-inf", dict(y=np.array([[0.0, 1.0], [np.inf, 0.0], [0.5, 0.5], [1.0, 1.0]])), ValueError,
     r"y must hold values in \[0, 1\]"),
    ("sigmoid-int-2", dict(y=np.array([[0, 1], [2, 0], [1, 1], [0, 0]])), ValueError,
     r"y must hold values in \[0, 1\]"),
    ("sigmoid-wrong-columns", dict(y=np.full((4, 3), 0.5)), ValueError, r"y must have shape \(4, 2\)"),
    ("sigmoid-wrong-rows", dict(y=np.full((3, 2), 0.5)), ValueError, r"y must have 4 rows"),
    ("sigmoid-k1-above-1", dict(sizes=(3, 5, 1), y=np.array([0.0, 1.0, 2.0, 0.0])), ValueError,
     r"y must hold values in \[0, 1\]"),
    ("sigmoid-k1-nan", dict(sizes=(3, 5, 1), y=np.array([0.0, 1.0, np.nan, 0.0])), ValueError,
     r"y must hold values in \[0, 1\]"),
    ("sigmoid-k1-wrong-length", dict(sizes=(3, 5, 1), y=np.array([0.0, 1.0, 1.0])), ValueError,
     r"y must have 4 rows"),
    ("sigmoid-k1-2d-wrong-columns", dict(sizes=(3, 5, 1), y=np.zeros((4, 2))), ValueError,
     r"y must have shape \(4, 1\)"),
]


# The per-sample functions' own arguments (max_norm, V, X2 / y2, out): the base network has L = 2 layers and
# P = 32 parameters, the base batch N = 4 rows.
P32 = 32
_MAX_NORM = (r"max_norm must be a real number > 0 \(whole-gradient clipping\) or a sequence of 2 real numbers > 0 "
             r"\(per-layer clipping, one per layer\)")
_V_SHAPE = r"V must have shape \(32,\) or \(32, m\) with m >= 1 \(P = the number of parameters\)"
_OUT_SHAPE = r"out must be a writeable C-contiguous array of shape \(4, 32\)"


def _readonly_zeros(shape):
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


BAD_PS = [
    ("max_norm-0", _set(max_norm=0.0), ValueError, _MAX_NORM + ", got 0.0"),
    ("max_norm-int-0", _set(max_norm=0), ValueError, _MAX_NORM),
    ("max_norm-negative", _set(max_norm=-1.5), ValueError, _MAX_NORM + ", got -1.5"),
    ("max_norm-nan", _set(max_norm=np.nan), ValueError, _MAX_NORM + ", got nan"),
    ("max_norm-minus-inf", _set(max_norm=-np.inf), ValueError, _MAX_NORM),
    ("max_norm-np-float32-nan", _set(max_norm=np.float32(np.nan)), ValueError, _MAX_NORM),
    ("max_norm-0d-array-0", _set(max_norm=np.array(0.0)), ValueError, _MAX_NORM),
    ("max_norm-True", _set(max_norm=True), TypeError, _MAX_NORM + ", got bool"),
    ("max_norm-np-bool", _set(max_norm=np.bool_(True)), TypeError, _MAX_NORM),
    ("max_norm-str", _set(max_norm="1.0"), TypeError, _MAX_NORM + ", got str"),
    ("max_norm-None", _set(max_norm=None), TypeError, _MAX_NORM),
    ("max_norm-complex", _set(max_norm=1 + 0j), TypeError, _MAX_NORM),
    ("max_norm-dict", _set(max_norm={0: 1.0, 1: 1.0}), TypeError, _MAX_NORM),
    ("max_norm-list-too-short", _set(max_norm=[1.0]), ValueError, _MAX_NORM + ", got a sequence of length 1"),
    ("max_norm-list-too-long", _set(max_norm=[1.0, 1.0, 1.0]), ValueError, _MAX_NORM + ", got a sequence of length 3"),
    ("max_norm-list-empty", _set(max_norm=[]), ValueError, _MAX_NORM + ", got a sequence of length 0"),
    ("max_norm-array-too-long", _set(max_norm=np.ones(3)), ValueError, _MAX_NORM),
    ("max_norm-array-2d", _set(max_norm=np.ones((2, 1))), ValueError, _MAX_NORM + ", got an array of shape"),
    ("max_norm-list-0", _set(max_norm=[1.0, 0.0]), ValueError, _MAX_NORM + ", got 0.0 at position 1"),
    ("max_norm-list-negative", _set(max_norm=(-1.0, 1.0)), ValueError, _MAX_NORM + ", got -1.0 at position 0"),
    ("max_norm-list-nan", _set(max_norm=[1.0, np.nan]), ValueError, _MAX_NORM + ", got nan at position 1"),
    ("max_norm-array-nan", _set(max_norm=np.array([np.nan, 1.0])), ValueError, _MAX_NORM),
    ("max_norm-list-str", _set(max_norm=[1.0, "2"]), TypeError, _MAX_NORM + ", got str at position 1"),
    ("max_norm-list-bool", _set(max_norm=[True, 1.0]), TypeError, _MAX_NORM + ", got bool at position 0"),
    ("max_norm-list-None", _set(max_norm=[1.0, None]), TypeError, _MAX_NORM),
    ("max_norm-list-nested", _set(max_norm=[[1.0], [1.0]]), TypeError, _MAX_NORM),
    ("V-None", _set(V=None), TypeError, r"V must be an array"),
    ("V-str", _set(V="V"), TypeError, r"V must be an array"),
    ("V-ragged", _set(V=ragged), TypeError, r"V must be an array"),
    ("V-complex", _set(V=np.ones(P32, dtype=np.complex128)), TypeError, r"V must be a real array"),
    ("V-bool", _set(V=np.ones(P32, dtype=bool)), TypeError, r"V must be a real array"),
    ("V-object", _set(V=np.ones(P32, dtype=object)), TypeError, r"V must be a numeric array"),
    ("V-str-array", _set(V=np.full(P32, "1")), TypeError, r"V must be a numeric array"),
    ("V-scalar", _set(V=1.0), ValueError, _V_SHAPE + r", got shape \(\)"),
    ("V-too-short", _set(V=np.ones(P32 - 1)), ValueError, _V_SHAPE + r", got shape \(31,\)"),
    ("V-too-long", _set(V=np.ones(P32 + 1)), ValueError, _V_SHAPE),
    ("V-no-columns", _set(V=np.ones((P32, 0))), ValueError, _V_SHAPE + r", got shape \(32, 0\)"),
    ("V-transposed", _set(V=np.ones((3, P32))), ValueError, _V_SHAPE),
    ("V-3d", _set(V=np.ones((P32, 2, 1))), ValueError, _V_SHAPE),
    ("V-nan", _set(V=lambda a: np.where(np.arange(P32) == 5, np.nan, a["V"])), ValueError, r"V must be finite"),
    ("V-inf-2d", _set(V=lambda a: np.where(np.arange(2 * P32).reshape(P32, 2) == 9, -np.inf, 1.0)), ValueError,
     r"V must be finite"),
    ("V-overflows-float32", _set(weights=lambda a: [w.astype(F32) for w in a[W]],
                                 biases=lambda a: [b.astype(F32) for b in a[B]], V=np.full(P32, 1e300)), ValueError,
     r"V must be finite \(after conversion to float32\)"),
    ("X2-without-y2", _set(X2=lambda a: a["X"]), ValueError, r"y2 must be given with X2"),
    ("y2-without-X2", _set(y2=lambda a: a["y"]), ValueError, r"X2 must be given with y2"),
    ("out-list", _set(out=lambda a: np.zeros((4, P32)).tolist()), TypeError, r"out must be a NumPy array"),
    ("out-float32", _set(out=np.zeros((4, P32), dtype=F32)), TypeError,
     r"out must have the parameters' dtype float64, got float32"),
    ("out-int", _set(out=np.zeros((4, P32), dtype=np.int64)), TypeError, r"out must have the parameters' dtype"),
    ("out-too-wide", _set(out=np.zeros((4, P32 + 1))), ValueError, _OUT_SHAPE + r", got shape \(4, 33\)"),
    ("out-too-many-rows", _set(out=np.zeros((5, P32))), ValueError, _OUT_SHAPE),
    ("out-flat", _set(out=np.zeros(4 * P32)), ValueError, _OUT_SHAPE),
    ("out-transposed", _set(out=np.zeros((P32, 4))), ValueError, _OUT_SHAPE),
    ("out-read-only", _set(out=_readonly_zeros((4, P32))), ValueError, _OUT_SHAPE + r", got .*\(read-only\)"),
    ("out-fortran", _set(out=np.zeros((4, P32), order="F")), ValueError, _OUT_SHAPE + r".*\(not C-contiguous\)"),
    ("out-strided", _set(out=np.zeros((4, 2 * P32))[:, ::2]), ValueError, _OUT_SHAPE + r".*\(not C-contiguous\)"),
]


def _funcs(which):
    return FUNCS if which == "all" else ("loss", "loss_and_grad")


def _same(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(x is y for x, y in zip(a, b))
    return a is b


def _changed(mutate) -> set:
    """The keys of base() that a mutation changes."""
    args = base()
    changed = mutate(args)
    return {key for key in args if not _same(args[key], changed[key])}


def _on_second_set(mutate) -> bool:
    """Whether the mutation breaks a rule of X or y alone (None there means "not given": BAD_PS's X2 / y2 cases)."""
    args = mutate(base())
    return _changed(mutate) <= {"X", "y"} and args["X"] is not None and args["y"] is not None


def _as_second_set(match: str) -> str:
    """A rule's message about X or y as grad_gram says it about X2 or y2."""
    return re.sub(r"\b([Xy])\b", r"\g<1>2", match)


_MARKS = {}  # per-case pytest marks, by case name

BAD_CALLS = [pytest.param(impl, func, mutate, exc, match, id=f"{name}-{impl}-{func}", marks=_MARKS.get(name, ()))
             for name, mutate, exc, match, which in BAD
             for impl in BATTERY for func in _funcs(which) if not (impl == "objective" and func == "forward")]
# every rule on each per-sample function that reads the arguments it breaks; X's and y's on grad_gram's X2, y2
BAD_CALLS += [pytest.param(impl, func, mutate, exc, match, id=f"{name}-{impl}-{func}", marks=_MARKS.get(name, ()))
              for name, mutate, exc, match in [case[:4] for case in BAD] + BAD_PS
              for impl in BATTERY for func in PS_FUNCS if _changed(mutate) <= takes(impl, func)]
BAD_CALLS += [pytest.param(impl, SECOND_SET, mutate, exc, _as_second_set(match), id=f"{name}-{impl}-X2",
                           marks=_MARKS.get(name, ()))
              for name, mutate, exc, match, _ in BAD if _on_second_set(mutate) for impl in BATTERY]


def _fingerprint(obj):
    """Bitwise record of every array in obj (through lists, tuples, dicts), with the buffer a view looks into;
    other objects by identity."""
    if isinstance(obj, dict):
        return {k: _fingerprint(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_fingerprint(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _snapshot(obj)
    if sp is not None and sp.issparse(obj):  # its arrays: values, and indices or coordinates
        return [_snapshot(a) for a in (obj.data, *getattr(obj, "coords", ()), getattr(obj, "indices", None),
                                       getattr(obj, "indptr", None)) if a is not None]
    return (type(obj).__name__, id(obj))


@pytest.mark.parametrize("impl, func, mutate, exc, match", BAD_CALLS)
def test_bad_input_raises(impl, func, mutate, exc, match):
    args = mutate(base())
    before = _fingerprint(args)
    with pytest.raises(exc, match=match):
        call(impl, func, args)
    assert _fingerprint(args) == before, "a call that raised modified its arguments"


def test_the_per_sample_battery_covers_every_rule():
    """Each case of BAD and BAD_PS runs on some per-sample function, the new arguments' on each implementation."""
    ids = {p.id for p in BAD_CALLS}
    for name, *_ in BAD + BAD_PS:
        assert any(i.startswith(f"{name}-") and any(f in i for f in PS_FUNCS) for i in ids), name
    for name, *_ in BAD_PS:
        for impl in BATTERY:
            assert any(i.startswith(f"{name}-{impl}-") for i in ids), (name, impl)


@pytest.mark.parametrize("impl", BATTERY)
@pytest.mark.parametrize("name, spec, exc, match", [c for c in BAD_SIGMOID], ids=[c[0] for c in BAD_SIGMOID])
def test_bad_sigmoid_targets_raise(impl, name, spec, exc, match):
    spec = dict(spec)
    args = base("sigmoid", sizes=spec.pop("sizes", (3, 5, 2)))
    args.update(spec)
    for func in ("loss", "loss_and_grad") + PS_FUNCS:
        with pytest.raises(exc, match=match):
            call(impl, func, args)
    with pytest.raises(exc, match=_as_second_set(match)):
        call(impl, SECOND_SET, args)


def _values(result) -> np.ndarray:
    """Every number in a result (a float, an array, Gradients, or a tuple of those) as one float64 vector."""
    if isinstance(result, mlpgrad.Gradients):
        result = tuple(result.weights) + tuple(result.biases) + ((result.input,) if result.input is not None else ())
    if isinstance(result, tuple):
        return np.concatenate([_values(r) for r in result]) if result else np.zeros(0)
    return np.asarray(result, dtype=np.float64).ravel()


def _per_sample_variants(args):
    """(function, arguments) of every per-sample call on a valid problem: each option taken once."""
    L = len(args["weights"])
    out = np.full((args["X"].shape[0], args["V"].shape[0]), np.nan, dtype=args["weights"][0].dtype)
    return [(f, args) for f in PS_FUNCS] + [
        ("clipped_grad", dict(args, max_norm=[0.5] * L, reduction="mean", sample_weight=np.linspace(0, 1, 4))),
        ("clipped_grad", dict(args, max_norm=np.inf)),
        ("per_sample_grads", dict(args, out=out)),
        ("grad_dot", dict(args, V=np.stack([args["V"], -args["V"]], axis=1))),
        ("grad_gram", dict(args, X2=args["X"][:3], y2=args["y"][:3])),
        ("sum_squared_grads", dict(args, sample_weight=np.arange(4))),
        ("hvp", dict(args, V=np.stack([args["V"], -args["V"]], axis=1), reduction="mean",
                     sample_weight=np.linspace(0, 1, 4))),
        ("ggn_vp", dict(args, V=np.stack([args["V"], -args["V"]], axis=1), reduction="mean")),
        ("ggn_diag", dict(args, reduction="mean", sample_weight=np.arange(4))),
    ]


def test_the_base_problems_are_valid():
    """The mutations above start from valid problems (and so test one fault each); every result is finite."""
    for head in ("softmax", "sigmoid"):
        for sizes in ((3, 5, 2), (3, 5, 1)):
            args = base(head, sizes=sizes)
            for impl in BATTERY:
                for func in FUNCS:
                    result = call(impl, func, args)
                    assert np.all(np.isfinite(result if func == "forward" else result[0] if func != "loss" else result))
                for func, ps_args in _per_sample_variants(args) + [(SECOND_SET, args)]:
                    assert np.all(np.isfinite(_values(call(impl, func, ps_args)))), (head, sizes, impl, func)


# -- n_threads (native only) and input_grad -------------------------------------------------------------

@pytest.mark.parametrize("func", FUNCS + PS_FUNCS)
@pytest.mark.parametrize("n_threads, exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError),
                                            (2.0, TypeError), ([2], TypeError), (np.float64(2), TypeError)],
                         ids=["0", "-1", "1.5", "str", "2.0", "list", "np.float64"])
def test_bad_n_threads(func, n_threads, exc):
    with pytest.raises(exc, match=r"n_threads must be None or an int in \[1, 4096\]"):
        call("native", func, base(), n_threads=n_threads)


@pytest.mark.parametrize("func", FUNCS)
def test_good_n_threads(func):
    args = base()
    want = call("native", func, args)
    for n_threads in (None, 1, 2, np.int64(2), np.uint8(3), 16):
        got = call("native", func, args, n_threads=n_threads)
        if func == "loss_and_grad":
            got, want_ = got[0], want[0]
        else:
            want_ = want
        np.testing.assert_allclose(got, want_, rtol=1e-12)


@pytest.mark.parametrize("func", PS_FUNCS)
def test_good_n_threads_per_sample(func):
    """Results do not depend on the thread count: the same bits."""
    args = base()
    want = _values(call("native", func, args))
    for n_threads in (None, 1, 2, np.int64(2), np.uint8(3), 16):
        assert np.array_equal(_values(call("native", func, args, n_threads=n_threads)), want)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("per_layer", ["yes", 1, 0.0, None])
def test_per_layer_must_be_bool(impl, per_layer):
    with pytest.raises(TypeError, match=r"per_layer must be a bool"):
        IMPLS[impl].per_sample_grad_norms(*[base()[k] for k in ("weights", "biases", "X", "y")], head="softmax",
                                          per_layer=per_layer)
    with pytest.raises(TypeError, match=r"per_layer must be a bool"):
        call("objective", "per_sample_grad_norms", base(), per_layer=per_layer)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("input_grad", ["yes", 1, 0.0, None])
def test_input_grad_must_be_bool(impl, input_grad):
    with pytest.raises(TypeError, match=r"input_grad must be a bool"):
        call(impl, "loss_and_grad", base(), input_grad=input_grad)


def test_input_grad_accepts_numpy_bool():
    for impl in IMPLS:
        _, g = call(impl, "loss_and_grad", base(), input_grad=np.bool_(True))
        assert g.input.shape == (4, 3)


# -- N = 0 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("head, kind", [("softmax", "labels"), ("softmax", "soft"), ("sigmoid", "labels"),
                                        ("sigmoid", "soft")])
def test_empty_batch(impl, dtype, head, kind):
    """N = 0 with reduction="sum": loss 0.0 and zero gradients of the parameters' shapes; forward is (0, k)."""
    dt = np.dtype(dtype)
    X = np.zeros((0, 3), dtype=dt)
    mod = IMPLS[impl]
    for sizes in ([3, 5, 2], [3, 1], [3, 7, 5, 4]):
        Ws, bs = make_network(sizes, dt)
        k = sizes[-1]
        y = make_targets(head, kind, 0, k, dt)
        P = mod.forward(Ws, bs, X, head=head)
        assert P.shape == (0, k) and P.dtype == dt
        for sw in (None, np.zeros(0, dtype=dt)):
            L = mod.loss(Ws, bs, X, y, head=head, sample_weight=sw)
            assert isinstance(L, float) and L == 0.0
            L, g = mod.loss_and_grad(Ws, bs, X, y, head=head, sample_weight=sw, input_grad=True)
            assert isinstance(L, float) and L == 0.0
            for grads, params in ((g.weights, Ws), (g.biases, bs)):
                assert len(grads) == len(params)
                for a, p in zip(grads, params):
                    assert a.shape == p.shape and a.dtype == dt
                    assert not np.any(a)
            assert g.input.shape == (0, 3) and g.input.dtype == dt
            assert mod.loss_and_grad(Ws, bs, X, y, head=head, sample_weight=sw)[1].input is None


def test_empty_batch_of_other_X_dtype():
    Ws, bs = make_network([3, 4], F32)
    for impl, mod in IMPLS.items():
        P = mod.forward(Ws, bs, np.zeros((0, 3), dtype=np.int64), head="softmax")
        assert P.shape == (0, 4) and P.dtype == np.float32, impl
        L = mod.loss(Ws, bs, np.zeros((0, 3), dtype=np.float16), np.zeros(0, dtype=np.int64), head="softmax")
        assert L == 0.0, impl


# -- accepted inputs: read-only, unchanged, converted ----------------------------------------------------

def _readonly(a):
    a = np.array(a)  # an own copy
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("head, kind", [("softmax", "labels"), ("softmax", "soft"), ("sigmoid", "soft")])
def test_read_only_inputs(impl, dtype, head, kind):
    dt = np.dtype(dtype)
    rng = np.random.default_rng(4)
    sizes, n = [6, 9, 3], 17
    Ws, bs = make_network(sizes, dt, rng)
    X = rng.standard_normal((n, 6)).astype(dt)
    y = make_targets(head, kind, n, 3, dt, rng)
    w = rng.uniform(0.5, 1.5, n).astype(dt)
    mod = IMPLS[impl]
    kw = dict(head=head, reduction="mean", sample_weight=w)
    L0, g0 = mod.loss_and_grad(Ws, bs, X, y, input_grad=True, **kw)
    P0 = mod.forward(Ws, bs, X, head=head)

    roW, rob = [_readonly(a) for a in Ws], [_readonly(a) for a in bs]
    roX, roy, row = _readonly(X), _readonly(y), _readonly(w)
    ro_views = [roX[::2], roX[:, ::-1]]  # read-only views too
    assert not any(a.flags.writeable for a in roW + rob + [roX, roy, row] + ro_views)
    kw["sample_weight"] = row
    L, g = mod.loss_and_grad(roW, rob, roX, roy, input_grad=True, **kw)
    tol = 1e-5 if dt == np.float32 else 1e-12
    assert rel_err(L, L0) <= tol
    for a, b in zip(g.weights + g.biases + [g.input], g0.weights + g0.biases + [g0.input]):
        assert rel_err(a, b) <= tol
    assert rel_err(mod.loss(roW, rob, roX, roy, **kw), L0) <= tol
    assert rel_err(mod.forward(roW, rob, roX, head=head), P0) <= tol
    # a read-only strided view, and read-only X of another dtype
    mod.loss_and_grad(roW, rob, ro_views[0], roy[::2], head=head, input_grad=True)
    Xi = _readonly(np.round(X * 4).astype(np.int16))
    mod.forward(roW, rob, Xi, head=head)
    mod.loss_and_grad(roW, rob, Xi, roy, head=head, input_grad=True)


def _snapshot(obj):
    """Bitwise record of every array in obj (lists, tuples, dicts), with its base buffer when it is a view."""
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_snapshot(v) for v in obj]
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        return (obj.shape, obj.strides, obj.dtype, obj.flags.writeable, obj.tobytes(),
                base.tobytes() if base is not obj else None)
    return obj


def _problem_variants():
    """Representative inputs: a name and the arguments (weights, biases, X, y, head, sample_weight)."""
    rng = np.random.default_rng(9)
    sizes, n = [5, 8, 3], 12
    out = []
    for dt in (F32, F64):
        Ws, bs = make_network(sizes, dt, rng)
        X = rng.standard_normal((n, 5)).astype(dt)
        labels = rng.integers(0, 3, n)
        soft = make_targets("softmax", "soft", n, 3, dt, rng)
        sig = make_targets("sigmoid", "soft", n, 3, dt, rng)
        w = rng.uniform(0.0, 2.0, n).astype(dt)
        wide = rng.standard_normal((2 * n, 9)).astype(dt)
        name = np.dtype(dt).name
        out += [
            (f"{name}-C", Ws, bs, X, labels, "softmax", None),
            (f"{name}-X-float16", Ws, bs, X.astype(np.float16), labels, "softmax", w),
            (f"{name}-X-int", Ws, bs, np.round(X * 3).astype(np.int32), soft, "softmax", None),
            (f"{name}-X-fortran", Ws, bs, np.asfortranarray(X), np.asfortranarray(soft), "softmax", w),
            (f"{name}-X-strided", Ws, bs, wide[::2, 2:7], labels.astype(np.float64), "softmax", w[::-1]),
            (f"{name}-X-reversed", Ws, bs, wide[:n, ::-1][:, :5], sig, "sigmoid", w),
            (f"{name}-W-fortran", [np.asfortranarray(a) for a in Ws], [b[::-1].copy()[::-1] for b in bs],
             X[::-1], sig[:, ::-1], "sigmoid", None),
            (f"{name}-W-sliced", [np.repeat(a, 2, axis=1)[:, ::2] for a in Ws], bs, X, labels[::-1].copy()[::-1],
             "softmax", np.repeat(w, 2)[::2]),
            (f"{name}-X-other-float", Ws, bs, X.astype(F64 if dt == F32 else F32), sig.astype(F64), "sigmoid", w),
        ]
    return out


VARIANTS = _problem_variants()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_inputs_are_not_modified(impl, variant):
    _, Ws, bs, X, y, head, w = variant
    mod = IMPLS[impl]
    args = dict(Ws=Ws, bs=bs, X=X, y=y, w=w)
    before = _snapshot(args)
    ids = [id(a) for a in Ws] + [id(a) for a in bs]
    mod.forward(Ws, bs, X, head=head)
    for red in ("sum", "mean"):
        mod.loss(Ws, bs, X, y, head=head, reduction=red, sample_weight=w)
        for input_grad in (False, True):
            mod.loss_and_grad(Ws, bs, X, y, head=head, reduction=red, sample_weight=w, input_grad=input_grad)
    after = _snapshot(args)
    assert ids == [id(a) for a in Ws] + [id(a) for a in bs]  # the lists themselves are not rearranged
    assert after == before


@pytest.mark.parametrize("impl", BATTERY)
@pytest.mark.parametrize("variant", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_per_sample_inputs_are_not_modified(impl, variant):
    """The per-sample functions (and the Objective's methods) leave every argument bitwise unchanged: V of
    other dtypes and layouts, grad_gram's X2 and y2 as views of X and y, max_norm as an array."""
    _, Ws, bs, X, y, head, w = variant
    mod = BATTERY[impl]
    P = sum(np.size(W) + np.size(b) for W, b in zip(Ws, bs))
    V1 = np.linspace(-1.0, 1.0, 2 * P)[::2]  # a strided view
    V3 = np.asfortranarray((np.arange(3 * P, dtype=np.int32) % 7 - 3).reshape(P, 3))  # ints, Fortran order
    limits = np.array([0.5, 2.0])
    X2, y2 = X[::-2], y[::-2]
    args = dict(Ws=Ws, bs=bs, X=X, y=y, w=w, V1=V1, V3=V3, limits=limits)
    before = _snapshot(args)
    ids = [id(a) for a in Ws] + [id(a) for a in bs]
    data = (Ws, bs, X, y)
    for per_layer in (False, True):
        mod.per_sample_grad_norms(*data, head=head, per_layer=per_layer)
    for max_norm, red in ((0.7, "sum"), (limits, "mean")):
        mod.clipped_grad(*data, head=head, max_norm=max_norm, reduction=red, sample_weight=w)
    mod.per_sample_grads(*data, head=head)
    mod.grad_dot(*data, V1, head=head)
    mod.grad_dot(*data, V3, head=head)
    mod.grad_gram(*data, head=head)
    mod.grad_gram(*data, X2, y2, head=head)
    mod.sum_squared_grads(*data, head=head, sample_weight=w)
    for V in (V1, V3):
        mod.hvp(*data, V, head=head, reduction="mean", sample_weight=w)
        mod.ggn_vp(*data, V, head=head, sample_weight=w)
    mod.ggn_diag(*data, head=head, sample_weight=w)
    assert ids == [id(a) for a in Ws] + [id(a) for a in bs]
    assert _snapshot(args) == before


# -- non-finite X ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_nan_in_X_gives_nan_loss(impl, dtype, head):
    dt = np.dtype(dtype)
    rng = np.random.default_rng(1)
    sizes, n = [4, 7, 3], 9
    Ws, bs = make_network(sizes, dt, rng)
    X = rng.standard_normal((n, 4)).astype(dt)
    X[5, 2] = np.nan
    y = make_targets(head, "soft", n, 3, dt, rng)
    mod = IMPLS[impl]
    for red in ("sum", "mean"):
        assert np.isnan(mod.loss(Ws, bs, X, y, head=head, reduction=red))
        L, g = mod.loss_and_grad(Ws, bs, X, y, head=head, reduction=red, input_grad=True)
        assert np.isnan(L)
        assert all(a.shape == p.shape for a, p in zip(g.weights + g.biases, Ws + bs))
        assert g.input.shape == X.shape
    P = mod.forward(Ws, bs, X, head=head)
    assert P.shape == (n, 3)
    assert np.all(np.isnan(P[5]))
    assert np.all(np.isfinite(np.delete(P, 5, axis=0)))  # the other rows are unaffected


@pytest.mark.parametrize("dtype", [F32, F64])
def test_arrays_that_went_through_pickle(dtype):
    """An unpickled array's dtype equals np.dtype(dtype) but is another object (multiprocessing and Dask
    workers receive such arrays): the native core must take it by value, never reject it as a wrong dtype."""
    import pickle

    from mlpgrad import _native

    dt = np.dtype(dtype)
    rng = np.random.default_rng(11)
    sizes, n = [6, 9, 3], 17
    Ws, bs = make_network(sizes, dt, rng)
    X = rng.standard_normal((n, 6)).astype(dt)
    y = make_targets("softmax", "labels", n, 3, dt, rng)
    Wp, bp, Xp, yp = pickle.loads(pickle.dumps((Ws, bs, X, y)))
    assert Wp[0].dtype == dt and Wp[0].dtype is not dt  # the case this test is about
    L0, g0 = mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", input_grad=True)
    L1, g1 = mlpgrad.loss_and_grad(Wp, bp, Xp, yp, head="softmax", input_grad=True)
    assert L1 == L0
    for a, b in zip(g0.weights + g0.biases + [g0.input], g1.weights + g1.biases + [g1.input]):
        assert a.dtype == dt and np.array_equal(a, b)
    assert np.array_equal(mlpgrad.forward(Wp, bp, Xp, head="softmax"), mlpgrad.forward(Ws, bs, X, head="softmax"))

    # the fused optimizer steps (an epoch of train_epoch) update unpickled buffers in place
    p = mlpgrad.pack(Ws, bs)
    pa, ga, m, v, t = pickle.loads(pickle.dumps((p, np.empty_like(p), np.zeros_like(p), np.zeros_like(p),
                                                 np.zeros(1, np.int64))))
    pb, gb, mb, vb, tb = p.copy(), np.empty_like(p), np.zeros_like(p), np.zeros_like(p), np.zeros(1, np.int64)
    options = _native.train_options("adam", 8, 1e-4, 1e-3, 0.9, 0.999, 1e-8, 0.9, True)
    _native.train_epoch(pa, ga, m, v, t, sizes, _native.bind_data(Xp, yp, None, "softmax", 6, 3, dt), None, options,
                        0.0, 1)
    _native.train_epoch(pb, gb, mb, vb, tb, sizes, _native.bind_data(X, y, None, "softmax", 6, 3, dt), None, options,
                        0.0, 1)
    assert np.array_equal(pa, pb) and not np.array_equal(pa, p)
