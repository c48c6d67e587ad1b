"""The per-sample functions of ``mlpgrad.reference`` (issue 12) against central finite differences of single
samples' losses, in float64, and against the identities that tie them to ``loss_and_grad``.

Finite differences: row i of ``per_sample_grads`` must equal the five-point central difference (``_problems.
fd_gradient``, step 1e-3 max(1, |t|), truncation ~1e-12; see test_reference_gradcheck.py) of l_i, sample i's own
loss (``reference.loss`` on the one row X[i:i+1]), for every parameter, flattened in pack order: ``rel_err <= 1e-7``
per row.  The other five functions are then checked through that finite-difference matrix G_fd: norms, dot
products, Gram entries, the weighted sum of squares and the clipped sum (factors from G_fd's norms), each
``rel_err <= 1e-7``.  Networks of depth 1-3 and widths 1-5, both heads, labels, sigmoid targets in [0, 1], softmax
soft targets (rows summing to one, and rows that do not).

Identities (float64, ``_bounds.tol``, 1e-12): sum_i c_i g_i is loss_and_grad's gradient (both reductions, with and
without sample weights); clipped_grad is loss_and_grad with the sample weights multiplied by the clip factors
(whole and per layer); the per-layer norms combine to the whole norm and follow (||h||^2 + 1) ||delta||^2;
grad_gram is G G^T and G G2^T; grad_dot is G V; a zero gradient gets factor 1 (no NaN); max_norm = +inf gives the
plain gradient.  Then the argument rules of ``_checks`` (check_max_norm, check_vectors, check_second_set, out=),
N = 0, dtypes, and inputs left unchanged.  The largest errors are printed after the run (tests/_report.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
from mlpgrad._checks import check_max_norm, check_second_set, check_vectors
import _report
from _bounds import tol
from _problems import fd_gradient, make_network, make_problem, make_targets, rel_err

FD_REL_STEP = 1e-3
FD_TOL = 1e-7  # the five-point stencil's bound, as in test_reference_gradcheck.py

LARGEST = {}  # kind -> (error, where)


@_report.section("per-sample reference: largest max-norm relative error")
def _largest():
    return [f"  {kind}: {err:.3e} at {where}" for kind, (err, where) in sorted(LARGEST.items())]


def _check(kind, got, want, bound, where):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{where}: shape {got.shape}, expected {want.shape}"
    err = rel_err(got, want) if np.any(want) else float(np.max(np.abs(got), initial=0.0))
    if not err <= LARGEST.get(kind, (0.0,))[0]:
        LARGEST[kind] = (err, where)
    assert err <= bound, f"{where}: {kind} rel_err {err:.3e} > {bound:g}"
    return err


def _flat(g):
    """Gradients -> (P,) in pack order."""
    return mlpgrad.pack(g.weights, g.biases)


def _n_params(Ws):
    return sum(W.size + W.shape[1] for W in Ws)


def _layer_slices(Ws):
    """Per layer, the pack-order indices of W_l and b_l."""
    starts_w = np.cumsum([0] + [W.size for W in Ws])
    nw = starts_w[-1]
    starts_b = nw + np.cumsum([0] + [W.shape[1] for W in Ws])
    return [np.r_[starts_w[l]:starts_w[l + 1], starts_b[l]:starts_b[l + 1]] for l in range(len(Ws))]


def _targets(head, kind, n, k, rng):
    if kind == "unnormalized":  # softmax rows that do not sum to one
        return rng.random((n, k)) * 2.0
    return make_targets(head, kind, n, k, np.float64, rng)


# -- finite differences of single samples' losses --------------------------------------------------

FD_SIZES = [[3, 2], [1, 1], [3, 4, 2], [2, 5, 1], [2, 5, 3, 1], [4, 3, 3, 3]]
HEAD_KINDS = [("sigmoid", "labels"), ("sigmoid", "soft"),
              ("softmax", "labels"), ("softmax", "soft"), ("softmax", "unnormalized")]


def _fd_rows(Ws, bs, X, y, head):
    """G_fd (N, P): the finite-difference gradient of each sample's own loss, in pack order."""
    rows = []
    for i in range(X.shape[0]):
        Xi, yi = X[i:i + 1], y[i:i + 1]

        def loss_i():
            return reference.loss(Ws, bs, Xi, yi, head=head)

        parts = [fd_gradient(loss_i, a, FD_REL_STEP).ravel() for a in Ws + bs]
        rows.append(np.concatenate(parts))
    return np.array(rows).reshape(X.shape[0], _n_params(Ws))


