"""The curvature products of ``mlpgrad.reference`` (issue 13): ``hvp`` (H V), ``ggn_vp`` (G V) and ``ggn_diag``
(diag G), in float64 on small networks (depth 1-3, widths 1-5, N 1-7), both heads, every target kind (labels, soft
targets, softmax rows that do not sum to one), both reductions, with and without sample weights.

* ``hvp`` against central differences of the reference gradient, (g(theta + e v) - g(theta - e v)) / 2e with
  e = 1e-5: truncation ~e^2 |g'''| and rounding ~u |g| / e, both near 1e-10 here; bound ``FD_TOL`` = 1e-7.
* Symmetry u . Hv = v . Hu and u . Gv = v . Gu to 1e-12 relative; v . Gv >= 0 up to rounding; H = G for a network
  with no hidden layer (H's extra terms are the hidden layers' second derivatives).
* ``ggn_vp`` against G = sum_i c_i J_i^T Hhead_i J_i assembled explicitly: J_i from five-point central differences
  of the logits (truncation ~1e-12), Hhead_i written out here (sigmoid diag(p(1-p)), softmax s_i (diag p - p p^T));
  bound ``FD_TOL``.
* ``ggn_diag`` against the diagonal of G built column by column from ``ggn_vp`` on the basis vectors;
  ``head_hessian_factor`` S against S S^T = Hhead.
* (P, m) blocks against m single calls; float32 results in float32 and near float64 (1e-4); the V rules (the
  messages of ``_checks.check_vectors``, naming V); N = 0; inputs left unchanged.

The largest errors are printed after the run (tests/_report.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
import _report
from _bounds import tol
from _problems import make_network, make_problem, make_targets, rel_err

FD_TOL = 1e-7
FD_STEP = 1e-5        # the two-point central difference of the gradient
JAC_REL_STEP = 1e-3   # the five-point central difference of the logits
SYM_TOL = 1e-12
F32_TOL = 1e-4

LARGEST = {}  # kind -> (error, where)


@_report.section("curvature reference: largest relative error")
def _largest():
    return [f"  {kind}: {err:.3e} at {where}" for kind, (err, where) in sorted(LARGEST.items())]


def _record(kind, err, where):
    if kind not in LARGEST or not err <= LARGEST[kind][0]:
        LARGEST[kind] = (err, where)


def _check(kind, got, want, bound, where):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{where}: shape {got.shape}, expected {want.shape}"
    err = rel_err(got, want) if np.any(want) else float(np.max(np.abs(got), initial=0.0))
    _record(kind, err, where)
    assert err <= bound, f"{where}: {kind} rel_err {err:.3e} > {bound:g}"
    return err


def _n_params(Ws):
    return sum(W.size + W.shape[1] for W in Ws)


def _targets(head, kind, n, k, rng):
    if kind == "unnormalized":  # softmax rows that do not sum to one
        return rng.random((n, k)) * 2.0
    return make_targets(head, kind, n, k, np.float64, rng)


def _sizes_id(sizes):
    return "-".join(map(str, sizes))


# depth 1-3, widths 1-5; (a softmax head with one unit is left out of the random cases: its loss is constant)
SIZES = [[3, 2], [1, 1], [2, 4], [3, 4, 2], [2, 5, 1], [1, 3, 3], [2, 5, 3, 1], [4, 3, 3, 3], [3, 1, 2, 4]]
HEAD_KINDS = [("sigmoid", "labels"), ("sigmoid", "soft"),
              ("softmax", "labels"), ("softmax", "soft"), ("softmax", "unnormalized")]
CASES = [(sizes, head, kind) for sizes in SIZES for head, kind in HEAD_KINDS
         if not (head == "softmax" and sizes[-1] == 1)]
CASE_IDS = [f"{_sizes_id(s)}-{h}-{k}" for s, h, k in CASES]
# (reduction, weighted): every case runs all four
SETTINGS = [("sum", False), ("sum", True), ("mean", False), ("mean", True)]


def _problem(sizes, head, kind):
    """A random problem of N = 1..7 rows (N from the sizes) and sample weights with one zero (when N > 1)."""
    rng = np.random.default_rng(1000 + 31 * len(sizes) + sum(sizes) + len(kind) + len(head))
    n = 1 + (sum(sizes) + len(kind)) % 7
    Ws, bs = make_network(sizes, np.float64, rng)
    X = rng.standard_normal((n, sizes[0]))
    y = _targets(head, kind, n, sizes[-1], rng)
    w = rng.uniform(0.25, 2.0, n)
    if n > 1:
        w[n // 2] = 0.0
    return Ws, bs, X, y, w, rng


def _kwargs(head, reduction, weighted, w):
    return dict(head=head, reduction=reduction, sample_weight=w if weighted else None)


def _scale(n, reduction, weighted, w):
    """c_i (N,), as loss_and_grad's."""
    c = w.copy() if weighted else np.ones(n)
    return c / c.sum() if reduction == "mean" else c


