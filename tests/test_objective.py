"""The flat layout (mlpgrad.pack / unpack) and mlpgrad.Objective: against the functional API on the unpacked
parameters, under scipy.optimize, with out=, on bad input, and bit-identical for any thread count."""

import pickle

import numpy as np
import pytest

import mlpgrad
from _bounds import tol
from _problems import make_problem, rel_err

DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------ pack / unpack

def test_pack_order_is_scikit_learns():
    Ws, bs, _, _ = make_problem([3, 4, 2], 1, "softmax")
    theta = mlpgrad.pack(Ws, bs)
    expected = np.concatenate([W.ravel() for W in Ws] + bs)  # sklearn's _pack
    assert theta.dtype == Ws[0].dtype and np.array_equal(theta, expected)
    Ws2, bs2 = mlpgrad.unpack(theta, [3, 4, 2])
    for a, b in zip(Ws + bs, Ws2 + bs2):
        assert a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unpack_gives_views_with_leading_axes(lead, dtype):
    sizes = [3, 4, 1, 2]
    P = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    theta = np.arange(np.prod(lead, dtype=int) * P, dtype=dtype).reshape(*lead, P)
    Ws, bs = mlpgrad.unpack(theta, sizes)
    for (a, b), W, bb in zip(zip(sizes[:-1], sizes[1:]), Ws, bs):
        assert W.shape == (*lead, a, b) and bb.shape == (*lead, b)
        assert np.shares_memory(W, theta) and np.shares_memory(bb, theta)
    for idx in np.ndindex(*lead):  # each leading index unpacks like a single vector
        Wi, bi = mlpgrad.unpack(theta[idx].copy(), sizes)
        for x, y in zip(Wi + bi, [W[idx] for W in Ws] + [b[idx] for b in bs]):
            assert np.array_equal(x, y)
    Ws[1][...] = -1  # writing a view writes theta
    assert np.all(mlpgrad.unpack(theta, sizes)[0][1] == -1)


@pytest.mark.parametrize("theta, sizes, exc, match", [
    (np.zeros(25), [3, 4, 2], ValueError, r"theta must have shape \(\.\.\., 26\)"),
    (np.zeros((2, 27)), [3, 4, 2], ValueError, r"got shape \(2, 27\)"),
    (np.zeros(26, np.int64), [3, 4, 2], TypeError, "float32 or float64, got int64"),
    (np.zeros(26, np.float16), [3, 4, 2], TypeError, "float32 or float64, got float16"),
    ([0.0] * 26, [3, 4, 2], TypeError, "theta must be a NumPy array"),
    (np.float64(0), [3, 4, 2], TypeError, "theta must be a NumPy array"),
    (np.zeros(26), [3], ValueError, "at least 2 sizes"),
    (np.zeros(26), [3, 0, 2], ValueError, ">= 1"),
    (np.zeros(26), "342", TypeError, "sequence of ints"),
    (np.zeros(26), [3, 4.5, 2], TypeError, "sequence of ints"),
])
def test_unpack_rejects(theta, sizes, exc, match):
    with pytest.raises(exc, match=match):
        mlpgrad.unpack(theta, sizes)


def test_pack_rejects_what_the_api_rejects():
    Ws, bs, _, _ = make_problem([3, 4, 2], 1, "softmax")
    with pytest.raises(TypeError, match="share one dtype"):
        mlpgrad.pack([Ws[0], Ws[1].astype(np.float32)], bs)
    with pytest.raises(ValueError, match="weights\\[1\\] must have 4 rows"):
        mlpgrad.pack([Ws[0], Ws[1][1:]], bs)


# ------------------------------------------------------------------ Objective against the functional API

def _functional(theta, sizes, X, y, head, reduction, sw, alpha):
    Ws, bs = mlpgrad.unpack(theta, sizes)
    loss, g = mlpgrad.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=sw)
    grad = mlpgrad.pack(g.weights, g.biases)
    n_w = sum(W.size for W in Ws)
    w = theta[:n_w].astype(np.float64)
    grad[:n_w] += (alpha * w).astype(grad.dtype)
    return loss + 0.5 * alpha * float(w @ w), grad


