"""The identity head (issue 15, part 2): z_L is the output, l_i = 1/2 sum_j (z_ij - y_ij)^2, delta_L = c (z - y).

* The reference against five-point central differences of its own loss (float64, as test_reference_gradcheck.py).
* Every native function against the reference in float64 (float32 inputs cast up), over a small case table:
  depths 1-4, k = 1 and k > 1, N = 0, 1, 97, 2000, both dtypes, both reductions, with and without sample weights,
  the schedules forced to chunked and layered, and networks of widths <= 16 on the narrow engine (automatic).
  Tolerance: tol(dtype) of _bounds (1e-12 float64, 1e-5 float32) in the max-norm relative error, per tensor.
* Results bit for bit the same on 1 and 3 threads.
* Bad targets (NaN, inf, wrong shape) raise ValueError naming y.
The largest error per dtype is printed after the run (tests/_report.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
import _report
from _bounds import tol
from _problems import fd_gradient, forced_schedule, make_problem, rel_err

HEAD = "identity"
LARGEST: dict = {}


@_report.section("identity head: native vs reference")
def _largest():
    return [f"  {dt}: largest rel_err {err:.3e} <= {tol(np.dtype(dt)):g} ({where})"
            for dt, (err, where) in sorted(LARGEST.items())]


def _check(what, got, want, dtype, where, bound=None):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (where, what, got.shape, want.shape)
    err = rel_err(got, want) if want.size and np.any(want) else float(np.max(np.abs(got), initial=0.0))
    bound = tol(np.dtype(dtype)) if bound is None else bound
    name = np.dtype(dtype).name
    if not err <= LARGEST.get(name, (0.0,))[0]:
        LARGEST[name] = (err, f"{where} {what}")
    assert err <= bound, f"{where}: {what} rel err {err:.3e} > {bound:.0e}"


def _to64(a):
    if a is None:
        return None
    if isinstance(a, list):
        return [_to64(x) for x in a]
    return np.array(a, dtype=np.float64)


# (sizes, N, dtype, reduction, sample weights, schedule); schedule None = automatic, "narrow" = automatic on a
# network of widths <= 16 (the narrow engine's).
CASES = [
    ([3, 1],              0, "float64", "sum",  False, None),
    ([3, 1],              1, "float32", "mean", True,  "chunked"),
    ([4, 3],             97, "float64", "sum",  True,  "layered"),
    ([5, 4, 2],          97, "float64", "mean", True,  "layered"),
    ([5, 4, 2],          97, "float32", "sum",  False, "chunked"),
    ([2, 3, 1],           1, "float64", "sum",  True,  "narrow"),
    ([16, 9, 12, 3],   2000, "float32", "mean", True,  "narrow"),
    ([16, 9, 12, 3],   2000, "float64", "sum",  True,  "narrow"),
    ([7, 65, 4],       2000, "float32", "mean", False, "chunked"),
    ([10, 130, 5],        0, "float32", "sum",  False, "layered"),
    ([130, 70, 2],       97, "float64", "mean", True,  "chunked"),
    ([40, 33, 17, 9, 1], 2000, "float64", "mean", False, "layered"),
    ([40, 33, 17, 9, 1],   97, "float32", "sum",  True,  None),
    ([6, 20, 10, 3, 1],  2000, "float32", "sum",  False, None),
]


def _case_id(case):
    sizes, n, dtype, red, sw, sched = case
    return f"{'-'.join(map(str, sizes))}_N{n}_{dtype[-2:]}_{red}{'_sw' if sw else ''}_{sched or 'auto'}"


def _build(case):
    sizes, n, dtype, red, sw, _ = case
    Ws, bs, X, y = make_problem(sizes, n, HEAD, dtype=np.dtype(dtype), seed=len(sizes) * 1000 + n)
    w = None
    if sw:
        w = np.random.default_rng(n).uniform(0.0, 2.0, n).astype(dtype)
        w[3::7] = 0.0
    return Ws, bs, X, y, w


def test_case_table_covers_the_brief():
    assert {len(c[0]) - 1 for c in CASES} == {1, 2, 3, 4}
    assert {c[1] for c in CASES} >= {0, 1, 97, 2000}
    assert {c[0][-1] == 1 for c in CASES} == {True, False}
    assert {c[5] for c in CASES} == {None, "chunked", "layered", "narrow"}
    assert all(max(c[0]) <= 16 for c in CASES if c[5] == "narrow")
    for i in (2, 3, 4):
        assert len({c[i] for c in CASES}) == 2


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_native_matches_reference(case):
    sizes, n, dtype, red, _, sched = case
    where = _case_id(case)
    Ws, bs, X, y, w = _build(case)
    kw = dict(head=HEAD, reduction=red, sample_weight=w)
    L_ref, g_ref = reference.loss_and_grad(_to64(Ws), _to64(bs), _to64(X), _to64(y), head=HEAD, reduction=red,
                                           sample_weight=_to64(w), input_grad=True)
    Z_ref = reference.forward(_to64(Ws), _to64(bs), _to64(X), head=HEAD)
    with forced_schedule(sched):
        Z = mlpgrad.forward(Ws, bs, X, head=HEAD)
        L, g = mlpgrad.loss_and_grad(Ws, bs, X, y, input_grad=True, **kw)
        L1, g1 = mlpgrad.loss_and_grad(Ws, bs, X, y, input_grad=True, n_threads=1, **kw)
        L3, g3 = mlpgrad.loss_and_grad(Ws, bs, X, y, input_grad=True, n_threads=3, **kw)
        L0 = mlpgrad.loss(Ws, bs, X, y, **kw)
    assert Z.dtype == np.dtype(dtype) and Z.shape == (n, sizes[-1])
    _check("forward", Z, Z_ref, dtype, where)
    _check("loss", L, L_ref, dtype, where)
    _check("loss()", L0, L_ref, dtype, where)
    for l, (a, b) in enumerate(zip(g.weights, g_ref.weights)):
        _check(f"dW[{l}]", a, b, dtype, where)
    for l, (a, b) in enumerate(zip(g.biases, g_ref.biases)):
        _check(f"db[{l}]", a, b, dtype, where)
    _check("dX", g.input, g_ref.input, dtype, where)
    # deterministic for any thread count
    assert L1 == L3
    for a, b in zip(g1.weights + g1.biases + [g1.input], g3.weights + g3.biases + [g3.input]):
        assert np.array_equal(a, b), where


def test_narrow_engine_takes_the_head():
    """On a narrow network the automatic choice is the narrow engine (its own head code): another summation order
    than the forced chunked schedule, so other bits, and both within the bound of the reference."""
    Ws, bs, X, y = make_problem([5, 3, 4], 5000, HEAD, dtype=np.float32, seed=2)
    ref = reference.loss_and_grad(_to64(Ws), _to64(bs), _to64(X), _to64(y), head=HEAD)[1]
    results = {}
    for name in ("narrow", "chunked"):
        with forced_schedule(name):
            results[name] = mlpgrad.pack(*mlpgrad.loss_and_grad(Ws, bs, X, y, head=HEAD)[1][:2])
        _check("grad", results[name], mlpgrad.pack(ref.weights, ref.biases), np.float32, f"[5, 3, 4] {name}")
    assert not np.array_equal(results["narrow"], results["chunked"])


def test_objective_matches_reference():
    Ws, bs, X, y = make_problem([6, 8, 3], 50, HEAD, seed=4)
    w = np.random.default_rng(5).uniform(0.5, 1.5, 50)
    obj = mlpgrad.Objective([6, 8, 3], X, y, head=HEAD, reduction="mean", sample_weight=w, dtype=np.float64)
    theta = mlpgrad.pack(Ws, bs)
    L, g = obj.loss_and_grad(theta)
    L_ref, g_ref = reference.loss_and_grad(Ws, bs, X, y, head=HEAD, reduction="mean", sample_weight=w)
    _check("Objective loss", L, L_ref, np.float64, "objective")
    _check("Objective grad", g, mlpgrad.pack(g_ref.weights, g_ref.biases), np.float64, "objective")
    _check("Objective.loss", obj.loss(theta), L_ref, np.float64, "objective")


# -- per-sample and curvature functions against the reference ------------------------------------------------

PS_CASES = [
    ([4, 1],         1, "float64", None),
    ([5, 7, 3],     97, "float64", "chunked"),
    ([5, 7, 3],     97, "float32", "layered"),
    ([6, 9, 5, 1], 300, "float64", "narrow"),
    ([30, 40, 2], 300, "float32", None),
]


def _ps_id(case):
    sizes, n, dtype, sched = case
    return f"{'-'.join(map(str, sizes))}_N{n}_{dtype[-2:]}_{sched or 'auto'}"


# float32 per-sample rows and curvature products against a float64 reference: the bound of the other suites
# (test_per_sample.py, test_curvature.py) for products that sum over rows with cancellation.
PS_F32_BOUND = 1e-4


@pytest.mark.parametrize("case", PS_CASES, ids=_ps_id)
def test_per_sample_and_curvature_match_reference(case):
    sizes, n, dtype, sched = case
    where = "per-sample " + _ps_id(case)
    Ws, bs, X, y = make_problem(sizes, n, HEAD, dtype=np.dtype(dtype), seed=n)
    w = np.random.default_rng(7).uniform(0.0, 2.0, n).astype(dtype)
    args, args64 = (Ws, bs, X, y), (_to64(Ws), _to64(bs), _to64(X), _to64(y))
    P = sum(W.size + b.size for W, b in zip(Ws, bs))
    V = np.random.default_rng(8).standard_normal((P, 2)).astype(dtype)
    bound = None if dtype == "float64" else PS_F32_BOUND
    with forced_schedule(sched):
        got = {
            "norms": mlpgrad.per_sample_grad_norms(*args, head=HEAD),
            "layer norms": mlpgrad.per_sample_grad_norms(*args, head=HEAD, per_layer=True),
            "rows": mlpgrad.per_sample_grads(*args, head=HEAD),
            "dot": mlpgrad.grad_dot(*args, V, head=HEAD),
            "gram": mlpgrad.grad_gram(*args, head=HEAD),
            "hvp": mlpgrad.hvp(*args, V, head=HEAD, reduction="mean", sample_weight=w),
            "ggn_vp": mlpgrad.ggn_vp(*args, V, head=HEAD, sample_weight=w),
            "ggn_diag": mlpgrad.ggn_diag(*args, head=HEAD, reduction="mean"),
        }
        Lc, gc, nc = mlpgrad.clipped_grad(*args, head=HEAD, max_norm=0.5, reduction="mean", sample_weight=w)
        ssq = mlpgrad.sum_squared_grads(*args, head=HEAD, sample_weight=w)
    w64 = _to64(w)
    want = {
        "norms": reference.per_sample_grad_norms(*args64, head=HEAD),
        "layer norms": reference.per_sample_grad_norms(*args64, head=HEAD, per_layer=True),
        "rows": reference.per_sample_grads(*args64, head=HEAD),
        "dot": reference.grad_dot(*args64, _to64(V), head=HEAD),
        "gram": reference.grad_gram(*args64, head=HEAD),
        "hvp": reference.hvp(*args64, _to64(V), head=HEAD, reduction="mean", sample_weight=w64),
        "ggn_vp": reference.ggn_vp(*args64, _to64(V), head=HEAD, sample_weight=w64),
        "ggn_diag": reference.ggn_diag(*args64, head=HEAD, reduction="mean"),
    }
    for name in got:
        _check(name, got[name], want[name], dtype, where, bound)
    Lr, gr, nr = reference.clipped_grad(*args64, head=HEAD, max_norm=0.5, reduction="mean", sample_weight=w64)
    _check("clipped loss", Lc, Lr, dtype, where, bound)
    _check("clipped grad", mlpgrad.pack(gc.weights, gc.biases), mlpgrad.pack(gr.weights, gr.biases), dtype, where,
           bound)
    _check("clipped norms", nc, nr, dtype, where, bound)
    sr = reference.sum_squared_grads(*args64, head=HEAD, sample_weight=w64)
    _check("sum_squared_grads", mlpgrad.pack(ssq.weights, ssq.biases), mlpgrad.pack(sr.weights, sr.biases), dtype,
           where, bound)


def test_reference_per_sample_deltas_and_curvature_by_hand():
    """The identity head's unit deltas are z - y, and its Gauss-Newton matrix is J^T C J: with one linear layer
    (z = X W + b) the GGN equals the Hessian, and both equal [X 1]^T C [X 1] on each output column."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 3)), rng.standard_normal(6)
    W, b = rng.standard_normal((3, 1)), rng.standard_normal(1)
    rows = reference.per_sample_grads([W], [b], X, y, head=HEAD)
    r = (X @ W + b)[:, 0] - y
    np.testing.assert_allclose(rows, np.column_stack([X * r[:, None], r]), rtol=1e-13, atol=1e-13)
    A = np.column_stack([X, np.ones(6)])
    H = A.T @ A
    eye = np.eye(4)
    np.testing.assert_allclose(reference.hvp([W], [b], X, y, eye, head=HEAD), H, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.ggn_vp([W], [b], X, y, eye, head=HEAD), H, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.ggn_diag([W], [b], X, y, head=HEAD), np.diag(H), rtol=1e-12)
    np.testing.assert_allclose(mlpgrad.hvp([W], [b], X, y, eye, head=HEAD), H, rtol=1e-12, atol=1e-12)