# (one softmax unit is left out: its loss is constant, zero for every target kind)
FD_CASES = [(sizes, head, kind) for sizes in FD_SIZES for head, kind in HEAD_KINDS
            if not (head == "softmax" and sizes[-1] == 1)]


@pytest.mark.parametrize("sizes,head,kind", FD_CASES,
                         ids=[f"{'-'.join(map(str, s))}-{h}-{k}" for s, h, k in FD_CASES])
def test_per_sample_functions_match_finite_differences(sizes, head, kind):
    n = 4
    rng = np.random.default_rng(100 * len(sizes) + sum(sizes))
    Ws, bs = make_network(sizes, np.float64, rng)
    X = rng.standard_normal((n, sizes[0]))
    y = _targets(head, kind, n, sizes[-1], rng)
    where = f"{sizes} {head}-{kind}"
    G_fd = _fd_rows(Ws, bs, X, y, head)
    args = (Ws, bs, X, y)

    G = reference.per_sample_grads(*args, head=head)
    assert G.shape == G_fd.shape and G.dtype == np.float64
    for i in range(n):
        _check("per_sample_grads vs FD", G[i], G_fd[i], FD_TOL, f"{where} row {i}")

    norms_fd = np.linalg.norm(G_fd, axis=1)
    _check("norms vs FD", reference.per_sample_grad_norms(*args, head=head), norms_fd, FD_TOL, where)
    layer_norms_fd = np.stack([np.linalg.norm(G_fd[:, s], axis=1) for s in _layer_slices(Ws)], axis=1)
    _check("per-layer norms vs FD", reference.per_sample_grad_norms(*args, head=head, per_layer=True),
           layer_norms_fd, FD_TOL, where)

    V = rng.standard_normal((G.shape[1], 3))
    _check("grad_dot vs FD", reference.grad_dot(*args, V, head=head), G_fd @ V, FD_TOL, where)
    _check("grad_dot 1-D vs FD", reference.grad_dot(*args, V[:, 0], head=head), G_fd @ V[:, 0], FD_TOL, where)
    _check("grad_gram vs FD", reference.grad_gram(*args, head=head), G_fd @ G_fd.T, FD_TOL, where)
    _check("grad_gram X2 vs FD", reference.grad_gram(*args, X[1:3], y[1:3], head=head), G_fd @ G_fd[1:3].T,
           FD_TOL, where)

    w = rng.uniform(0.25, 2.0, n)
    w[1] = 0.0
    _check("sum_squared_grads vs FD", _flat(reference.sum_squared_grads(*args, head=head, sample_weight=w)),
           w @ G_fd ** 2, FD_TOL, where)
    _check("sum_squared_grads vs FD", _flat(reference.sum_squared_grads(*args, head=head)),
           (G_fd ** 2).sum(axis=0), FD_TOL, where)

    # clipping at the median norm: about half the samples are clipped
    c = w / w.sum()
    max_norm = float(np.median(norms_fd))
    f = np.minimum(1.0, max_norm / norms_fd)
    L, g, norms = reference.clipped_grad(*args, head=head, max_norm=max_norm, reduction="mean", sample_weight=w)
    _check("clipped_grad vs FD", _flat(g), (c * f) @ G_fd, FD_TOL, where)
    _check("clipped_grad norms vs FD", norms, norms_fd, FD_TOL, where)
    assert L == reference.loss(*args, head=head, reduction="mean", sample_weight=w)
    limits = np.median(layer_norms_fd, axis=0)
    F = np.minimum(1.0, limits / layer_norms_fd)
    want = np.zeros(G.shape[1])
    for l, s in enumerate(_layer_slices(Ws)):
        want[s] = (F[:, l]) @ G_fd[:, s]
    L, g, norms = reference.clipped_grad(*args, head=head, max_norm=list(limits))
    _check("clipped_grad per layer vs FD", _flat(g), want, FD_TOL, where)
    assert norms.shape == (n, len(Ws))


# -- identities ---------------------------------------------------------------------------------------

ID_CASES = [([5, 7, 3], 9, "softmax", "labels"), ([4, 6, 5, 1], 8, "sigmoid", "soft"),
            ([3, 8, 2], 6, "sigmoid", "labels"), ([6, 3, 4, 4], 7, "softmax", "soft")]


