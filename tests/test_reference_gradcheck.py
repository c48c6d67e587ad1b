"""The NumPy reference (``mlpgrad.reference``) against central finite differences, in float64.

Every entry of every ``W_l``, every ``b_l`` and of ``X`` is perturbed on its own, and the derivative
is taken by the fourth-order central difference (the five-point stencil)

    g_fd = (-L(t + 2h) + 8 L(t + h) - 8 L(t - h) + L(t - 2h)) / (12 h),    h = 1e-3 * max(1, |t|)

whose truncation error is O(h^4) ~ 1e-12 and rounding noise ~ eps |L| / h ~ 1e-13 |L|.  (The plain
second-order difference with h ~ 1e-6 has noise ~ 1e-10 |L|: too much against 1e-7 for the small
first-layer gradients, ~ 1e-3, of the deeper networks; measured 2.3e-7 there, against 5e-10 for this
stencil.)

Small networks ([3, 4, 2], [2, 5, 3, 1], [4, 3, 3, 3, 2]; N = 1..7), both heads, every target kind
(labels / soft targets, and for softmax also soft rows that do not sum to one), both reductions,
with and without sample weights (one of them zero).

Tolerance: ``rel_err(analytic, g_fd) <= 1e-7`` for each gradient array separately, where ``rel_err``
is the max-norm relative error of ``_problems`` (max|a - b| / max|b|).  The largest error met is
printed per test (see it with ``pytest -s``) and for the module after the run (tests/_report.py).

These tests use only the reference: they do not need the native core to compute anything.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlpgrad import reference
import _report
from _problems import fd_gradient, make_network, make_problem, make_targets, rel_err

FD_REL_STEP = 1e-3
FD_TOL = 1e-7

SIZES_AND_N = [
    ([3, 4, 2], 1),
    ([3, 4, 2], 5),
    ([2, 5, 3, 1], 3),
    ([2, 5, 3, 1], 7),
    ([4, 3, 3, 3, 2], 2),
    ([4, 3, 3, 3, 2], 6),
]
HEAD_KINDS = [("sigmoid", "labels"), ("sigmoid", "soft"),
              ("softmax", "labels"), ("softmax", "soft"), ("softmax", "unnormalized")]

_LARGEST = {"err": 0.0, "where": None}


@_report.section("reference vs finite differences (float64)")
def _largest_error():
    if _LARGEST["where"] is None:
        return []
    return [f"  largest rel_err {_LARGEST['err']:.3e} <= {FD_TOL:g} ({_LARGEST['where']})"]


# -- helpers ----------------------------------------------------------------------------------------

def _targets(head, kind, n, k, rng):
    if kind == "unnormalized":  # softmax soft rows that do not sum to one: dL/dz = c (p * sum t - t)
        return rng.random((n, k)) * 2.0
    return make_targets(head, kind, n, k, np.float64, rng)


def _sample_weight(n, rng):
    w = rng.uniform(0.25, 2.0, size=n)
    if n >= 3:
        w[1] = 0.0  # a sample that must not count
    return w


def _sigmoid(z):
    """1 / (1 + exp(-z)); exp(-z) may overflow to inf for huge negative z, which gives the right 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _logits(Ws, bs, X):
    """An independent forward pass: the logits (N, k)."""
    h = X
    for W, b in zip(Ws[:-1], bs[:-1]):
        h = _sigmoid(h @ W + b)
    return h @ Ws[-1] + bs[-1]


def _case_id(sizes_n):
    sizes, n = sizes_n
    return "-".join(map(str, sizes)) + f"_N{n}"