# -- the reference against finite differences ----------------------------------------------------------------

@pytest.mark.parametrize("sizes,n", [([3, 4, 2], 5), ([2, 5, 3, 1], 3), ([4, 3, 3, 3, 2], 2), ([3, 1], 1)])
@pytest.mark.parametrize("reduction,weighted", [("sum", False), ("mean", True)])
def test_reference_gradient_matches_finite_differences(sizes, n, reduction, weighted):
    Ws, bs, X, y = make_problem(sizes, n, HEAD, seed=n)
    w = None
    if weighted:
        w = np.random.default_rng(2).uniform(0.5, 2.0, n)
        if n > 1:
            w[-1] = 0.0
    kw = dict(head=HEAD, reduction=reduction, sample_weight=w)
    _, g = reference.loss_and_grad(Ws, bs, X, y, input_grad=True, **kw)

    def loss():
        return reference.loss(Ws, bs, X, y, **kw)

    for l in range(len(Ws)):
        assert rel_err(g.weights[l], fd_gradient(loss, Ws[l], 1e-3)) <= 1e-7
        assert rel_err(g.biases[l], fd_gradient(loss, bs[l], 1e-3)) <= 1e-7
    assert rel_err(g.input, fd_gradient(loss, X, 1e-3)) <= 1e-7