def _id(case):
    return f"{'-'.join(map(str, case[0]))}_N{case[1]}_{case[2]}_{case[3]}"


def _weights(n, rng):
    w = rng.uniform(0.0, 2.0, n)
    w[2] = 0.0
    return w


@pytest.mark.parametrize("case", ID_CASES, ids=_id)
def test_weighted_sum_of_rows_is_the_gradient(case):
    sizes, n, head, kind = case
    Ws, bs, X, y = make_problem(sizes, n, head, kind, seed=n)
    G = reference.per_sample_grads(Ws, bs, X, y, head=head)
    w = _weights(n, np.random.default_rng(1))
    for reduction in ("sum", "mean"):
        for sw in (None, w):
            c = np.ones(n) if sw is None else sw
            if reduction == "mean":
                c = c / c.sum()
            _, g = reference.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=sw)
            _check("sum_i c_i g_i vs loss_and_grad", c @ G, _flat(g), tol(np.float64),
                   f"{_id(case)} {reduction} {'weighted' if sw is not None else ''}")


@pytest.mark.parametrize("case", ID_CASES, ids=_id)
def test_clipped_grad_is_loss_and_grad_with_clip_factors_as_weights(case):
    sizes, n, head, kind = case
    Ws, bs, X, y = make_problem(sizes, n, head, kind, seed=n)
    args = (Ws, bs, X, y)
    norms = reference.per_sample_grad_norms(*args, head=head)
    layer_norms = reference.per_sample_grad_norms(*args, head=head, per_layer=True)
    w = _weights(n, np.random.default_rng(2))
    for reduction in ("sum", "mean"):
        for sw in (None, w):
            where = f"{_id(case)} {reduction} {'weighted' if sw is not None else ''}"
            c = np.ones(n) if sw is None else sw
            if reduction == "mean":
                c = c / c.sum()
            kw = dict(head=head, reduction=reduction, sample_weight=sw)
            L_plain = reference.loss(*args, **kw)
            # whole clipping at a few thresholds: none, some and all samples clipped
            for max_norm in (float(norms.max()) * 2, float(np.median(norms)), float(norms.min()) / 3, 1e-9):
                f = np.minimum(1.0, max_norm / norms)
                L, g, got_norms = reference.clipped_grad(*args, max_norm=max_norm, **kw)
                assert L == L_plain and isinstance(L, float)
                np.testing.assert_array_equal(got_norms, norms)
                _, g_want = reference.loss_and_grad(*args, head=head, reduction="sum", sample_weight=c * f)
                _check("clipped_grad vs loss_and_grad(c f)", _flat(g), _flat(g_want), tol(np.float64),
                       f"{where} max_norm {max_norm:.3g}")
                assert g.input is None
            # per layer: layer l's part is loss_and_grad's with weights c f_l
            limits = [float(np.median(layer_norms[:, l])) for l in range(len(Ws))]
            L, g, got_norms = reference.clipped_grad(*args, max_norm=limits, **kw)
            assert L == L_plain
            np.testing.assert_array_equal(got_norms, layer_norms)
            for l in range(len(Ws)):
                f = np.minimum(1.0, limits[l] / layer_norms[:, l])
                _, g_want = reference.loss_and_grad(*args, head=head, reduction="sum", sample_weight=c * f)
                _check("clipped_grad per layer vs loss_and_grad(c f_l)", g.weights[l], g_want.weights[l],
                       tol(np.float64), f"{where} layer {l}")
                _check("clipped_grad per layer vs loss_and_grad(c f_l)", g.biases[l], g_want.biases[l],
                       tol(np.float64), f"{where} layer {l}")