CASES = [("softmax", "labels"), ("softmax", "soft"), ("sigmoid", "labels"), ("sigmoid", "soft")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head, kind", CASES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_objective_equals_the_functional_call(dtype, head, kind, reduction, weighted, alpha):
    sizes, n = [7, 9, 5, 3], 130
    Ws, bs, X, y = make_problem(sizes, n, head, kind, dtype, seed=4)
    sw = np.random.default_rng(5).uniform(0, 2, n) if weighted else None
    theta = mlpgrad.pack(Ws, bs)
    obj = mlpgrad.Objective(sizes, X, y, head=head, reduction=reduction, sample_weight=sw, alpha=alpha)
    assert obj.dtype == dtype and obj.n_params == theta.size and obj.n_samples == n
    loss, grad = obj.loss_and_grad(theta)
    want_loss, want_grad = _functional(theta, sizes, X, y, head, reduction, sw, alpha)
    bound = tol(dtype)
    assert grad.dtype == dtype and grad.shape == theta.shape
    assert loss == pytest.approx(want_loss, rel=bound)
    assert rel_err(grad, want_grad) <= bound
    assert obj.loss(theta) == pytest.approx(want_loss, rel=bound)
    if alpha == 0.0:  # the same native call: the same bits
        assert loss == want_loss and np.array_equal(grad, want_grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_objective_takes_theta_of_another_dtype_and_layout(dtype):
    sizes = [4, 6, 2]
    Ws, bs, X, y = make_problem(sizes, 50, "softmax", dtype=dtype)
    theta = mlpgrad.pack(Ws, bs)
    obj = mlpgrad.Objective(sizes, X, y, head="softmax", dtype=dtype)
    loss, grad = obj.loss_and_grad(theta)
    other = theta.astype(np.float64 if dtype == np.float32 else np.float32)
    strided = np.repeat(theta, 2)[::2]
    assert obj.loss_and_grad(strided)[0] == loss and np.array_equal(obj.loss_and_grad(strided)[1], grad)
    assert obj.loss_and_grad(list(theta))[0] == loss
    assert obj.loss_and_grad(other)[1].dtype == dtype


def test_scipy_minimize_lowers_the_loss():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    sizes = [8, 12, 3]
    Ws, bs, X, y = make_problem(sizes, 300, "softmax", seed=2)
    obj = mlpgrad.Objective(sizes, X, y, head="softmax", reduction="mean", alpha=1e-3)
    theta0 = mlpgrad.pack(Ws, bs)
    res = scipy_optimize.minimize(obj.loss_and_grad, theta0, jac=True, method="L-BFGS-B",
                                  options={"maxiter": 50})
    assert res.nit > 5 and res.fun < 0.8 * obj.loss(theta0)
    assert obj.loss(res.x) == pytest.approx(res.fun, rel=tol(np.float64))


def test_float32_objective_under_scipy():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    sizes = [8, 12, 1]
    Ws, bs, X, y = make_problem(sizes, 300, "sigmoid", dtype=np.float32, seed=3)
    obj = mlpgrad.Objective(sizes, X, y, head="sigmoid", reduction="mean")
    theta0 = mlpgrad.pack(Ws, bs)
    res = scipy_optimize.minimize(obj.loss_and_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 30})
    assert res.fun < 0.9 * obj.loss(theta0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_receives_the_gradient(dtype):
    sizes = [5, 7, 3]
    Ws, bs, X, y = make_problem(sizes, 40, "softmax", dtype=dtype)
    theta = mlpgrad.pack(Ws, bs)
    obj = mlpgrad.Objective(sizes, X, y, head="softmax", alpha=0.1)
    out = np.full(obj.n_params, np.nan, dtype=dtype)
    loss, grad = obj.loss_and_grad(theta, out=out)
    assert grad is out
    want_loss, want_grad = obj.loss_and_grad(theta)
    assert loss == want_loss and np.array_equal(out, want_grad)


@pytest.mark.parametrize("out, exc, match", [
    (np.zeros(49, np.float64), ValueError, r"shape \(50,\)"),
    (np.zeros(50, np.float32), TypeError, "dtype float64"),
    (np.zeros(100)[::2], ValueError, "not C-contiguous"),
    ([0.0] * 50, TypeError, "out must be a NumPy array"),
])
def test_out_rejects(out, exc, match):
    sizes = [5, 7, 1]
    Ws, bs, X, y = make_problem(sizes, 10, "sigmoid")
    obj = mlpgrad.Objective(sizes, X, y, head="sigmoid")
    with pytest.raises(exc, match=match):
        obj.loss_and_grad(mlpgrad.pack(Ws, bs), out=out)


def test_out_read_only_is_refused():
    sizes = [5, 7, 1]
    Ws, bs, X, y = make_problem(sizes, 10, "sigmoid")
    obj = mlpgrad.Objective(sizes, X, y, head="sigmoid")
    out = np.zeros(obj.n_params)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        obj.loss_and_grad(mlpgrad.pack(Ws, bs), out=out)


# ------------------------------------------------------------------ data bound once

def test_the_data_are_bound_at_construction():
    sizes = [5, 7, 3]
    Ws, bs, X, y = make_problem(sizes, 60, "softmax")
    sw = np.ones(60)
    theta = mlpgrad.pack(Ws, bs)
    X0, y0, sw0 = X.copy(), y.copy(), sw.copy()
    obj = mlpgrad.Objective(sizes, X, y, head="softmax", reduction="mean", sample_weight=sw)
    before = obj.loss_and_grad(theta)
    y[:] = 99  # out of range: the Objective holds its own copy of the labels, scanned once
    sw[:] = -1
    after = obj.loss_and_grad(theta)
    assert after[0] == before[0] and np.array_equal(after[1], before[1])
    assert np.array_equal(X, X0)
    y[:], sw[:] = y0, sw0
    assert obj.total_weight == 60.0


def test_objective_is_deterministic_for_any_thread_count():
    sizes = [20, 64, 64, 4]
    Ws, bs, X, y = make_problem(sizes, 3000, "softmax", dtype=np.float32, seed=8)
    theta = mlpgrad.pack(Ws, bs)
    results = []
    for n_threads in (1, 2, 3, 8):
        obj = mlpgrad.Objective(sizes, X, y, head="softmax", n_threads=n_threads)
        results.append(obj.loss_and_grad(theta))
    for loss, grad in results[1:]:
        assert loss == results[0][0] and np.array_equal(grad, results[0][1])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(head="tanh"), ValueError, "head must be one of"),
    (dict(reduction="avg"), ValueError, "reduction must be one of"),
    (dict(alpha=-1.0), ValueError, "alpha must be finite and >= 0"),
    (dict(alpha=np.nan), ValueError, "alpha must be finite and >= 0"),
    (dict(alpha="0.1"), TypeError, "alpha must be a real number"),
    (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (dict(n_threads=0), ValueError, "n_threads must be None or an int"),
    (dict(layer_sizes=[4, 6]), ValueError, "X must have 4 columns"),
    (dict(y=np.full(20, 3)), ValueError, r"y labels must lie in \[0, 3\), got values in \[3, 3\]"),
    (dict(y=np.zeros((20, 2))), ValueError, r"y must have shape \(20, 3\)"),
    (dict(sample_weight=-np.ones(20)), ValueError, "sample_weight must be finite and >= 0"),
    (dict(sample_weight=np.zeros(20), reduction="mean"), ValueError, "sample_weight sums to 0"),
    (dict(X=np.zeros((0, 5)), y=np.zeros(0, int), reduction="mean"), ValueError, r"X has no rows \(N = 0\)"),
    (dict(X="data"), TypeError, "X must be an array"),
])
def test_objective_rejects(kwargs, exc, match):
    rng = np.random.default_rng(0)
    args = dict(layer_sizes=[5, 4, 3], X=rng.standard_normal((20, 5)), y=rng.integers(0, 3, 20), head="softmax")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        mlpgrad.Objective(args.pop("layer_sizes"), args.pop("X"), args.pop("y"), **args)