def _gradient_at(theta, sizes, X, y, kw):
    """The reference gradient at theta (pack order) as a flat vector."""
    Ws, bs = mlpgrad.unpack(theta, sizes)
    _, g = reference.loss_and_grad(list(Ws), list(bs), X, y, **kw)
    return mlpgrad.pack(g.weights, g.biases)


# -- H V against central differences of the gradient -------------------------------------------------

@pytest.mark.parametrize("sizes,head,kind", CASES, ids=CASE_IDS)
def test_hvp_is_the_derivative_of_the_gradient(sizes, head, kind):
    Ws, bs, X, y, w, rng = _problem(sizes, head, kind)
    theta = mlpgrad.pack(Ws, bs)
    V = rng.standard_normal((theta.size, 2))
    for reduction, weighted in SETTINGS:
        kw = _kwargs(head, reduction, weighted, w)
        where = f"{_sizes_id(sizes)} {head}-{kind} N={X.shape[0]} {reduction}{' weighted' if weighted else ''}"
        HV = reference.hvp(Ws, bs, X, y, V, **kw)
        assert HV.shape == V.shape and HV.dtype == np.float64
        for j in range(V.shape[1]):
            v = V[:, j]
            fd = (_gradient_at(theta + FD_STEP * v, sizes, X, y, kw)
                  - _gradient_at(theta - FD_STEP * v, sizes, X, y, kw)) / (2 * FD_STEP)
            _check("hvp vs central differences of the gradient", HV[:, j], fd, FD_TOL, f"{where} column {j}")


# -- symmetry, positive semi-definiteness, H = G without hidden layers ----------------------------------

def _symmetry_error(u, Av, v, Au):
    """|u . Av - v . Au| relative to the larger of the two."""
    a, b = float(u @ Av), float(v @ Au)
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


@pytest.mark.parametrize("sizes,head,kind", CASES, ids=CASE_IDS)
def test_symmetry_and_positive_semidefinite_ggn(sizes, head, kind):
    Ws, bs, X, y, w, rng = _problem(sizes, head, kind)
    P = _n_params(Ws)
    for reduction, weighted in SETTINGS:
        kw = _kwargs(head, reduction, weighted, w)
        where = f"{_sizes_id(sizes)} {head}-{kind} {reduction}{' weighted' if weighted else ''}"
        U = rng.standard_normal((P, 3))
        HU, GU = reference.hvp(Ws, bs, X, y, U, **kw), reference.ggn_vp(Ws, bs, X, y, U, **kw)
        for a, b in ((0, 1), (0, 2), (1, 2)):
            err = _symmetry_error(U[:, a], HU[:, b], U[:, b], HU[:, a])
            _record("u . Hv vs v . Hu", err, where)
            assert err <= SYM_TOL, f"{where}: u . Hv - v . Hu relative {err:.3e}"
            err = _symmetry_error(U[:, a], GU[:, b], U[:, b], GU[:, a])
            _record("u . Gv vs v . Gu", err, where)
            assert err <= SYM_TOL, f"{where}: u . Gv - v . Gu relative {err:.3e}"
        for j in range(U.shape[1]):
            v, Gv = U[:, j], GU[:, j]
            # rounding: a few ulps of the terms' magnitudes
            assert v @ Gv >= -1e-13 * (np.abs(v) @ np.abs(Gv)), f"{where}: v . Gv = {v @ Gv:.3e} < 0"