@pytest.mark.parametrize("case", ID_CASES, ids=_id)
def test_norms_products_and_squares_from_rows(case):
    sizes, n, head, kind = case
    Ws, bs, X, y = make_problem(sizes, n, head, kind, seed=n)
    args = (Ws, bs, X, y)
    where = _id(case)
    G = reference.per_sample_grads(*args, head=head)
    P = _n_params(Ws)
    assert G.shape == (n, P)

    norms = reference.per_sample_grad_norms(*args, head=head)
    layer_norms = reference.per_sample_grad_norms(*args, head=head, per_layer=True)
    assert norms.shape == (n,) and layer_norms.shape == (n, len(Ws))
    _check("norms vs rows", norms, np.linalg.norm(G, axis=1), tol(np.float64), where)
    _check("per-layer norms combine", np.sqrt((layer_norms ** 2).sum(axis=1)), norms, tol(np.float64), where)
    # ||g_{i,l}||^2 = (||h_{l-1,i}||^2 + 1) ||delta_{l,i}||^2, from an independent forward pass and this
    # layer's bias part of G (which is delta_{l,i})
    h = X
    starts_b = sum(W.size for W in Ws) + np.cumsum([0] + [W.shape[1] for W in Ws])
    for l, (W, b) in enumerate(zip(Ws, bs)):
        delta = G[:, starts_b[l]:starts_b[l + 1]]
        formula = np.sqrt(((h ** 2).sum(axis=1) + 1) * (delta ** 2).sum(axis=1))
        _check("per-layer norm formula", layer_norms[:, l], formula, tol(np.float64), f"{where} layer {l}")
        h = 1 / (1 + np.exp(-(h @ W + b)))

    rng = np.random.default_rng(3)
    V = rng.standard_normal((P, 4))
    _check("grad_dot vs G V", reference.grad_dot(*args, V, head=head), G @ V, tol(np.float64), where)
    d1 = reference.grad_dot(*args, V[:, 1], head=head)
    assert d1.shape == (n,)
    _check("grad_dot 1-D vs G v", d1, G @ V[:, 1], tol(np.float64), where)
    Vi = rng.integers(-3, 4, P)
    _check("grad_dot int V", reference.grad_dot(*args, Vi, head=head), G @ Vi, tol(np.float64), where)

    gram = reference.grad_gram(*args, head=head)
    assert gram.shape == (n, n)
    _check("grad_gram vs G G^T", gram, G @ G.T, tol(np.float64), where)
    _check("grad_gram diagonal vs norms^2", np.diag(gram), norms ** 2, tol(np.float64), where)
    X2, y2 = make_problem(sizes, 5, head, kind, seed=n + 50)[2:]
    G2 = reference.per_sample_grads(Ws, bs, X2, y2, head=head)
    gram2 = reference.grad_gram(*args, X2, y2, head=head)
    assert gram2.shape == (n, 5)
    _check("grad_gram X2 vs G G2^T", gram2, G @ G2.T, tol(np.float64), where)
    _check("grad_gram X2 by keyword", reference.grad_gram(*args, X2=X2, y2=y2, head=head), G @ G2.T,
           tol(np.float64), where)

    w = _weights(n, rng)
    for sw, ww in ((None, np.ones(n)), (w, w)):
        s = reference.sum_squared_grads(*args, head=head, sample_weight=sw)
        assert isinstance(s, mlpgrad.Gradients) and s.input is None
        assert [a.shape for a in s.weights] == [W.shape for W in Ws]
        assert [a.shape for a in s.biases] == [b.shape for b in bs]
        _check("sum_squared_grads vs w G^2", _flat(s), ww @ G ** 2, tol(np.float64), where)


def _zero_gradient_problem():
    """Last layer zero: the logits are 0, p = 1/2 exactly, so a sigmoid target of 1/2 gives a sample whose gradient
    is exactly zero; every hidden layer's delta is zero for every sample (delta W_L^T = 0)."""
    Ws, bs = make_network([3, 4, 2], np.float64, np.random.default_rng(5))
    Ws[-1][...] = 0.0
    bs[-1][...] = 0.0
    X = np.random.default_rng(6).standard_normal((4, 3))
    y = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.0, 0.25]])
    return Ws, bs, X, y


def test_zero_norm_gets_factor_one():
    Ws, bs, X, y = _zero_gradient_problem()
    args = (Ws, bs, X, y)
    norms = reference.per_sample_grad_norms(*args, head="sigmoid")
    assert norms[0] == 0.0 and norms[2] == 0.0 and np.all(norms[[1, 3]] > 0)
    G = reference.per_sample_grads(*args, head="sigmoid")
    max_norm = float(norms[3]) / 2
    f = np.where(norms > max_norm, max_norm / np.where(norms > 0, norms, 1), 1.0)
    L, g, got = reference.clipped_grad(*args, head="sigmoid", max_norm=max_norm)
    assert all(np.all(np.isfinite(a)) for a in g.weights + g.biases)
    _check("clipped_grad with zero norms", _flat(g), f @ G, tol(np.float64), "zero norms")
    # per layer: layer 0's norms are zero for every sample
    layer_norms = reference.per_sample_grad_norms(*args, head="sigmoid", per_layer=True)
    assert np.all(layer_norms[:, 0] == 0.0)
    L, g, got = reference.clipped_grad(*args, head="sigmoid", max_norm=[1e-3, max_norm])
    assert np.all(g.weights[0] == 0.0) and np.all(g.biases[0] == 0.0)
    _check("clipped_grad per layer with zero norms", g.weights[1], reference.clipped_grad(
        *args, head="sigmoid", max_norm=max_norm)[1].weights[1], tol(np.float64), "zero norms per layer")