@pytest.mark.parametrize("theta, exc, match", [
    (np.zeros(38), ValueError, r"theta must have shape \(39,\)"),
    (np.zeros((1, 39)), ValueError, r"theta must have shape \(39,\)"),
    (np.zeros(39, complex), TypeError, "theta must be a real array"),
    (None, TypeError, "theta must be a real array"),
])
def test_objective_rejects_bad_theta(theta, exc, match):
    rng = np.random.default_rng(0)
    obj = mlpgrad.Objective([5, 4, 3], rng.standard_normal((20, 5)), rng.integers(0, 3, 20), head="softmax")
    with pytest.raises(exc, match=match):
        obj.loss_and_grad(theta)
    with pytest.raises(exc, match=match):
        obj.loss(theta)


def test_objective_at_n_zero_with_sum():
    obj = mlpgrad.Objective([5, 4, 3], np.zeros((0, 5)), np.zeros(0, int), head="softmax", alpha=2.0)
    theta = np.ones(obj.n_params)
    loss, grad = obj.loss_and_grad(theta)
    assert loss == pytest.approx(0.5 * 2.0 * 32) and np.all(grad[:32] == 2.0) and np.all(grad[32:] == 0.0)


def test_bound_data_pickle_round_trip():
    """Dask moves bound blocks between processes: a pickled batch scans again and computes the same."""
    from mlpgrad import _native

    sizes = [5, 7, 3]
    Ws, bs, X, y = make_problem(sizes, 30, "softmax")
    data = _native.bind_data(X, y, None, "softmax", 5, 3, np.dtype(np.float64), own=True)
    copy = pickle.loads(pickle.dumps(data))
    a = _native.loss_and_grad(Ws, bs, data, "sum", True, False, 1)
    b = _native.loss_and_grad(Ws, bs, copy, "sum", True, False, 1)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and copy.total_weight == data.total_weight