NO_HIDDEN = [[3, 2], [1, 1], [2, 4], [5, 3], [4, 1]]
NO_HIDDEN_CASES = [(sizes, head, kind) for sizes in NO_HIDDEN for head, kind in HEAD_KINDS
                   if not (head == "softmax" and sizes[-1] == 1)]


@pytest.mark.parametrize("sizes,head,kind", NO_HIDDEN_CASES, ids=[f"{_sizes_id(s)}-{h}-{k}"
                                                                   for s, h, k in NO_HIDDEN_CASES])
def test_no_hidden_layer_hessian_is_the_ggn(sizes, head, kind):
    Ws, bs, X, y, w, rng = _problem(sizes, head, kind)
    V = rng.standard_normal((_n_params(Ws), 4))
    for reduction, weighted in SETTINGS:
        kw = _kwargs(head, reduction, weighted, w)
        _check("hvp vs ggn_vp, no hidden layer", reference.hvp(Ws, bs, X, y, V, **kw),
               reference.ggn_vp(Ws, bs, X, y, V, **kw), tol(np.float64),
               f"{_sizes_id(sizes)} {head}-{kind} {reduction}{' weighted' if weighted else ''}")


def test_hidden_layers_make_the_hessian_differ_from_the_ggn():
    """The check above is not vacuous: with a hidden layer H - G (the hidden layers' second-derivative terms) is
    far from zero."""
    Ws, bs, X, y = make_problem([3, 4, 2], 6, "softmax", "labels", seed=2)
    V = np.random.default_rng(0).standard_normal((_n_params(Ws), 2))
    H, G = reference.hvp(Ws, bs, X, y, V, head="softmax"), reference.ggn_vp(Ws, bs, X, y, V, head="softmax")
    assert rel_err(H, G) > 1e-3


def test_softmax_with_one_unit_has_zero_curvature():
    """One softmax unit: p = 1, the loss is constant in theta, and so are H and G: exactly zero."""
    for kind in ("labels", "soft"):
        Ws, bs, X, y = make_problem([3, 4, 1], 5, "softmax", kind, seed=4)
        V = np.random.default_rng(1).standard_normal((_n_params(Ws), 2))
        assert not np.any(reference.hvp(Ws, bs, X, y, V, head="softmax"))
        assert not np.any(reference.ggn_vp(Ws, bs, X, y, V, head="softmax"))
        assert not np.any(reference.ggn_diag(Ws, bs, X, y, head="softmax"))


# -- G V against J^T Hhead J, assembled explicitly ---------------------------------------------------------

def _logits(Ws, bs, X):
    """z_L, written out here: sigmoid hidden layers, a linear last layer."""
    h = X
    for W, b in zip(Ws[:-1], bs[:-1]):
        h = 1.0 / (1.0 + np.exp(-(h @ W + b)))
    return h @ Ws[-1] + bs[-1]


def _logit_jacobians(sizes, theta, X):
    """J (N, k, P): J[i, :, a] = d z_{L,i} / d theta_a by five-point central differences."""
    n, k, P = X.shape[0], sizes[-1], theta.size
    J = np.empty((n, k, P))
    for a in range(P):
        step = JAC_REL_STEP * max(1.0, abs(theta[a]))

        def at(e):
            t = theta.copy()
            t[a] += e
            Ws, bs = mlpgrad.unpack(t, sizes)
            return _logits(Ws, bs, X)

        J[:, :, a] = (-at(2 * step) + 8 * at(step) - 8 * at(-step) + at(-2 * step)) / (12 * step)
    return J


def _head_hessians(head, z, y, k):
    """Hhead_i (N, k, k) from the logits, written out here."""
    n = z.shape[0]
    if head == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-z))
        return np.stack([np.diag(p[i] * (1 - p[i])) for i in range(n)])
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    s = np.ones(n) if y.ndim == 1 else y.sum(axis=1)
    return np.stack([s[i] * (np.diag(p[i]) - np.outer(p[i], p[i])) for i in range(n)])