def test_reference_hvp_matches_finite_differences_of_the_gradient():
    Ws, bs, X, y = make_problem([3, 4, 2], 5, HEAD, seed=3)
    theta = mlpgrad.pack(Ws, bs)
    v = np.random.default_rng(4).standard_normal(theta.size)

    def grad(t):
        W2, b2 = mlpgrad.unpack(t, [3, 4, 2])
        g = reference.loss_and_grad(W2, b2, X, y, head=HEAD)[1]
        return mlpgrad.pack(g.weights, g.biases)

    h = 1e-3
    fd = (-grad(theta + 2 * h * v) + 8 * grad(theta + h * v) - 8 * grad(theta - h * v) + grad(theta - 2 * h * v)) / (
        12 * h)
    assert rel_err(reference.hvp(Ws, bs, X, y, v, head=HEAD), fd) <= 1e-7


# -- the head through train_epoch ------------------------------------------------------------------------------

def test_train_epoch_passes_the_head():
    """One full-batch sgd step (momentum 0) moves theta by -lr * (the identity head's mean gradient)."""
    from mlpgrad import _native
    sizes = [4, 6, 2]
    Ws, bs, X, y = make_problem(sizes, 40, HEAD, seed=9)
    theta = mlpgrad.pack(Ws, bs)
    p = theta.copy()
    t = np.array([0], dtype=np.int64)
    data = _native.bind_data(X, y, None, HEAD, sizes[0], sizes[-1], X.dtype)
    options = _native.train_options("sgd", 40, 0.0, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    loss_sum, _, steps = _native.train_epoch(p, np.empty_like(p), np.zeros_like(p), None, t, sizes, data, None,
                                             options, 0.0, 1)
    L, g = reference.loss_and_grad(Ws, bs, X, y, head=HEAD, reduction="mean")
    assert steps == 1
    np.testing.assert_allclose(p, theta - 0.1 * mlpgrad.pack(g.weights, g.biases), rtol=1e-12, atol=1e-14)
    assert abs(loss_sum - 40 * L) <= 1e-12 * abs(40 * L)  # the epoch sums the rows' losses


# -- bad targets -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "overflow", "shape", "1-D for k > 1"])
def test_bad_targets_raise_naming_y(dtype, bad):
    k = 1 if bad in ("nan", "inf", "-inf", "overflow") else 3
    Ws, bs, X, y = make_problem([3, 4, k], 6, HEAD, dtype=dtype, seed=1)
    y = np.array(y, dtype=np.float64)
    if bad == "nan":
        y[2] = np.nan
    elif bad in ("inf", "-inf"):
        y[2] = float(bad)
    elif bad == "overflow":
        y[2] = 1e300  # finite in float64, inf once cast to float32
        if dtype == np.float64:
            pytest.skip("1e300 is a valid float64 target")
    elif bad == "shape":
        y = y[:, :2]
    else:
        y = y[:, 0]
    theta = mlpgrad.pack(Ws, bs)
    calls = [
        lambda: mlpgrad.loss(Ws, bs, X, y, head=HEAD),
        lambda: mlpgrad.loss_and_grad(Ws, bs, X, y, head=HEAD),
        lambda: mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head=HEAD),
        lambda: mlpgrad.ggn_diag(Ws, bs, X, y, head=HEAD),
        lambda: mlpgrad.Objective([3, 4, k], X, y, head=HEAD, dtype=dtype).loss(theta),
        lambda: reference.loss(Ws, bs, X, y, head=HEAD),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"\by\b"):
            call()


def test_any_finite_target_is_valid():
    Ws, bs, X, _ = make_problem([3, 2], 4, HEAD, seed=2)
    y = np.array([[-1e30, 7.0], [0.0, -3.5], [1e-300, 2.0], [42.0, -0.0]])
    L_ref = reference.loss(Ws, bs, X, y, head=HEAD)
    assert np.isfinite(L_ref)
    _check("loss", mlpgrad.loss(Ws, bs, X, y, head=HEAD), L_ref, np.float64, "large targets")