# -- finite differences -----------------------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("head,kind", HEAD_KINDS, ids=[f"{h}-{k}" for h, k in HEAD_KINDS])
@pytest.mark.parametrize("sizes_n", SIZES_AND_N, ids=[_case_id(c) for c in SIZES_AND_N])
def test_reference_matches_finite_differences(sizes_n, head, kind, reduction, weighted):
    sizes, n = sizes_n
    seed = 1000 * len(sizes) + 10 * n + (1 if weighted else 0)
    rng = np.random.default_rng(seed)
    Ws, bs = make_network(sizes, np.float64, rng)
    X = rng.standard_normal((n, sizes[0]))
    y = _targets(head, kind, n, sizes[-1], rng)
    sw = _sample_weight(n, rng) if weighted else None
    kw = dict(head=head, reduction=reduction, sample_weight=sw)

    L, g = reference.loss_and_grad(Ws, bs, X, y, input_grad=True, **kw)
    assert isinstance(L, float) and math.isfinite(L)

    def loss_fn():
        return reference.loss(Ws, bs, X, y, **kw)

    named = ([(f"W{l + 1}", W, g.weights[l]) for l, W in enumerate(Ws)]
             + [(f"b{l + 1}", b, g.biases[l]) for l, b in enumerate(bs)]
             + [("X", X, g.input)])
    worst, worst_name = 0.0, None
    for name, param, analytic in named:
        assert analytic.shape == param.shape and analytic.dtype == np.float64, name
        fd = fd_gradient(loss_fn, param, FD_REL_STEP)
        if sw is not None and name == "X" and n >= 3:
            assert np.all(analytic[1] == 0.0), "a zero-weight sample must have a zero input gradient"
        # an all-zero gradient (e.g. X of a zero-weight sample only) is compared absolutely
        err = rel_err(analytic, fd) if np.max(np.abs(fd)) > 0 else float(np.max(np.abs(analytic)))
        if err > worst:
            worst, worst_name = err, name
        assert err <= FD_TOL, f"{name}: rel_err {err:.3e} > {FD_TOL:g}\nanalytic={analytic}\nfd={fd}"
    case = f"{_case_id(sizes_n)} {head}-{kind} {reduction} {'weighted' if weighted else 'unweighted'}"
    print(f"[gradcheck] {case}: largest rel_err {worst:.3e} ({worst_name}), L = {L:.6g}")
    if worst > _LARGEST["err"]:
        _LARGEST.update(err=worst, where=f"{case}, {worst_name}")


# -- values, not only derivatives -------------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("head,kind", HEAD_KINDS, ids=[f"{h}-{k}" for h, k in HEAD_KINDS])
def test_loss_value_matches_textbook_formula(head, kind, reduction, weighted):
    """L from the forward probabilities by the textbook formulas (logs of p, not of logits)."""
    sizes, n = [4, 3, 3, 3, 2], 6
    rng = np.random.default_rng(7)
    Ws, bs = make_network(sizes, np.float64, rng)
    X = rng.standard_normal((n, sizes[0]))
    y = _targets(head, kind, n, sizes[-1], rng)
    sw = _sample_weight(n, rng) if weighted else None

    z = _logits(Ws, bs, X)
    if head == "sigmoid":
        p = _sigmoid(z)
        t = np.asarray(y, dtype=np.float64).reshape(n, -1)
        per_sample = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(axis=1)
    else:
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        t = np.eye(sizes[-1])[y] if kind == "labels" else y
        per_sample = -(t * np.log(p)).sum(axis=1)
    w = np.ones(n) if sw is None else sw
    expected = float(w @ per_sample) / (float(w.sum()) if reduction == "mean" else 1.0)

    got = reference.loss(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=sw)
    got2, _ = reference.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=sw)
    assert got == pytest.approx(expected, rel=1e-13)
    assert got == pytest.approx(got2, rel=1e-15, abs=0.0)


@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
@pytest.mark.parametrize("sizes_n", SIZES_AND_N, ids=[_case_id(c) for c in SIZES_AND_N])
def test_loss_equals_loss_and_grad(sizes_n, head):
    sizes, n = sizes_n
    Ws, bs, X, y = make_problem(sizes, n, head, "soft", np.float64, seed=n)
    for reduction in ("sum", "mean"):
        for sw in (None, np.linspace(0.5, 1.5, n)):
            kw = dict(head=head, reduction=reduction, sample_weight=sw)
            L1 = reference.loss(Ws, bs, X, y, **kw)
            L2, g = reference.loss_and_grad(Ws, bs, X, y, **kw)
            assert isinstance(L1, float) and isinstance(L2, float)
            assert L1 == pytest.approx(L2, rel=1e-15, abs=0.0)
            assert g.input is None  # input_grad defaults to False
            assert [a.shape for a in g.weights] == [W.shape for W in Ws]
            assert [a.shape for a in g.biases] == [b.shape for b in bs]


@pytest.mark.parametrize("sizes_n", SIZES_AND_N, ids=[_case_id(c) for c in SIZES_AND_N])
def test_forward_probabilities(sizes_n):
    sizes, n = sizes_n
    rng = np.random.default_rng(3)
    Ws, bs = make_network(sizes, np.float64, rng)
    X = rng.standard_normal((n, sizes[0]))
    z = _logits(Ws, bs, X)

    ps = reference.forward(Ws, bs, X, head="sigmoid")
    assert ps.shape == (n, sizes[-1]) and ps.dtype == np.float64
    assert rel_err(ps, _sigmoid(z)) <= 1e-14

    pm = reference.forward(Ws, bs, X, head="softmax")
    assert pm.shape == (n, sizes[-1]) and pm.dtype == np.float64
    assert np.all(pm > 0)
    np.testing.assert_allclose(pm.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert rel_err(pm, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)) <= 1e-14