@pytest.mark.parametrize("sizes,head,kind", CASES, ids=CASE_IDS)
def test_ggn_vp_is_J_transpose_Hhead_J(sizes, head, kind):
    Ws, bs, X, y, w, rng = _problem(sizes, head, kind)
    theta = mlpgrad.pack(Ws, bs)
    J = _logit_jacobians(sizes, theta, X)
    Hh = _head_hessians(head, _logits(Ws, bs, X), y, sizes[-1])
    V = rng.standard_normal((theta.size, 3))
    for reduction, weighted in SETTINGS:
        c = _scale(X.shape[0], reduction, weighted, w)
        G = np.einsum("i,iap,iab,ibq->pq", c, J, Hh, J)
        kw = _kwargs(head, reduction, weighted, w)
        where = f"{_sizes_id(sizes)} {head}-{kind} {reduction}{' weighted' if weighted else ''}"
        _check("ggn_vp vs explicit J^T Hhead J", reference.ggn_vp(Ws, bs, X, y, V, **kw), G @ V, FD_TOL, where)
        _check("ggn_diag vs explicit J^T Hhead J", reference.ggn_diag(Ws, bs, X, y, **kw), np.diag(G), FD_TOL,
               where)


# -- diag(G) from basis vectors; the head's factor ---------------------------------------------------------

@pytest.mark.parametrize("sizes,head,kind", CASES, ids=CASE_IDS)
def test_ggn_diag_is_the_diagonal_of_ggn_vp(sizes, head, kind):
    Ws, bs, X, y, w, _ = _problem(sizes, head, kind)
    P = _n_params(Ws)
    for reduction, weighted in SETTINGS:
        kw = _kwargs(head, reduction, weighted, w)
        G = reference.ggn_vp(Ws, bs, X, y, np.eye(P), **kw)  # column a = G e_a
        d = reference.ggn_diag(Ws, bs, X, y, **kw)
        assert d.shape == (P,) and d.dtype == np.float64
        assert np.all(d >= 0)
        _check("ggn_diag vs diag(ggn_vp(I))", d, np.diag(G), tol(np.float64),
               f"{_sizes_id(sizes)} {head}-{kind} {reduction}{' weighted' if weighted else ''}")


@pytest.mark.parametrize("head,kind", HEAD_KINDS)
def test_head_hessian_factor_squares_to_the_head_hessian(head, kind):
    rng = np.random.default_rng(7)
    n, k = 6, 4
    z = 3 * rng.standard_normal((n, k))
    y = _targets(head, kind, n, k, rng)
    Hh = _head_hessians(head, z, y, k)
    probs = reference.sigmoid_forward(z) if head == "sigmoid" else reference.softmax_forward(z)
    s = np.ones(n) if y.ndim == 1 else y.sum(axis=1)
    S = reference.head_hessian_factor(head, probs, s)
    assert S.shape == (n, k, k)
    _check("S S^T vs Hhead", np.einsum("iaj,ibj->iab", S, S), Hh, tol(np.float64), f"{head}-{kind}")
    r = rng.standard_normal((n, k))
    _check("head_hessian_vp vs Hhead r", reference.head_hessian_vp(head, probs, s, r),
           np.einsum("iab,ib->ia", Hh, r), tol(np.float64), f"{head}-{kind}")


# -- blocks, dtypes, N = 0, unchanged inputs -------------------------------------------------------------