@pytest.mark.parametrize("case", ID_CASES, ids=_id)
def test_infinite_max_norm_gives_the_plain_gradient(case):
    sizes, n, head, kind = case
    Ws, bs, X, y = make_problem(sizes, n, head, kind, seed=n)
    w = _weights(n, np.random.default_rng(4))
    for reduction in ("sum", "mean"):
        kw = dict(head=head, reduction=reduction, sample_weight=w)
        L0, g0 = reference.loss_and_grad(Ws, bs, X, y, **kw)
        for max_norm in (math.inf, np.inf, [math.inf] * len(Ws), (np.float64(np.inf),) * len(Ws), 1e300):
            L, g, _ = reference.clipped_grad(Ws, bs, X, y, max_norm=max_norm, **kw)
            assert L == L0
            _check("clipped_grad(inf) vs loss_and_grad", _flat(g), _flat(g0), tol(np.float64),
                   f"{_id(case)} {reduction} {max_norm!r}")


# -- N = 0, dtypes, unchanged inputs ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(dtype):
    sizes = [3, 5, 2]
    Ws, bs = make_network(sizes, dtype)
    X, y = np.zeros((0, 3), dtype=dtype), np.zeros(0, dtype=np.int64)
    P = _n_params(Ws)
    args = (Ws, bs, X, y)
    for out, shape in ((reference.per_sample_grad_norms(*args, head="softmax"), (0,)),
                       (reference.per_sample_grad_norms(*args, head="softmax", per_layer=True), (0, 2)),
                       (reference.per_sample_grads(*args, head="softmax"), (0, P)),
                       (reference.grad_dot(*args, np.ones(P), head="softmax"), (0,)),
                       (reference.grad_dot(*args, np.ones((P, 3)), head="softmax"), (0, 3)),
                       (reference.grad_gram(*args, head="softmax"), (0, 0)),
                       (reference.grad_gram(*args, np.ones((2, 3)), np.array([0, 1]), head="softmax"), (0, 2))):
        assert out.shape == shape and out.dtype == dtype
    G2 = reference.grad_gram(Ws, bs, np.ones((2, 3)), np.array([0, 1]), X, y, head="softmax")
    assert G2.shape == (2, 0)
    out = np.empty((0, P), dtype=dtype)
    assert reference.per_sample_grads(*args, head="softmax", out=out) is out
    L, g, norms = reference.clipped_grad(*args, head="softmax", max_norm=1.0)
    assert L == 0.0 and norms.shape == (0,) and not any(np.any(a) for a in g.weights + g.biases)
    s = reference.sum_squared_grads(*args, head="softmax")
    assert all(a.dtype == dtype and not np.any(a) for a in s.weights + s.biases)
    with pytest.raises(ValueError, match=r"reduction='mean' needs a positive total weight"):
        reference.clipped_grad(*args, head="softmax", max_norm=1.0, reduction="mean")


@pytest.mark.parametrize("head,kind", [("softmax", "labels"), ("sigmoid", "soft")])
def test_float32_results_have_float32_dtype_and_match_float64(head, kind):
    sizes, n = [6, 9, 3], 11
    Ws, bs, X, y = make_problem(sizes, n, head, kind, np.float32, seed=3)
    a32 = (Ws, bs, X, y)
    a64 = ([W.astype(np.float64) for W in Ws], [b.astype(np.float64) for b in bs], X.astype(np.float64),
           y.astype(np.float64) if y.dtype.kind == "f" else y)
    P = _n_params(Ws)
    V = np.random.default_rng(0).standard_normal((P, 2))
    bound = tol(np.float32)
    for name, call in [
            ("norms", lambda a: reference.per_sample_grad_norms(*a, head=head)),
            ("layer norms", lambda a: reference.per_sample_grad_norms(*a, head=head, per_layer=True)),
            ("grads", lambda a: reference.per_sample_grads(*a, head=head)),
            ("dot", lambda a: reference.grad_dot(*a, V, head=head)),  # V float64, converted to float32
            ("gram", lambda a: reference.grad_gram(*a, head=head)),
            ("ssg", lambda a: _flat(reference.sum_squared_grads(*a, head=head))),
            ("clipped", lambda a: _flat(reference.clipped_grad(*a, head=head, max_norm=0.1)[1]))]:
        got, want = call(a32), call(a64)
        assert got.dtype == np.float32, name
        _check(f"float32 reference vs float64: {name}", got, want, bound, f"{sizes} {head}")


