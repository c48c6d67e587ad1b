"""The native curvature products (issue 13: ``mlpgrad.hvp``, ``ggn_vp``, ``ggn_diag`` and the Objective's
methods and operators) against the NumPy reference (``mlpgrad.reference``, checked against finite differences
and explicit Jacobians in test_curvature_reference.py).

Tolerance (``_bounds.tol``) per result, in the max-norm relative error of ``_problems.rel_err``: 1e-12 in
float64, 1e-5 in float32 (native float32 against the reference in float64 on the same float32 values), over the
case table of test_per_sample.py (depth 1-5, widths 1-300, N 1-4096, heads, target kinds, reductions, sample
weights, dtypes, layouts). Then: the same bits for n_threads 1, 2, 3 and 8, every SIMD level, u.Hv = v.Hu,
v.Gv >= 0, the Objective's penalty, LinearOperators, N = 0 and the caller's arrays left unchanged.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
from _problems import make_problem, rel_err
from test_per_sample import CASES, _blocks, _build_case, _case_id, _check, _n_params, _params, _to64


def _scale(n, w, reduction):
    """c_i: the factor of sample i in the loss."""
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    return w / w.sum() if reduction == "mean" else w


def _reference(name, Ws, bs, X, y, head, reduction, w, V=None):
    """The reference in float64, a sum over blocks of rows with c_i as the weights of a "sum" (ggn_diag forms
    (rows, P) matrices: its memory stays bounded)."""
    Ws, bs, X, y = _to64(Ws), _to64(bs), _to64(X), _to64(y)
    c = _scale(X.shape[0], w, reduction)
    fn = getattr(reference, name)
    args = () if V is None else (np.asarray(V, dtype=np.float64),)
    total = None
    for s in _blocks(X.shape[0], _n_params(Ws) * (Ws[-1].shape[1] if V is None else 1)):
        part = fn(Ws, bs, X[s], y[s], *args, head=head, reduction="sum", sample_weight=c[s])
        total = part if total is None else total + part
    return total


def _vectors(P, m, dtype, seed):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((P, m)).astype(dtype)
    return np.asfortranarray(V) if m > 1 else V[:, 0]


@pytest.mark.parametrize("case", _params(CASES), ids=_case_id)
def test_native_matches_reference(case):
    sizes, n, dtype, head, kind, red, sw, xl, wl, yl = case
    dt = np.dtype(dtype)
    where = _case_id(case)
    seed = zlib.crc32(where.encode()) % 1000
    Ws, bs, X, y, w = _build_case(case, seed=seed)
    P = _n_params(Ws)
    kw = dict(head=head, reduction=red, sample_weight=w)
    for m in (1, 3):
        V = _vectors(P, m, dt, seed + m)
        for name in ("hvp", "ggn_vp"):
            got = getattr(mlpgrad, name)(Ws, bs, X, y, V, **kw)
            assert got.dtype == dt and got.shape == V.shape, f"{where}: {name} {got.dtype} {got.shape}"
            _check(f"{name} m={m}", got, _reference(name, Ws, bs, X, y, head, red, w, V), dt, where)
    got = mlpgrad.ggn_diag(Ws, bs, X, y, **kw)
    assert got.dtype == dt and got.shape == (P,)
    _check("ggn_diag", got, _reference("ggn_diag", Ws, bs, X, y, head, red, w), dt, where)


def _problem(dtype="float64", head="softmax", kind="labels", sizes=(13, 40, 17, 5), n=700, seed=3):
    Ws, bs, X, y = make_problem(list(sizes), n, head, kind, np.dtype(dtype), seed=seed)
    return Ws, bs, X, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("head,kind", [("softmax", "labels"), ("sigmoid", "soft")])
def test_n_threads_give_the_same_bits(dtype, head, kind):
    Ws, bs, X, y = _problem(dtype, head, kind, sizes=(13, 40, 17, 5 if head == "softmax" else 3), n=2000)
    V = _vectors(_n_params(Ws), 2, np.dtype(dtype), 0)
    for name, args in (("hvp", (V,)), ("ggn_vp", (V,)), ("ggn_diag", ())):
        fn = getattr(mlpgrad, name)
        first = fn(Ws, bs, X, y, *args, head=head, reduction="mean", n_threads=1)
        for nt in (2, 3, 8):
            again = fn(Ws, bs, X, y, *args, head=head, reduction="mean", n_threads=nt)
            assert np.array_equal(again, first), f"{name}: n_threads={nt} differs from 1"


@pytest.mark.parametrize("simd", mlpgrad.build_info()["simd_available"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_simd_level_matches_reference(simd, dtype):
    previous = mlpgrad.build_info()["simd"]
    mlpgrad._native.set_simd(simd)
    try:
        for sizes, n, head in (((5, 33, 2), 100, "sigmoid"), ((9, 17, 31, 4), 300, "softmax")):
            Ws, bs, X, y = _problem(dtype, head, "labels", sizes, n)
            V = _vectors(_n_params(Ws), 2, np.dtype(dtype), 1)
            for name, args in (("hvp", (V,)), ("ggn_vp", (V,)), ("ggn_diag", ())):
                got = getattr(mlpgrad, name)(Ws, bs, X, y, *args, head=head)
                want = _reference(name, Ws, bs, X, y, head, "sum", None, *args)
                _check(name, got, want, dtype, f"{simd} {dtype} {sizes} N{n} {head}")
    finally:
        mlpgrad._native.set_simd(previous)


def test_hessian_is_symmetric_and_gauss_newton_positive():
    Ws, bs, X, y = _problem(n=500)
    P = _n_params(Ws)
    rng = np.random.default_rng(5)
    U = rng.standard_normal((P, 4))
    HU = mlpgrad.hvp(Ws, bs, X, y, U, head="softmax")
    GU = mlpgrad.ggn_vp(Ws, bs, X, y, U, head="softmax")
    H_small, G_small = U.T @ HU, U.T @ GU
    assert rel_err(H_small, H_small.T) <= 1e-12
    assert rel_err(G_small, G_small.T) <= 1e-12
    assert np.all(np.linalg.eigvalsh((G_small + G_small.T) / 2) >= -1e-12 * np.abs(G_small).max())
    assert not np.allclose(HU, GU)  # the hidden layers' second derivatives are there


def test_without_hidden_layers_hessian_equals_gauss_newton():
    Ws, bs, X, y = _problem(sizes=(9, 4), n=300)
    V = _vectors(_n_params(Ws), 3, np.dtype(np.float64), 2)
    H = mlpgrad.hvp(Ws, bs, X, y, V, head="softmax", reduction="mean")
    G = mlpgrad.ggn_vp(Ws, bs, X, y, V, head="softmax", reduction="mean")
    assert rel_err(H, G) <= 1e-12


def test_ggn_diag_is_the_diagonal_of_ggn_vp():
    Ws, bs, X, y = _problem(sizes=(4, 6, 3), n=200, kind="soft")
    P = _n_params(Ws)
    G = mlpgrad.ggn_vp(Ws, bs, X, y, np.eye(P), head="softmax")
    assert rel_err(mlpgrad.ggn_diag(Ws, bs, X, y, head="softmax"), np.diag(G)) <= 1e-12


def test_many_vectors_in_blocks_equal_one_at_a_time():
    Ws, bs, X, y = _problem(dtype="float32", n=300)
    V = _vectors(_n_params(Ws), 37, np.dtype(np.float32), 4)  # more than one native block of 16
    for name in ("hvp", "ggn_vp"):
        fn = getattr(mlpgrad, name)
        block = fn(Ws, bs, X, y, V, head="softmax")
        single = np.stack([fn(Ws, bs, X, y, V[:, j], head="softmax") for j in range(V.shape[1])], axis=1)
        assert np.array_equal(block, single), name


def test_empty_batch_gives_zeros():
    Ws, bs, X, y = _problem(n=0)
    V = _vectors(_n_params(Ws), 2, np.dtype(np.float64), 0)
    assert not np.any(mlpgrad.hvp(Ws, bs, X, y, V, head="softmax"))
    assert not np.any(mlpgrad.ggn_vp(Ws, bs, X, y, V, head="softmax"))
    assert not np.any(mlpgrad.ggn_diag(Ws, bs, X, y, head="softmax"))


def test_inputs_are_left_unchanged():
    Ws, bs, X, y = _problem(dtype="float32", n=100)
    V = _vectors(_n_params(Ws), 2, np.dtype(np.float32), 0)
    w = np.linspace(0.5, 1.5, 100).astype(np.float32)
    before = [a.copy() for a in Ws + bs + [X, y, V, w]]
    mlpgrad.hvp(Ws, bs, X, y, V, head="softmax", sample_weight=w)
    mlpgrad.ggn_vp(Ws, bs, X, y, V, head="softmax", sample_weight=w)
    mlpgrad.ggn_diag(Ws, bs, X, y, head="softmax", sample_weight=w)
    for a, b in zip(Ws + bs + [X, y, V, w], before):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_objective_methods_add_the_penalty(dtype):
    Ws, bs, X, y = _problem(dtype, n=400)
    sizes = [13, 40, 17, 5]
    alpha = 0.3
    obj = mlpgrad.Objective(sizes, X, y, head="softmax", reduction="mean", alpha=alpha, dtype=dtype)
    theta = mlpgrad.pack(Ws, bs)
    P, n_w = len(theta), sum(W.size for W in Ws)
    V = _vectors(P, 3, np.dtype(dtype), 7)
    mask = (np.arange(P) < n_w)[:, None]
    for name in ("hvp", "ggn_vp"):
        plain = getattr(mlpgrad, name)(Ws, bs, X, y, V, head="softmax", reduction="mean")
        got = getattr(obj, name)(theta, V)
        assert got.dtype == np.dtype(dtype)
        assert np.array_equal(got, plain + np.asarray(alpha, dtype) * np.where(mask, V, 0)) or \
            rel_err(got, plain + alpha * mask * V) <= 1e-6
        assert np.array_equal(getattr(obj, name)(theta, V[:, 0]), got[:, 0]) or \
            rel_err(getattr(obj, name)(theta, V[:, 0]), got[:, 0]) <= 1e-6
    diag = obj.ggn_diag(theta)
    want = mlpgrad.ggn_diag(Ws, bs, X, y, head="softmax", reduction="mean") + alpha * mask[:, 0]
    assert rel_err(diag, want) <= (1e-6 if dtype == "float32" else 1e-14)


def test_operators_solve_with_conjugate_gradients():
    from scipy.sparse.linalg import LinearOperator, cg

    Ws, bs, X, y = _problem(n=500, sizes=(6, 12, 4))
    obj = mlpgrad.Objective([6, 12, 4], X, y, head="softmax", reduction="mean", alpha=1e-2)
    theta = mlpgrad.pack(Ws, bs)
    G = obj.ggn_operator(theta)
    H = obj.hessian_operator(theta)
    P = len(theta)
    assert isinstance(G, LinearOperator) and G.shape == (P, P) and G.dtype == np.float64
    V = _vectors(P, 3, np.dtype(np.float64), 3)
    assert np.array_equal(G @ V, obj.ggn_vp(theta, V))
    assert np.array_equal(H.matvec(V[:, 0]), obj.hvp(theta, V[:, 0]))
    assert np.array_equal(G.rmatvec(V[:, 0]), obj.ggn_vp(theta, V[:, 0]))
    theta[:] = 0  # the operator holds its own copy
    assert np.array_equal(G @ V, obj.ggn_vp(mlpgrad.pack(Ws, bs), V))
    b = V[:, 0]
    damped = LinearOperator((P, P), matvec=lambda v: G @ v + 1e-3 * v, dtype=np.float64)
    x, info = cg(damped, b, rtol=1e-10, maxiter=10 * P)
    assert info == 0
    assert rel_err(damped @ x, b) <= 1e-8


def test_bad_vectors_raise():
    Ws, bs, X, y = _problem(n=10)
    P = _n_params(Ws)
    obj = mlpgrad.Objective([13, 40, 17, 5], X, y, head="softmax")
    theta = mlpgrad.pack(Ws, bs)
    for fn in (lambda V: mlpgrad.hvp(Ws, bs, X, y, V, head="softmax"),
               lambda V: mlpgrad.ggn_vp(Ws, bs, X, y, V, head="softmax"),
               lambda V: obj.hvp(theta, V), lambda V: obj.ggn_vp(theta, V)):
        with pytest.raises(ValueError, match="V must have shape"):
            fn(np.zeros(P + 1))
        with pytest.raises(ValueError, match="V must have shape"):
            fn(np.zeros((P, 0)))
        with pytest.raises(ValueError, match="V must have shape"):
            fn(np.zeros((P, 2, 1)))
        with pytest.raises(TypeError, match="V must be a real array"):
            fn(np.zeros(P, dtype=complex))
        with pytest.raises(ValueError, match="V must be finite"):
            fn(np.full(P, np.nan))