@pytest.mark.parametrize("head,kind", [("softmax", "labels"), ("sigmoid", "soft"), ("softmax", "unnormalized")])
def test_blocks_are_the_single_calls_stacked(head, kind):
    Ws, bs, X, y, w, rng = _problem([3, 5, 4, 3], head, kind)
    V = rng.standard_normal((_n_params(Ws), 5))
    kw = _kwargs(head, "mean", True, w)
    for name, fn in (("hvp", reference.hvp), ("ggn_vp", reference.ggn_vp)):
        block = fn(Ws, bs, X, y, V, **kw)
        assert block.shape == V.shape
        singles = np.stack([fn(Ws, bs, X, y, V[:, j], **kw) for j in range(V.shape[1])], axis=1)
        assert all(fn(Ws, bs, X, y, V[:, j], **kw).shape == (V.shape[0],) for j in range(2))
        _check(f"{name} block vs single calls", block, singles, tol(np.float64), f"{head}-{kind}")
        # a (P, 1) block stays 2-D; an integer V is converted like grad_dot's
        assert fn(Ws, bs, X, y, V[:, :1], **kw).shape == (V.shape[0], 1)
        Vi = rng.integers(-3, 4, V.shape[0])
        _check(f"{name} integer V", fn(Ws, bs, X, y, Vi, **kw), fn(Ws, bs, X, y, Vi.astype(np.float64), **kw),
               tol(np.float64), f"{head}-{kind}")