def test_inputs_are_not_modified():
    Ws, bs, X, y = make_problem([4, 5, 3], 6, "softmax", "soft", seed=1)
    w = np.linspace(0.5, 1.5, 6)
    V = np.random.default_rng(2).standard_normal((_n_params(Ws), 2))
    V32 = V.astype(np.float32)
    X2, y2 = X[::2].copy(), y[::2].copy()
    everything = Ws + bs + [X, y, w, V, V32, X2, y2]
    saved = [a.copy() for a in everything]
    reference.per_sample_grad_norms(Ws, bs, X, y, head="softmax", per_layer=True)
    reference.clipped_grad(Ws, bs, X, y, head="softmax", max_norm=0.5, reduction="mean", sample_weight=w)
    reference.clipped_grad(Ws, bs, X, y, head="softmax", max_norm=[0.5, 0.1], sample_weight=w)
    reference.per_sample_grads(Ws, bs, X, y, head="softmax")
    reference.grad_dot(Ws, bs, X, y, V, head="softmax")
    reference.grad_dot(Ws, bs, X, y, V32, head="softmax")
    reference.grad_gram(Ws, bs, X, y, X2, y2, head="softmax")
    reference.sum_squared_grads(Ws, bs, X, y, head="softmax", sample_weight=w)
    for a, s in zip(everything, saved):
        np.testing.assert_array_equal(a, s)


# -- argument rules ---------------------------------------------------------------------------------------

def _base():
    Ws, bs, X, y = make_problem([3, 5, 2], 4, "softmax", "labels", seed=0)
    return Ws, bs, X, y


P_BASE = 3 * 5 + 5 * 2 + 5 + 2  # 32

BAD_MAX_NORM = [
    (0, ValueError), (0.0, ValueError), (-1.0, ValueError), (-math.inf, ValueError), (math.nan, ValueError),
    (np.float32(np.nan), ValueError), (True, TypeError), (np.bool_(True), TypeError), ("1", TypeError),
    (None, TypeError), (1 + 2j, TypeError), ({"a": 1}, TypeError), (b"1", TypeError),
    ([1.0], ValueError), ([1.0, 2.0, 3.0], ValueError), ([], ValueError), ([1.0, 0.0], ValueError),
    ([1.0, -2.0], ValueError), ([1.0, math.nan], ValueError), ([1.0, "2"], TypeError), ([1.0, None], TypeError),
    ([True, 1.0], TypeError), ((1.0, [2.0]), TypeError), (np.ones((2, 1)), ValueError), (np.array([1.0]), ValueError),
    (np.array([1.0, np.nan]), ValueError), (np.array(["a", "b"]), TypeError), (np.array(np.nan), ValueError),
]


@pytest.mark.parametrize("max_norm, exc", BAD_MAX_NORM, ids=[repr(c[0]) for c in BAD_MAX_NORM])
def test_bad_max_norm(max_norm, exc):
    with pytest.raises(exc, match=r"^max_norm must be a real number > 0 .* or a sequence of 2 real numbers > 0") \
            as info:
        reference.clipped_grad(*_base(), head="softmax", max_norm=max_norm)
    assert "got" in str(info.value)  # says what came
    with pytest.raises(exc, match=r"^max_norm"):
        check_max_norm(max_norm, 2)


def test_good_max_norm():
    assert check_max_norm(1, 3) == 1.0 and type(check_max_norm(1, 3)) is float
    assert check_max_norm(np.float32(0.5), 3) == 0.5 and type(check_max_norm(np.float32(0.5), 3)) is float
    assert check_max_norm(np.int64(2), 1) == 2.0
    assert check_max_norm(np.array(2.5), 1) == 2.5
    assert check_max_norm(math.inf, 2) == math.inf
    assert check_max_norm(1e-300, 2) == 1e-300
    for seq in ([1, 2.5], (1, 2.5), np.array([1.0, 2.5]), [np.float32(1), np.int8(2)]):
        got = check_max_norm(seq, 2)
        assert got in ((1.0, 2.5), (1.0, 2.0)) and type(got) is tuple and all(type(v) is float for v in got)
    assert check_max_norm([1, math.inf], 2) == (1.0, math.inf)
    assert check_max_norm([3], 1) == (3.0,)


