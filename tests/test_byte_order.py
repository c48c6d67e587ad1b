"""Arrays in the other byte order (``'>f4'`` on a little-endian machine, ``'<f4'`` on a big-endian one) are taken
as NumPy takes them: converted once to the machine's order (``mlpgrad._checks.native_order``), with results
identical to those of the same values in native arrays. Every array argument: X, y, sample_weight, weights,
biases, V, theta, X2 / y2, a ``dtype=`` of the other order; in the functional API, the reference, the Objective
and the estimator. ``out=`` buffers, written by the core, must stay native (their rule is unchanged)."""

from __future__ import annotations

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
from _problems import make_problem

SIZES = [3, 5, 4]
HEAD = "softmax"


def swapped(a):
    """The same values in the other byte order."""
    a = np.asarray(a)
    out = a.astype(a.dtype.newbyteorder("S"))
    assert not out.dtype.isnative and np.array_equal(out, a)
    return out


def assert_same(a, b):
    """Equal, bit for bit, through tuples, lists and NamedTuples."""
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.dtype.isnative and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=True)
    else:
        assert a == b


def _problem(dtype):
    Ws, bs, X, y = make_problem(SIZES, 7, HEAD, dtype=dtype, seed=3)
    w = np.linspace(0.5, 1.5, 7)
    theta = mlpgrad.pack(Ws, bs)
    V = np.random.default_rng(4).standard_normal((theta.size, 2)).astype(dtype)
    return Ws, bs, X, y, w, V


# name: (call, the arguments it takes as arrays): call(module, Ws, bs, X, y, w, V)
CALLS = {
    "forward": lambda m, Ws, bs, X, y, w, V: m.forward(Ws, bs, X, head=HEAD),
    "loss": lambda m, Ws, bs, X, y, w, V: m.loss(Ws, bs, X, y, head=HEAD, sample_weight=w),
    "loss_and_grad": lambda m, Ws, bs, X, y, w, V: m.loss_and_grad(Ws, bs, X, y, head=HEAD, sample_weight=w,
                                                                   input_grad=True),
    "per_sample_grad_norms": lambda m, Ws, bs, X, y, w, V: m.per_sample_grad_norms(Ws, bs, X, y, head=HEAD),
    "clipped_grad": lambda m, Ws, bs, X, y, w, V: m.clipped_grad(Ws, bs, X, y, head=HEAD, max_norm=0.5,
                                                                 sample_weight=w),
    "per_sample_grads": lambda m, Ws, bs, X, y, w, V: m.per_sample_grads(Ws, bs, X, y, head=HEAD),
    "grad_dot": lambda m, Ws, bs, X, y, w, V: m.grad_dot(Ws, bs, X, y, V, head=HEAD),
    "grad_gram": lambda m, Ws, bs, X, y, w, V: m.grad_gram(Ws, bs, X, y, X[:3], y[:3], head=HEAD),
    "sum_squared_grads": lambda m, Ws, bs, X, y, w, V: m.sum_squared_grads(Ws, bs, X, y, head=HEAD,
                                                                           sample_weight=w),
    "hvp": lambda m, Ws, bs, X, y, w, V: m.hvp(Ws, bs, X, y, V, head=HEAD, sample_weight=w),
    "ggn_vp": lambda m, Ws, bs, X, y, w, V: m.ggn_vp(Ws, bs, X, y, V[:, 0], head=HEAD, sample_weight=w),
    "ggn_diag": lambda m, Ws, bs, X, y, w, V: m.ggn_diag(Ws, bs, X, y, head=HEAD, sample_weight=w),
    "pack": lambda m, Ws, bs, X, y, w, V: mlpgrad.pack(Ws, bs),
}