@pytest.mark.parametrize("head,kind", [("softmax", "labels"), ("sigmoid", "soft"), ("softmax", "soft")])
def test_float32_results_are_float32_and_match_float64(head, kind):
    sizes, n = [6, 5, 4, 3], 7
    Ws, bs, X, y = make_problem(sizes, n, head, kind, np.float32, seed=5)
    w = np.linspace(0.5, 1.5, n).astype(np.float32)
    a32 = (Ws, bs, X, y)
    a64 = ([W.astype(np.float64) for W in Ws], [b.astype(np.float64) for b in bs], X.astype(np.float64),
           y.astype(np.float64) if y.dtype.kind == "f" else y)
    V = np.random.default_rng(0).standard_normal((_n_params(Ws), 3))  # float64, converted to float32
    for reduction, sw in (("sum", None), ("mean", w)):
        kw = dict(head=head, reduction=reduction, sample_weight=sw)
        for name, call in (("hvp", lambda a: reference.hvp(*a, V, **kw)),
                           ("hvp 1-D", lambda a: reference.hvp(*a, V[:, 0], **kw)),
                           ("ggn_vp", lambda a: reference.ggn_vp(*a, V, **kw)),
                           ("ggn_diag", lambda a: reference.ggn_diag(*a, **kw))):
            got, want = call(a32), call(a64)
            assert got.dtype == np.float32, name
            _check(f"float32 vs float64: {name}", got, want, F32_TOL, f"{head}-{kind} {reduction}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(dtype):
    Ws, bs = make_network([3, 5, 2], dtype)
    X, y = np.zeros((0, 3), dtype=dtype), np.zeros(0, dtype=np.int64)
    P = _n_params(Ws)
    for out, shape in ((reference.hvp(Ws, bs, X, y, np.ones(P), head="softmax"), (P,)),
                       (reference.ggn_vp(Ws, bs, X, y, np.ones((P, 2)), head="softmax"), (P, 2)),
                       (reference.ggn_diag(Ws, bs, X, y, head="softmax"), (P,))):
        assert out.shape == shape and out.dtype == dtype and not np.any(out)
    for call in (lambda: reference.hvp(Ws, bs, X, y, np.ones(P), head="softmax", reduction="mean"),
                 lambda: reference.ggn_diag(Ws, bs, X, y, head="softmax", reduction="mean")):
        with pytest.raises(ValueError, match=r"reduction='mean' needs a positive total weight"):
            call()


def test_inputs_are_not_modified():
    Ws, bs, X, y = make_problem([4, 5, 3], 6, "softmax", "soft", seed=1)
    w = np.linspace(0.5, 1.5, 6)
    V = np.random.default_rng(2).standard_normal((_n_params(Ws), 2))
    V32, v1 = V.astype(np.float32), V[:, 1].copy()
    everything = Ws + bs + [X, y, w, V, V32, v1]
    saved = [a.copy() for a in everything]
    for fn in (reference.hvp, reference.ggn_vp):
        for vec in (V, V32, v1):
            fn(Ws, bs, X, y, vec, head="softmax", reduction="mean", sample_weight=w)
    reference.ggn_diag(Ws, bs, X, y, head="softmax", sample_weight=w)
    for a, s in zip(everything, saved):
        np.testing.assert_array_equal(a, s)


# -- argument rules --------------------------------------------------------------------------------------

def _base():
    return make_problem([3, 5, 2], 4, "softmax", "labels", seed=0)


P_BASE = 3 * 5 + 5 * 2 + 5 + 2  # 32

BAD_V = [
    ("complex", lambda P: np.ones(P, dtype=np.complex128), TypeError, r"^V must be a real array"),
    ("bool", lambda P: np.ones(P, dtype=bool), TypeError, r"^V must be a real array"),
    ("object", lambda P: np.ones(P, dtype=object), TypeError, r"^V must be a numeric array"),
    ("str", lambda P: "V", TypeError, r"^V must be an array"),
    ("None", lambda P: None, TypeError, r"^V must be an array"),
    ("ragged", lambda P: [[1.0, 2.0], [3.0]], TypeError, r"^V must be an array"),
    ("too-short", lambda P: np.ones(P - 1), ValueError, r"^V must have shape \(32,\) or \(32, m\) with m >= 1 .*"
                                                        r"got shape \(31,\)"),
    ("too-long", lambda P: np.ones(P + 1), ValueError, r"^V must have shape .*got shape \(33,\)"),
    ("transposed", lambda P: np.ones((2, P)), ValueError, r"^V must have shape .*got shape \(2, 32\)"),
    ("no-columns", lambda P: np.ones((P, 0)), ValueError, r"^V must have shape .*got shape \(32, 0\)"),
    ("3-d", lambda P: np.ones((P, 2, 1)), ValueError, r"^V must have shape .*got shape \(32, 2, 1\)"),
    ("0-d", lambda P: 1.0, ValueError, r"^V must have shape .*got shape \(\)"),
    ("nan", lambda P: np.r_[np.ones(P - 1), np.nan], ValueError, r"^V must be finite"),
    ("inf", lambda P: np.full((P, 2), -np.inf), ValueError, r"^V must be finite"),
]


@pytest.mark.parametrize("name, make, exc, match", BAD_V, ids=[c[0] for c in BAD_V])
@pytest.mark.parametrize("fn", [reference.hvp, reference.ggn_vp], ids=["hvp", "ggn_vp"])
def test_bad_V(fn, name, make, exc, match):
    with pytest.raises(exc, match=match):
        fn(*_base(), make(P_BASE), head="softmax")


def test_V_overflowing_float32_is_rejected():
    Ws, bs, X, y = _base()
    Ws32, bs32 = [W.astype(np.float32) for W in Ws], [b.astype(np.float32) for b in bs]
    for fn in (reference.hvp, reference.ggn_vp):
        with pytest.raises(ValueError, match=r"^V must be finite \(after conversion to float32\)"):
            fn(Ws32, bs32, X, y, np.full(P_BASE, 1e300), head="softmax")


def test_common_rules_apply():
    """The arguments shared with loss_and_grad keep its rules and messages."""
    Ws, bs, X, y = _base()
    calls = [lambda **k: reference.hvp(V=np.ones(P_BASE), **k),
             lambda **k: reference.ggn_vp(V=np.ones(P_BASE), **k),
             lambda **k: reference.ggn_diag(**k)]
    for call in calls:
        with pytest.raises(ValueError, match=r"head must be one of"):
            call(weights=Ws, biases=bs, X=X, y=y, head="relu")
        with pytest.raises(ValueError, match=r"y labels must lie in \[0, 2\)"):
            call(weights=Ws, biases=bs, X=X, y=np.array([0, 1, 5, 0]), head="softmax")
        with pytest.raises(ValueError, match=r"X must have 3 columns"):
            call(weights=Ws, biases=bs, X=np.ones((4, 4)), y=y, head="softmax")
        with pytest.raises(ValueError, match=r"sample_weight must be finite and >= 0"):
            call(weights=Ws, biases=bs, X=X, y=y, head="softmax", sample_weight=-np.ones(4))
        with pytest.raises(ValueError, match=r"reduction must be one of"):
            call(weights=Ws, biases=bs, X=X, y=y, head="softmax", reduction="avg")


def test_exported():
    for name in ("hvp", "ggn_vp", "ggn_diag"):
        assert name in reference.__all__ and name in reference.__doc__