BAD_V = [
    ("complex", lambda P: np.ones(P, dtype=np.complex128), TypeError, r"V must be a real array"),
    ("bool", lambda P: np.ones(P, dtype=bool), TypeError, r"V must be a real array"),
    ("object", lambda P: np.ones(P, dtype=object), TypeError, r"V must be a numeric array"),
    ("str-array", lambda P: np.ones(P).astype(str), TypeError, r"V must be a numeric array"),
    ("str", lambda P: "V", TypeError, r"V must be an array"),
    ("None", lambda P: None, TypeError, r"V must be an array"),
    ("dict", lambda P: {}, TypeError, r"V must be an array"),
    ("ragged", lambda P: [[1.0, 2.0], [3.0]], TypeError, r"V must be an array"),
    ("too-short", lambda P: np.ones(P - 1), ValueError, r"V must have shape \(32,\) or \(32, m\) with m >= 1 .*"
                                                        r"got shape \(31,\)"),
    ("too-long", lambda P: np.ones(P + 1), ValueError, r"V must have shape \(32,\) or \(32, m\).*\(33,\)"),
    ("transposed", lambda P: np.ones((2, P)), ValueError, r"V must have shape .*got shape \(2, 32\)"),
    ("no-columns", lambda P: np.ones((P, 0)), ValueError, r"V must have shape .*got shape \(32, 0\)"),
    ("3-d", lambda P: np.ones((P, 2, 1)), ValueError, r"V must have shape .*got shape \(32, 2, 1\)"),
    ("0-d", lambda P: 1.0, ValueError, r"V must have shape .*got shape \(\)"),
    ("nan", lambda P: np.r_[np.ones(P - 1), np.nan], ValueError, r"V must be finite"),
    ("inf", lambda P: np.full((P, 2), -np.inf), ValueError, r"V must be finite"),
]


@pytest.mark.parametrize("name, make, exc, match", BAD_V, ids=[c[0] for c in BAD_V])
def test_bad_V(name, make, exc, match):
    with pytest.raises(exc, match=match):
        reference.grad_dot(*_base(), make(P_BASE), head="softmax")


def test_V_overflowing_float32_is_rejected():
    Ws, bs, X, y = _base()
    Ws32, bs32 = [W.astype(np.float32) for W in Ws], [b.astype(np.float32) for b in bs]
    with pytest.raises(ValueError, match=r"V must be finite \(after conversion to float32\)"):
        reference.grad_dot(Ws32, bs32, X, y, np.full(P_BASE, 1e300), head="softmax")


def test_check_vectors_converts_without_touching_the_callers_array():
    P = 6
    V = np.arange(P, dtype=np.int32)
    V2, one_d = check_vectors(V, P, np.dtype(np.float64))
    assert one_d and V2.shape == (P, 1) and V2.dtype == np.float64 and V2.flags.c_contiguous
    assert not np.shares_memory(V2, V)
    F = np.asfortranarray(np.ones((P, 3), dtype=np.float32))
    V2, one_d = check_vectors(F, P, np.dtype(np.float32))
    assert not one_d and V2.shape == (P, 3) and V2.flags.c_contiguous and not np.shares_memory(V2, F)
    C = np.ones((P, 3))
    V2, _ = check_vectors(C, P, np.dtype(np.float64))
    assert V2.shape == (P, 3) and V2.dtype == np.float64
    V2, _ = check_vectors([[1.0]] * P, P, np.dtype(np.float32))
    assert V2.shape == (P, 1) and V2.dtype == np.float32