# -- huge logits --------------------------------------------------------------------------------------

def _softplus_by_hand(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@pytest.mark.parametrize("scale", [1e3, 1e4])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sigmoid_head_huge_logits_one_layer(scale, sign):
    """One layer, one sample, |z| ~ scale, the wrong hard target: L = softplus(z) - y z ~ |z|."""
    x = np.array([[1.0, -0.5, 0.25]])
    W = sign * scale * np.array([[1.0], [-1.0], [0.5]])  # z = sign * scale * 1.625
    b = np.array([0.0])
    y = np.array([0.0 if sign > 0 else 1.0])  # wrong: the network is sure of the other class
    z = float(sum(x[0, j] * W[j, 0] for j in range(3)) + b[0])
    expected = _softplus_by_hand(z) - y[0] * z
    assert expected == pytest.approx(abs(z), rel=1e-15)

    L, g = reference.loss_and_grad([W], [b], x, y, head="sigmoid", input_grad=True)
    assert math.isfinite(L)
    assert L == pytest.approx(expected, rel=1e-14)
    # dL/dz = sigmoid(z) - y = sign (exactly +-1 in floating point)
    np.testing.assert_allclose(g.biases[0], [sign], rtol=1e-15)
    np.testing.assert_allclose(g.weights[0], sign * x.T, rtol=1e-15)
    np.testing.assert_allclose(g.input, sign * W.T, rtol=1e-15)
    assert reference.loss([W], [b], x, y, head="sigmoid", reduction="mean") == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_softmax_head_huge_logits_one_layer(scale):
    """One layer, one sample, logits ~ scale apart, a wrong label: L = logsumexp(z) - z_y."""
    x = np.array([[0.5, -1.0]])
    W = scale * np.array([[1.0, -1.0, 0.25], [-1.0, 0.5, 0.0]])
    b = np.array([0.0, 0.1, -0.1])
    label = 1  # z = scale * (1.5, -1, 0.125) + b: class 0 wins by far
    z = [float(x[0, 0] * W[0, j] + x[0, 1] * W[1, j] + b[j]) for j in range(3)]
    m = max(z)
    expected = m + math.log(sum(math.exp(zj - m) for zj in z)) - z[label]
    assert expected == pytest.approx(z[0] - z[label], rel=1e-15)

    L, g = reference.loss_and_grad([W], [b], x, np.array([label]), head="softmax", input_grad=True)
    assert math.isfinite(L)
    assert L == pytest.approx(expected, rel=1e-14)
    delta = np.array([1.0, -1.0, 0.0])  # softmax(z) - onehot(label), exact in floating point
    np.testing.assert_allclose(g.biases[0], delta, rtol=0, atol=1e-300)
    np.testing.assert_allclose(g.weights[0], np.outer(x[0], delta), rtol=0, atol=1e-300)
    np.testing.assert_allclose(g.input, (delta @ W.T)[None, :], rtol=1e-15)


@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_deep_network_huge_weights_stays_finite(head, scale):
    """Saturated hidden units and huge logits with hard wrong targets: no overflow, no NaN, no warning."""
    sizes, n = [4, 3, 3, 3, 2], 5
    rng = np.random.default_rng(11)
    Ws, bs = make_network(sizes, np.float64, rng, scale=scale)
    X = rng.standard_normal((n, sizes[0]))
    z = _logits(Ws, bs, X)
    if head == "sigmoid":
        y = (z < 0).astype(np.float64)  # the wrong class everywhere
        expected = float(sum(_softplus_by_hand(float(zij)) for zij in z.ravel()) - (y * z).sum())
    else:
        y = np.argmin(z, axis=1)  # the least likely class
        expected = float(sum(float(zi.max()) + math.log(float(np.exp(zi - zi.max()).sum())) - float(zi[yi])
                             for zi, yi in zip(z, y)))
    for reduction in ("sum", "mean"):
        L, g = reference.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, input_grad=True)
        assert math.isfinite(L) and L > 0
        assert L == pytest.approx(expected / (n if reduction == "mean" else 1), rel=1e-12)
        for a in [*g.weights, *g.biases, g.input]:
            assert np.all(np.isfinite(a))
        assert np.all(np.isfinite(reference.forward(Ws, bs, X, head=head)))