@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_functions_take_the_other_byte_order(impl, dtype, name):
    module = mlpgrad if impl == "native" else reference
    if not hasattr(module, name) and name != "pack":
        pytest.skip(f"{impl} has no {name}")
    Ws, bs, X, y, w, V = _problem(dtype)
    expected = CALLS[name](module, Ws, bs, X, y, w, V)
    got = CALLS[name](module, [swapped(W) for W in Ws], [swapped(b) for b in bs], swapped(X), swapped(y),
                      swapped(w), swapped(V))
    assert_same(got, expected)


def test_unpack_takes_the_other_byte_order_and_returns_views():
    Ws, bs, *_ = _problem(np.float64)
    theta = swapped(mlpgrad.pack(Ws, bs))
    weights, biases = mlpgrad.unpack(theta, SIZES)
    assert all(np.shares_memory(a, theta) for a in weights + biases)  # views, as for a native theta
    assert all(np.array_equal(a, b) for a, b in zip(weights + biases, Ws + bs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_objective_takes_the_other_byte_order(dtype):
    Ws, bs, X, y, w, V = _problem(dtype)
    theta = mlpgrad.pack(Ws, bs)
    ours = mlpgrad.Objective(SIZES, X, y, head=HEAD, sample_weight=w, alpha=0.1, dtype=dtype)
    other = mlpgrad.Objective(SIZES, swapped(X), swapped(y), head=HEAD, sample_weight=swapped(w), alpha=0.1,
                              dtype=np.dtype(dtype).newbyteorder("S"))
    assert other.dtype == np.dtype(dtype) and other.dtype.isnative
    for method, args in [("loss", ()), ("loss_and_grad", ()), ("hvp", (V,)), ("ggn_vp", (V,)), ("ggn_diag", ()),
                         ("grad_dot", (V,)), ("per_sample_grads", ()), ("clipped_grad", (1.0,))]:
        expected = getattr(ours, method)(theta, *args)
        assert_same(getattr(other, method)(swapped(theta), *map(swapped, args)), expected)
        assert_same(getattr(ours, method)(swapped(theta), *map(swapped, args)), expected)


def test_dtype_none_follows_float32_data_of_the_other_order():
    X = swapped(np.zeros((2, 3), np.float32))
    assert mlpgrad.Objective([3, 2], X, np.array([0, 1]), head=HEAD).dtype == np.float32


def test_mlp_takes_a_dtype_of_the_other_order():
    net = mlpgrad.MLP(SIZES, head=HEAD, dtype=np.dtype(">f4"), seed=0)
    assert net.weights[0].dtype == np.float32 and net.weights[0].dtype.isnative


def test_out_buffers_must_be_native():
    Ws, bs, X, y, w, V = _problem(np.float64)
    out = swapped(np.zeros((X.shape[0], mlpgrad.pack(Ws, bs).size)))
    with pytest.raises(TypeError, match="out must have"):
        mlpgrad.per_sample_grads(Ws, bs, X, y, head=HEAD, out=out)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_estimator_takes_the_other_byte_order(solver):
    pytest.importorskip("sklearn")
    from mlpgrad.estimator import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    w = rng.random(40) + 0.5
    kw = dict(hidden_layer_sizes=(4,), solver=solver, max_iter=5, random_state=0)
    with pytest.warns(Warning):  # ConvergenceWarning: 5 iterations
        ours = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    with pytest.warns(Warning):
        other = MLPClassifier(**kw).fit(swapped(X), swapped(y), sample_weight=swapped(w))
    assert other.coefs_[0].dtype == np.float32  # float32 data of either order trains in float32
    for a, b in zip(other.coefs_ + other.intercepts_, ours.coefs_ + ours.intercepts_):
        assert_same(a, b)
    assert_same(other.predict_proba(swapped(X)), ours.predict_proba(X))
    other.coefs_ = [swapped(c) for c in other.coefs_]  # parameters set by hand in the other order
    assert_same(other.predict_proba(X), ours.predict_proba(X))
    if solver == "adam":
        ours.partial_fit(X, y, sample_weight=w)
        other.partial_fit(swapped(X), swapped(y), sample_weight=swapped(w))
        assert_same(other.coefs_[0], ours.coefs_[0])