def test_second_set_rules():
    Ws, bs, X, y = _base()
    with pytest.raises(ValueError, match=r"^y2 must be given with X2"):
        reference.grad_gram(Ws, bs, X, y, X, head="softmax")
    with pytest.raises(ValueError, match=r"^y2 must be given with X2"):
        reference.grad_gram(Ws, bs, X, y, X2=X, head="softmax")
    with pytest.raises(ValueError, match=r"^X2 must be given with y2"):
        reference.grad_gram(Ws, bs, X, y, y2=y, head="softmax")
    assert check_second_set(None, None) is False and check_second_set(X, y) is True
    # X2 and y2 follow the rules of X and y, their messages naming them
    for X2, y2, exc, match in [
            (np.ones((4, 2)), y, ValueError, r"^X2 must have 3 columns"),
            (X.astype(np.complex128), y, TypeError, r"^X2 must be a real array"),
            ("X", y, TypeError, r"^X2 must be an array"),
            (X, y[:3], ValueError, r"^y2 must have 4 rows to match X2"),
            (X, np.array([0, 1, 2, 0]), ValueError, r"^y2 labels must lie in \[0, 2\)"),
            (X, np.full((4, 2), -1.0), ValueError, r"^y2 as 2-D softmax targets must be finite and >= 0"),
            (X, np.array([0.5, 1, 0, 1]), ValueError, r"^y2 as 1-D labels must hold integers")]:
        with pytest.raises(exc, match=match):
            reference.grad_gram(Ws, bs, X, y, X2, y2, head="softmax")


def test_bad_out():
    Ws, bs, X, y = _base()
    n = X.shape[0]
    good = np.empty((n, P_BASE))
    assert reference.per_sample_grads(Ws, bs, X, y, head="softmax", out=good) is good
    np.testing.assert_array_equal(good, reference.per_sample_grads(Ws, bs, X, y, head="softmax"))
    readonly = np.empty((n, P_BASE))
    readonly.flags.writeable = False
    for out, exc, match in [
            ([[0.0] * P_BASE] * n, TypeError, r"out must be a NumPy array of shape \(4, 32\)"),
            (np.empty((n, P_BASE), dtype=np.float32), TypeError, r"out must have the parameters' dtype float64"),
            (np.empty((n, P_BASE + 1)), ValueError, r"out must be a writeable C-contiguous array of shape \(4, 32\)"),
            (np.empty((n * P_BASE,)), ValueError, r"out must be a writeable C-contiguous array"),
            (np.empty((n, P_BASE), order="F"), ValueError, r"\(not C-contiguous\)"),
            (np.empty((n, 2 * P_BASE))[:, ::2], ValueError, r"\(not C-contiguous\)"),
            (readonly, ValueError, r"\(read-only\)")]:
        with pytest.raises(exc, match=match):
            reference.per_sample_grads(Ws, bs, X, y, head="softmax", out=out)


@pytest.mark.parametrize("per_layer", [1, 0, "yes", None])
def test_per_layer_must_be_bool(per_layer):
    with pytest.raises(TypeError, match=r"per_layer must be a bool"):
        reference.per_sample_grad_norms(*_base(), head="softmax", per_layer=per_layer)


def test_common_rules_apply():
    """The arguments shared with loss_and_grad keep its rules and messages (one sample of test_inputs' battery)."""
    Ws, bs, X, y = _base()
    P = P_BASE
    calls = [lambda **k: reference.per_sample_grad_norms(**k),
             lambda **k: reference.clipped_grad(max_norm=1.0, **k),
             lambda **k: reference.per_sample_grads(**k),
             lambda **k: reference.grad_dot(V=np.ones(P), **k),
             lambda **k: reference.grad_gram(**k),
             lambda **k: reference.sum_squared_grads(**k)]
    for call in calls:
        with pytest.raises(ValueError, match=r"head must be one of"):
            call(weights=Ws, biases=bs, X=X, y=y, head="relu")
        with pytest.raises(ValueError, match=r"y labels must lie in \[0, 2\)"):
            call(weights=Ws, biases=bs, X=X, y=np.array([0, 1, 5, 0]), head="softmax")
        with pytest.raises(ValueError, match=r"X must have 3 columns"):
            call(weights=Ws, biases=bs, X=np.ones((4, 4)), y=y, head="softmax")
    with pytest.raises(ValueError, match=r"sample_weight must be finite and >= 0"):
        reference.clipped_grad(Ws, bs, X, y, head="softmax", max_norm=1.0, sample_weight=-np.ones(4))
    with pytest.raises(ValueError, match=r"sample_weight must be finite and >= 0"):
        reference.sum_squared_grads(Ws, bs, X, y, head="softmax", sample_weight=np.full(4, np.nan))
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        reference.clipped_grad(Ws, bs, X, y, head="softmax", max_norm=1.0, reduction="avg")