def test_a_rejected_batch_never_runs():
    from mlpgrad import _native

    sizes = [5, 7, 3]
    Ws, bs, X, _ = make_problem(sizes, 30, "softmax")
    data = _native.bind_data(X, np.full(30, 7), None, "softmax", 5, 3, np.dtype(np.float64), check=False)
    with pytest.raises(ValueError, match="rejected"):
        _native.loss_and_grad(Ws, bs, data, "sum", True, False, 1)


# ------------------------------------------------------------------ mlpgrad.dask.Objective (dask's local scheduler)

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head, kind", [("softmax", "labels"), ("sigmoid", "soft")])
def test_dask_objective_equals_the_in_memory_one(dtype, head, kind):
    da = pytest.importorskip("dask.array")
    mdask = pytest.importorskip("mlpgrad.dask")
    sizes, n = [6, 8, 3], 250
    Ws, bs, X, y = make_problem(sizes, n, head, kind, dtype, seed=6)
    sw = np.random.default_rng(7).uniform(0, 2, n)
    chunks = (37, 100, 0, 113)
    dX = da.from_array(X, chunks=(chunks, -1))
    dy = da.from_array(y, chunks=(chunks,) + ((-1,) if y.ndim == 2 else ()))
    dsw = da.from_array(sw, chunks=(chunks,))
    theta = mlpgrad.pack(Ws, bs)
    obj = mlpgrad.Objective(sizes, X, y, head=head, reduction="mean", sample_weight=sw, alpha=0.2)
    dobj = mdask.Objective(sizes, dX, dy, head=head, reduction="mean", sample_weight=dsw, alpha=0.2)
    assert dobj.n_samples == n and dobj.n_params == obj.n_params and dobj.dtype == dtype
    assert dobj.total_weight == pytest.approx(obj.total_weight, rel=tol(np.float64))
    loss, grad = obj.loss_and_grad(theta)
    dloss, dgrad = dobj.loss_and_grad(theta)
    assert dgrad.dtype == dtype
    assert dloss == pytest.approx(loss, rel=tol(dtype)) and rel_err(dgrad, grad) <= tol(dtype)
    assert dobj.loss(theta) == pytest.approx(dloss, rel=tol(dtype))
    again = dobj.loss_and_grad(theta)
    assert again[0] == dloss and np.array_equal(again[1], dgrad)  # bit-identical from run to run


def test_dask_objective_reports_the_whole_arrays_label_range():
    da = pytest.importorskip("dask.array")
    mdask = pytest.importorskip("mlpgrad.dask")
    X = np.zeros((30, 2))
    y = np.array([0] * 10 + [5] * 10 + [-2] * 10)
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 3\), got values in \[-2, 5\]"):
        mdask.Objective([2, 3], da.from_array(X, chunks=(10, 2)), da.from_array(y, chunks=10), head="softmax")
