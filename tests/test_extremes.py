"""Extreme inputs: huge logits, saturated units, vanishing probabilities, NaN / Inf, float16 X, and shapes
whose element counts overflow 32-bit integers.

Where is +inf the mathematically right loss?  Never, for finite inputs and these heads.  The softmax
head's per-sample loss is -log p_y = logsumexp(z) - z_y <= max_j z_j - z_y + log k, and the sigmoid
head's is softplus(z) - y z <= |z| + log 2 per unit: finite for every finite logit vector, however
small the probability of the target class (p_y = 1e-30, or exp(-1e4), which underflows to 0 in any
float format).  +inf is only the limit as a logit goes to +-inf, and a loss computed from an underflowed
probability as -log(0) would be +inf: mlpgrad computes losses from the logits (README, "The model"), so
its losses are finite here, and so are the gradients (p - y is within [-1, 1] times the sample's factor).

NaN and Inf inside X or the parameters are not screened (README, "Input rules"): NaN in gives NaN out
(the loss, and the results that depend on it), never a crash; an inf saturates the units it reaches, and the
results have the reference's NaN and inf entries (but where the softmax of an infinite logit is undefined).

Tolerances: ``_bounds.check`` (relative max-norm error 1e-10 in float64, 1e-4 in float32 against a
float64 reference on the same values, the denominator floored by a running rounding-error bound; see
``_bounds``).  With logits of 1e4, the logits themselves carry an error of about u * |h| |W| (6e-4 in
float32), which the bound accounts for; the losses, dominated by |z| for confidently wrong rows, keep
a relative error of a few u.

Huge shapes run in subprocesses, so that a crash shows as a failed test and not as a dead test run:
a zero-stride view of 2^31 + 8 rows under an address-space limit (every copy must fail, cleanly), and
lazily zero-filled arrays of more than 2^31 elements (untouched pages of np.zeros cost no memory) that
the native core reads in full.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
from _bounds import check, error_scales, tol
from _problems import forced_schedule, make_network, make_problem, rel_err

F32, F64 = np.float32, np.float64
DTYPES = [F32, F64]


def _to64(arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _compare_all(Ws, bs, X, y, head, reduction, sample_weight, dtype, input_grad=True):
    """Native vs the float64 reference on the same values: loss, loss(), every gradient, forward."""
    dt = np.dtype(dtype)
    L, g = mlpgrad.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=sample_weight,
                                 input_grad=input_grad)
    L2 = mlpgrad.loss(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=sample_weight)
    P = mlpgrad.forward(Ws, bs, X, head=head)
    R = dict(Ws=_to64(Ws), bs=_to64(bs), X=np.asarray(X).astype(dt).astype(np.float64),
             y=y if np.asarray(y).dtype.kind in "iu" else np.asarray(y, dtype=np.float64),
             w=None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64))
    L_ref, g_ref = reference.loss_and_grad(R["Ws"], R["bs"], R["X"], R["y"], head=head, reduction=reduction,
                                           sample_weight=R["w"], input_grad=True)
    E = error_scales(R["Ws"], R["bs"], R["X"], R["y"], R["w"], head, reduction, dt)
    check("loss", L, L_ref, E["loss"], dt)
    check("loss()", L2, L_ref, E["loss"], dt)
    for l in range(len(Ws)):
        check(f"dW[{l}]", g.weights[l], g_ref.weights[l], E["dW"][l], dt)
        check(f"db[{l}]", g.biases[l], g_ref.biases[l], E["db"][l], dt)
    if input_grad:
        check("dX", g.input, g_ref.input, E["dX"], dt)
    check("forward", P, reference.forward(R["Ws"], R["bs"], R["X"], head=head), E["P"], dt)
    return L, g, P, L_ref


def _all_finite(L, g, P):
    return (math.isfinite(L) and all(np.all(np.isfinite(a)) for a in g.weights + g.biases)
            and (g.input is None or np.all(np.isfinite(g.input))) and np.all(np.isfinite(P)))


# -- huge logits, saturated hidden units -------------------------------------------------------------

def _huge_logit_network(sizes, dtype, zmax, hidden_scale, seed):
    """Weights whose hidden layers saturate (|z| ~ hidden_scale) and whose logits reach max |z_L| = zmax
    exactly (the last layer rescaled), on X ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    Ws, bs = make_network(sizes, np.float64, rng)
    Ws = [W * (hidden_scale if l < len(Ws) - 1 else 1.0) for l, W in enumerate(Ws)]
    X = rng.standard_normal((37, sizes[0]))
    hs, z = reference._forward_pass([W.astype(dtype).astype(np.float64) for W in Ws],
                                    [b.astype(dtype).astype(np.float64) for b in bs], X.astype(dtype))
    f = zmax / np.max(np.abs(z))
    Ws[-1], bs[-1] = Ws[-1] * f, bs[-1] * f
    Ws, bs = [W.astype(dtype) for W in Ws], [b.astype(dtype) for b in bs]
    z = reference._forward_pass(_to64(Ws), _to64(bs), X.astype(dtype).astype(np.float64))[1]
    return Ws, bs, X.astype(dtype), z, hs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
@pytest.mark.parametrize("sizes", [[6, 4], [6, 20, 4], [6, 9, 9, 3]], ids=["1-layer", "2-layer", "3-layer"])
@pytest.mark.parametrize("schedule", [None, "chunked", "layered"])
def test_logits_of_1e4_with_wrong_targets(dtype, head, sizes, schedule):
    """max |z_L| = 1e4, hidden units saturated (|z| ~ 100: h is 0 or 1 to rounding), targets on
    the least likely class (softmax) or the wrong side of every unit (sigmoid): loss ~ 1e4 per sample,
    finite, and every result within the bound of the reference."""
    Ws, bs, X, z, hs = _huge_logit_network(sizes, dtype, 1e4, 100.0, seed=len(sizes))
    assert np.max(np.abs(z)) == pytest.approx(1e4, rel=1e-3)
    if len(hs) > 1:
        h = hs[1]
        assert np.mean((h < 1e-6) | (h > 1 - 1e-6)) > 0.7, "the hidden layer should be mostly saturated"
    if head == "softmax":
        y = np.argmin(z, axis=1)
    else:
        y = (z < 0).astype(dtype)
    w = np.random.default_rng(0).uniform(0.5, 2.0, X.shape[0]).astype(dtype)
    with forced_schedule(schedule):
        for reduction, sw in (("sum", None), ("mean", w)):
            L, g, P, L_ref = _compare_all(Ws, bs, X, y, head, reduction, sw, dtype)
            assert _all_finite(L, g, P)
            assert L_ref > 100  # the regime asked for: confidently wrong, loss ~ |z| per sample
            assert np.all((P >= 0) & (P <= 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_saturated_hidden_layers_soft_targets(dtype, head):
    """Every hidden unit saturated beyond exp's range (|z| >= 1000: h exactly 0 or 1 and h (1 - h) = 0, in
    both dtypes and in the reference): the gradients of every layer below the last, and dX, are exactly
    0; the last layer's are not; everything else matches the reference."""
    sizes = [5, 12, 12, 4]
    rng = np.random.default_rng(3)
    Ws, bs = make_network(sizes, np.float64, rng)
    X = rng.choice([-1.0, 1.0], size=(50, 5))
    # each hidden unit reads one unit below it with a weight of +-2000; layer 0's inputs are +-1
    # (|z| = 2000), layer 1's are exactly 0 or 1, and its bias -1000 makes z one of -1000, 1000, -3000
    for l in range(len(Ws) - 1):
        W = np.zeros_like(Ws[l])
        W[np.arange(W.shape[1]) % W.shape[0], np.arange(W.shape[1])] = 2000.0 * rng.choice([-1.0, 1.0], W.shape[1])
        Ws[l], bs[l] = W, np.full_like(bs[l], 0.0 if l == 0 else -1000.0)
    Ws, bs, X = [W.astype(dtype) for W in Ws], [b.astype(dtype) for b in bs], X.astype(dtype)
    hs, _ = reference._forward_pass(_to64(Ws), _to64(bs), X.astype(np.float64))
    assert all(np.all((h == 0) | (h == 1)) for h in hs[1:])
    y = (np.random.default_rng(4).random((50, 4)) if head == "sigmoid"
         else np.random.default_rng(4).dirichlet(np.ones(4), 50)).astype(dtype)
    L, g, P, _ = _compare_all(Ws, bs, X, y, head, "mean", None, dtype)
    assert _all_finite(L, g, P)
    for l in range(len(Ws) - 1):
        assert not np.any(g.weights[l]) and not np.any(g.biases[l]), f"layer {l} should get zero gradients"
    assert not np.any(g.input)
    assert np.any(g.weights[-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gap", [69.0776, 690.7755, 1e4],
                         ids=["p=1e-30", "p=1e-300", "p=exp(-1e4)"])
def test_one_hot_target_on_a_vanishing_class(dtype, gap):
    """Logits (gap, 0) and the label on class 1: p_1 = 1 / (1 + e^gap) (1e-30, 1e-300 - below float32's
    range - or exp(-1e4), which underflows in both dtypes).  The loss is log(1 + e^gap) = gap +
    log1p(e^-gap): finite, to a few ulp; dL/dz = p - onehot = (1 - p_1, p_1 - 1) = (1, -1) to rounding.
    The sigmoid head with z = -gap and y = 1 is the same loss."""
    dt = np.dtype(dtype)
    g32 = float(dt.type(gap))  # the logit as the native core sees it
    expected = g32 + math.log1p(math.exp(-g32))
    W, b = [np.eye(2, dtype=dt)], [np.zeros(2, dtype=dt)]
    X = np.array([[gap, 0.0], [gap, 0.0]], dtype=dt)
    for y in (np.array([1, 1]), np.array([[0.0, 1.0], [0.0, 1.0]], dtype=dt)):  # label, one-hot row
        L, g = mlpgrad.loss_and_grad(W, b, X, y, head="softmax", reduction="mean", input_grad=True)
        assert math.isfinite(L) and L == pytest.approx(expected, rel=4 * float(np.finfo(dt).eps))
        np.testing.assert_allclose(g.input, [[0.5, -0.5], [0.5, -0.5]], rtol=4 * np.finfo(dt).eps, atol=0)
        P = mlpgrad.forward(W, b, X, head="softmax")
        assert np.all(np.isfinite(P)) and np.all(P[:, 0] == 1)
        assert 0 <= P[0, 1] <= 2 * math.exp(-g32) + 1e-300
    Ws, bs = [np.ones((1, 1), dtype=dt)], [np.zeros(1, dtype=dt)]
    Xs = np.array([[-gap]], dtype=dt)
    L, g = mlpgrad.loss_and_grad(Ws, bs, Xs, np.array([1.0], dtype=dt), head="sigmoid", input_grad=True)
    assert math.isfinite(L) and L == pytest.approx(expected, rel=4 * float(np.finfo(dt).eps))
    np.testing.assert_allclose(g.input, [[-1.0]], rtol=4 * np.finfo(dt).eps, atol=0)
    ref = reference.loss([np.ones((1, 1))], [np.zeros(1)], Xs.astype(np.float64), np.array([1.0]), head="sigmoid")
    assert ref == pytest.approx(expected, rel=1e-15)


# -- NaN and Inf ---------------------------------------------------------------------------------------

def _pattern(a):
    """0 finite, 1 NaN, 2 +inf, 3 -inf, elementwise."""
    a = np.asarray(a, dtype=np.float64)
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


NONFINITE_PLACES = ["X", "W0", "b0", "Wlast", "blast", "Whidden"]


def _poison(Ws, bs, X, where, value):
    Ws, bs, X = [W.copy() for W in Ws], [b.copy() for b in bs], X.copy()
    {"X": lambda: X.__setitem__((3, 1), value),
     "W0": lambda: Ws[0].__setitem__((1, 2), value),
     "b0": lambda: bs[0].__setitem__(2, value),
     "Wlast": lambda: Ws[-1].__setitem__((0, 1), value),
     "blast": lambda: bs[-1].__setitem__(1, value),
     "Whidden": lambda: Ws[1].__setitem__((2, 0), value)}[where]()
    return Ws, bs, X


def _run_both(Ws, bs, X, y, head, reduction):
    """(native, reference) results: [loss, P, dW..., db..., dX]; the reference with NumPy's FP warnings off."""
    out = []
    for mod in (mlpgrad, reference):
        with np.errstate(all="ignore"):
            L, g = mod.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, input_grad=True)
            P = mod.forward(Ws, bs, X, head=head)
            L2 = mod.loss(Ws, bs, X, y, head=head, reduction=reduction)
        assert math.isnan(L2) if math.isnan(L) else L2 == pytest.approx(L, rel=tol(Ws[0].dtype))
        out.append([L, P, *g.weights, *g.biases, g.input])
    return out


def _result_names(n_layers):
    return ["loss", "P"] + [f"dW[{l}]" for l in range(n_layers)] + [f"db[{l}]" for l in range(n_layers)] + ["dX"]


def _assert_reference_pattern(nat, ref, n_layers, dt, only=None):
    """Every result (or those named in ``only``) has the reference's NaN / +inf / -inf entries, and its finite
    entries agree with the reference's."""
    for name, a, b in zip(_result_names(n_layers), nat, ref):
        if only is not None and name not in only:
            continue
        assert np.array_equal(_pattern(a), _pattern(b)), f"{name}: non-finite pattern differs from the reference"
        fa, fb = np.asarray(a, np.float64)[_pattern(b) == 0], np.asarray(b, np.float64)[_pattern(b) == 0]
        if fb.size:
            assert np.max(np.abs(fa - fb)) <= tol(dt, "floored") * max(np.max(np.abs(fb)), 1e-3), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
@pytest.mark.parametrize("sizes", [[4, 6, 5, 3], [20, 24, 18, 3]], ids=["narrow", "wide"])
@pytest.mark.parametrize("schedule", [None, "chunked", "layered"])
@pytest.mark.parametrize("where", NONFINITE_PLACES)
def test_nan_in_gives_nan_out(dtype, head, sizes, schedule, where):
    """One NaN in X or in a parameter: the loss is NaN, and exactly the results the reference makes NaN
    are NaN (the rows of P and dX of a NaN row of X; everything that sums over them); the others agree
    with the reference.  No exception, no crash."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(5)
    Ws, bs = make_network(sizes, dt, rng)
    X = rng.standard_normal((9, sizes[0])).astype(dt)
    y = rng.integers(0, sizes[-1], 9) if head == "softmax" else rng.random((9, sizes[-1])).astype(dt)
    Ws, bs, X = _poison(Ws, bs, X, where, np.nan)
    for reduction in ("sum", "mean"):
        with forced_schedule(schedule):
            nat, ref = _run_both(Ws, bs, X, y, head, reduction)
        assert math.isnan(nat[0]), "NaN in: the loss must be NaN"
        _assert_reference_pattern(nat, ref, len(Ws), dt)
        if where == "X":  # the other rows are untouched
            P = nat[1]
            assert np.all(np.isnan(P[3])) and np.all(np.isfinite(np.delete(P, 3, axis=0)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
@pytest.mark.parametrize("sizes", [[4, 6, 5, 3], [20, 24, 18, 3]], ids=["narrow", "wide"])
@pytest.mark.parametrize("schedule", [None, "chunked", "layered"])
@pytest.mark.parametrize("where", NONFINITE_PLACES)
@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["+inf", "-inf"])
def test_inf_in_gives_the_references_nonfinite_entries(dtype, head, sizes, schedule, where, value):
    """One +-inf in X or a parameter (not screened; README, "NaN, Inf and extreme values").

    Into a hidden layer (X, W_0, b_0, a hidden W): the units it reaches saturate (h exactly 0 or 1), so the loss
    and forward stay finite, and NaN appears only where inf * 0 arises (the dW_0 row of X's infinite column; dX
    and the gradients below an infinite weight, which meets the exact 0 its saturated unit passes back): every
    result has exactly the reference's NaN and inf entries and agrees with it elsewhere.  An inf in row 3 of X leaves the other rows of forward and dX
    finite.  Into the logits (the last W or b): the sigmoid head's loss is +inf, and every result has the
    reference's pattern; the softmax of an infinite logit is undefined (inf - inf): the loss is not finite (a row's
    label is that logit's class), the engines differ from the reference in the loss and forward (NaN or +inf),
    and the gradients have the reference's pattern."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(6)
    Ws, bs = make_network(sizes, dt, rng)
    X = rng.standard_normal((9, sizes[0])).astype(dt)
    y = rng.integers(0, sizes[-1], 9) if head == "softmax" else rng.random((9, sizes[-1])).astype(dt)
    Ws, bs, X = _poison(Ws, bs, X, where, value)
    into_logits = where in ("Wlast", "blast")
    for reduction in ("sum", "mean"):
        with forced_schedule(schedule):
            nat, ref = _run_both(Ws, bs, X, y, head, reduction)
        L, P, dX = nat[0], nat[1], nat[-1]
        assert isinstance(L, float) and P.shape == (9, sizes[-1]) and P.dtype == dt and dX.shape == X.shape
        if not into_logits:
            assert math.isfinite(L) and np.all(np.isfinite(P)), "saturated units keep the loss and forward finite"
            _assert_reference_pattern(nat, ref, len(Ws), dt)
        elif head == "sigmoid":
            assert L == math.inf
            _assert_reference_pattern(nat, ref, len(Ws), dt)
        else:
            assert 1 in y and not math.isfinite(L)
            _assert_reference_pattern(nat, ref, len(Ws), dt, only=_result_names(len(Ws))[2:])
        if where == "X":
            assert np.all(np.isfinite(np.delete(P, 3, axis=0))) and np.all(np.isfinite(np.delete(dX, 3, axis=0)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [
    pytest.param([3, 5, 2], id="narrow"),
    pytest.param([20, 24, 3], id="wide"),
])
def test_inf_weight_of_a_saturating_unit_matches_reference(dtype, sizes):
    """W_0[0, 0] = +inf with positive inputs: unit 0 of the hidden layer gets z = +inf, h = 1 exactly, a
    finite forward pass and loss, and h (1 - h) = 0: dW and db of every layer are finite (the limit of
    the finite problem as W_0[0, 0] grows, which the reference computes); dX is NaN where inf * 0."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(7)
    Ws, bs = make_network(sizes, dt, rng)
    Ws[0][0, 0] = np.inf
    X = rng.uniform(0.5, 1.0, (6, sizes[0])).astype(dt)
    y = rng.integers(0, sizes[-1], 6)
    nat, ref = _run_both(Ws, bs, X, y, "softmax", "sum")
    assert math.isfinite(nat[0]) and nat[0] == pytest.approx(ref[0], rel=tol(dt))
    for name, a, b in zip(_result_names(len(Ws)), nat, ref):
        assert np.array_equal(_pattern(a), _pattern(b)), f"{name}: non-finite pattern differs from the reference"
    for a in nat[2:-1]:
        assert np.all(np.isfinite(a))


# -- float16 X -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_float16_X_extremes(dtype, head):
    """float16 X holding its extremes (65504, the smallest normal 6.1e-5 and subnormal 6e-8, -0.0) is
    converted exactly to the weights' dtype and agrees with the reference; float16 inf / NaN (what 7e4
    becomes in float16) go through as inf / NaN: NaN in, NaN out."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(8)
    sizes = [6, 10, 3]
    Ws, bs = make_network(sizes, dt, rng, scale=1e-3)  # keeps logits of 65504-sized inputs moderate
    vals = np.array([65504.0, -65504.0, 6.104e-05, 6e-08, -0.0, 1.0, -2.5, 0.0999], dtype=np.float16)
    X16 = vals[rng.integers(0, len(vals), (40, 6))]
    X16[0] = vals[:6]
    X16[1, :2] = vals[6:]
    assert X16.dtype == np.float16 and np.all(np.isfinite(X16))
    y = rng.integers(0, 3, 40) if head == "softmax" else rng.random((40, 3)).astype(dt)
    _compare_all(Ws, bs, X16, y, head, "mean", None, dtype)

    bad = X16.copy()
    bad[5, 2] = np.float16(np.inf)
    with np.errstate(over="ignore"):
        bad[6, 0] = np.float16(7e4)  # overflows to inf
    bad[7, 4] = np.float16(np.nan)
    assert np.isinf(bad[6, 0])
    L, g = mlpgrad.loss_and_grad(Ws, bs, bad, y, head=head, input_grad=True)
    assert math.isnan(L)
    P = mlpgrad.forward(Ws, bs, bad, head=head)
    assert np.all(np.isnan(P[7])) and np.all(np.isfinite(np.delete(P, [5, 6, 7], axis=0)))


# -- shapes beyond 32-bit element counts ----------------------------------------------------------------

def _run_child(code, timeout=600):
    """Run ``code`` in a fresh interpreter; return (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _assert_survived(rc, out, err):
    assert rc == 0, (f"the child process died (return code {rc}: "
                     f"{'signal ' + str(-rc) if rc < 0 else 'exit'})\nstdout:\n{out}\nstderr:\n{err[-3000:]}")


_HUGE_VIEW_CHILD = """
    import json, resource
    import numpy as np
    import mlpgrad

    def vm():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()

    N = 2**31 + 8
    W32, b32 = [np.ones((1, 1), np.float32)], [np.zeros(1, np.float32)]
    X32 = np.broadcast_to(np.float32(0.5), (N, 1))          # zero stride: 4 bytes for 2^31 + 8 rows
    X64 = np.broadcast_to(np.float64(0.5), (N, 1))
    X16 = np.broadcast_to(np.float16(0.5), (N, 1))
    ys = np.broadcast_to(np.float32(1.0), (N,))
    labels = np.broadcast_to(np.int64(0), (N,))
    mlpgrad.loss(W32, b32, np.zeros((3, 1), np.float32), np.zeros(3, np.float32), head="sigmoid")  # warm up
    # Any copy of 2^31 rows needs >= 8 GiB; allow 1 GiB more address space than now.
    resource.setrlimit(resource.RLIMIT_AS, (vm() + 2**30, resource.RLIM_INFINITY))
    calls = {
        "forward float32 X": lambda: mlpgrad.forward(W32, b32, X32, head="sigmoid"),
        "forward float64 X -> float32": lambda: mlpgrad.forward(W32, b32, X64, head="sigmoid"),
        "forward float16 X": lambda: mlpgrad.forward(W32, b32, X16, head="sigmoid"),
        "loss sigmoid": lambda: mlpgrad.loss(W32, b32, X32, ys, head="sigmoid"),
        "loss_and_grad softmax labels": lambda: mlpgrad.loss_and_grad(W32, b32, X32, labels, head="softmax"),
        "loss_and_grad sigmoid dX": lambda: mlpgrad.loss_and_grad(W32, b32, X32, ys, head="sigmoid",
                                                                  input_grad=True),
        "reference forward": lambda: mlpgrad.reference.forward(W32, b32, X32, head="sigmoid"),
    }
    out = {}
    for name, f in calls.items():
        try:
            r = f()
            out[name] = ["returned", type(r).__name__]
        except Exception as exc:
            out[name] = [type(exc).__name__, str(exc)[:200]]
    # the process is still sound: a small problem gives the same answer as before
    out["after"] = mlpgrad.loss(W32, b32, np.full((3, 1), 0.5, np.float32), np.ones(3, np.float32), head="sigmoid")
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def huge_view_outcomes():
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs Linux (/proc, RLIMIT_AS)")
    rc, out, err = _run_child(_HUGE_VIEW_CHILD)
    _assert_survived(rc, out, err)
    return json.loads(out.strip().splitlines()[-1])


def test_huge_zero_stride_X_fails_cleanly_without_memory(huge_view_outcomes):
    """X of shape (2^31 + 8, 1) as a zero-stride view and a 1-1 network, with the address space capped
    1 GiB above the start: every call needs an 8 GiB copy (conversion to C order or to the weights'
    dtype, or the (N, 1) result), so each must raise, and the process must survive and still compute."""
    outcomes = dict(huge_view_outcomes)
    print("\n" + "\n".join(f"  {k}: {v}" for k, v in outcomes.items()))
    expected_after = 3 * (math.log1p(math.exp(-0.5)))  # softplus(-0.5) per row, y = 1
    assert outcomes.pop("after") == pytest.approx(expected_after, rel=1e-6)
    for name, (kind, detail) in outcomes.items():
        assert kind != "returned", f"{name}: returned under a 1 GiB address-space limit"
        assert kind in ("MemoryError", "ValueError", "TypeError", "OverflowError"), f"{name}: {kind}: {detail}"


def test_huge_zero_stride_X_raises_memory_error(huge_view_outcomes):
    """Out of memory is a MemoryError (the Python-side copies already raise it), not a TypeError."""
    outcomes = dict(huge_view_outcomes)
    outcomes.pop("after")
    wrong = {name: v for name, v in outcomes.items() if v[0] != "MemoryError"}
    assert not wrong, f"not MemoryError: {wrong}"


_LAZY_CHILD = """
    import json, resource, time
    import numpy as np
    import mlpgrad

    def peak_rss_mb():  # VmHWM restarts at exec; ru_maxrss would carry the parent's peak across fork
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    N, d0 = {N}, {d0}
    X = np.zeros((N, d0), np.float32)     # calloc'ed: pages never written cost no memory, read as zeros
    X[-8:] = 1.0                          # the last rows, beyond element 2^31
    y = np.full(N, 2, np.int64)
    y[-8:] = 0
    W = [np.full((d0, 1), 1e-4, np.float32), np.array([[0.0, 0.0, 40.0]], np.float32)]
    b = [np.zeros(1, np.float32), np.zeros(3, np.float32)]
    t = time.perf_counter()
    L, g = mlpgrad.loss_and_grad(W, b, X, y, head="softmax")
    print(json.dumps(dict(L=L, dW0=g.weights[0][:4, 0].tolist(), dW0_min=float(g.weights[0].min()),
                          dW0_max=float(g.weights[0].max()), dW1=g.weights[1].ravel().tolist(),
                          seconds=time.perf_counter() - t,
                          maxrss_mb=peak_rss_mb())))
"""


@pytest.mark.slow
def test_X_with_more_than_2_31_elements():
    """X of (2^16 + 8, 2^15) float32: 2^31 + 2^18 elements (8 GiB), offsets of the last rows beyond 2^31
    elements and 2^33 bytes.  Zero rows everywhere but the last 8 (lazily allocated: the process stays
    small), whose rows are ones with a wrong label and a large loss; dW_0 = X^T delta_1 comes from those
    8 rows alone.  Expected: the reference on 9 rows (one zero row weighted N - 8, the 8 last rows)."""
    N, d0 = 2**16 + 8, 2**15
    assert N * d0 > 2**31
    rc, out, err = _run_child(_LAZY_CHILD.format(N=N, d0=d0))
    _assert_survived(rc, out, err)
    res = json.loads(out.strip().splitlines()[-1])
    print(f"\nN x d0 = {N * d0} elements: {res['seconds']:.1f} s, max RSS {res['maxrss_mb']:.0f} MiB")

    W = [np.full((d0, 1), 1e-4, np.float32), np.array([[0.0, 0.0, 40.0]], np.float32)]
    b = [np.zeros(1, np.float32), np.zeros(3, np.float32)]
    Xc = np.zeros((9, d0))
    Xc[1:] = 1.0
    yc = np.array([2] + [0] * 8)
    wc = np.array([N - 8.0] + [1.0] * 8)
    L_ref, g_ref = reference.loss_and_grad(_to64(W), _to64(b), Xc, yc, head="softmax", sample_weight=wc)
    assert L_ref > 300  # the last rows dominate: read as zero rows, the loss would be ~3e-4
    assert res["L"] == pytest.approx(L_ref, rel=tol(F32))
    # every row of dW_0 is the same: sum over the last 8 rows of delta_1 (x = 0 elsewhere)
    assert res["dW0_min"] == pytest.approx(g_ref.weights[0][0, 0], rel=tol(F32, "long_dot"))
    assert res["dW0_max"] == pytest.approx(g_ref.weights[0][0, 0], rel=tol(F32, "long_dot"))
    assert rel_err(np.array(res["dW1"]), g_ref.weights[1].ravel()) <= tol(F32, "long_dot")
    assert res["maxrss_mb"] < 1024


_ROWS_CHILD = """
    import json, resource, time
    import numpy as np
    import mlpgrad

    def peak_rss_mb():  # VmHWM restarts at exec; ru_maxrss would carry the parent's peak across fork
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    N = {N}
    X = np.zeros((N, 1), np.float32)      # lazily zero: 8 GiB of address space, no memory
    y = np.zeros(N, np.float32)
    X[-8:] = 100.0                        # rows beyond 2^31: softplus(100) = 100 each
    W, b = [np.ones((1, 1), np.float32)], [np.zeros(1, np.float32)]
    t = time.perf_counter()
    L = mlpgrad.loss(W, b, X, y, head="sigmoid")
    seconds = time.perf_counter() - t
    # the loss of one zero row and of one row of 100, as the core computes them (float32)
    l0 = mlpgrad.loss(W, b, np.zeros((1, 1), np.float32), np.zeros(1, np.float32), head="sigmoid")
    l100 = mlpgrad.loss(W, b, np.full((1, 1), 100.0, np.float32), np.zeros(1, np.float32), head="sigmoid")
    print(json.dumps(dict(L=L, l0=l0, l100=l100, seconds=seconds,
                          maxrss_mb=peak_rss_mb())))
"""


@pytest.mark.slow
def test_more_than_2_31_rows():
    """X of (2^31 + 8, 1) float32, lazily zero but for the last 8 rows (100), y = 0, W = 1, b = 0: the
    loss is (N - 8) l0 + 8 l100 with l0 = log 2 and l100 = 100 the float32 per-row losses (taken from
    the core on one row): the float64 sum of 2^31 equal float32 values rounds by ~1e-15 relative, while
    the last rows add 8 (l100 - l0) ~ 794 to it.  Through the public API (the element-wise checks of y
    run in the binding, one pass over the lazily zero pages, no temporaries)."""
    N = 2**31 + 8
    rc, out, err = _run_child(_ROWS_CHILD.format(N=N))
    _assert_survived(rc, out, err)
    res = json.loads(out.strip().splitlines()[-1])
    print(f"\nN = {N} rows: {res['seconds']:.1f} s, max RSS {res['maxrss_mb']:.0f} MiB")
    l0, l100 = res["l0"], res["l100"]
    assert l0 == pytest.approx(math.log(2), rel=1e-6) and l100 == pytest.approx(100, rel=1e-6)
    assert res["L"] == pytest.approx((N - 8) * l0 + 8 * l100, rel=1e-12)
    assert res["L"] - N * l0 > 700  # the last rows were read
    assert res["maxrss_mb"] < 1024


_TINY_CHILD = """
    import json, os, sys
    import numpy as np
    import mlpgrad

    p = json.loads(sys.argv[1])
    Ws, bs = [np.array(W) for W in p["Ws"]], [np.array(b) for b in p["bs"]]
    X, y, kw = np.array(p["X"]), np.array(p["y"]), dict(n_threads=p["n_threads"])
    L, g = mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", input_grad=True, **kw)
    print(json.dumps(dict(max_threads=mlpgrad.build_info()["max_threads"], L=L,
                          loss=mlpgrad.loss(Ws, bs, X, y, head="softmax", **kw),
                          grads=[a.tolist() for a in g.weights + g.biases + [g.input]],
                          P=mlpgrad.forward(Ws, bs, X, head="softmax", **kw).tolist(),
                          os_threads=len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0)))
"""


@pytest.mark.parametrize("n_threads, omp_num_threads", [(4096, None), (None, 2**31 - 1)],
                         ids=["n_threads=4096", "OMP_NUM_THREADS=2^31-1"])
def test_huge_n_threads_on_a_tiny_problem_is_clean(n_threads, omp_num_threads):
    """The native core asked for far more threads than a 2-row problem of the narrow engine has work for (one
    chunk, one task): n_threads=4096, the largest the API accepts (larger ones are a ValueError before the core:
    test_inputs.py), and n_threads=None under OMP_NUM_THREADS=2^31 - 1, where the core takes OpenMP's count,
    INT_MAX.  In a fresh process (were the core to start that many threads, OpenMP would end it): loss_and_grad
    with dX, loss and forward return the reference's results, bit for bit the results of n_threads=1 here, and
    the process holds a handful of OS threads afterwards."""
    if omp_num_threads is not None and not mlpgrad.build_info()["openmp"]:
        pytest.skip("built without OpenMP")
    rng = np.random.default_rng(12)
    Ws, bs = make_network([3, 4, 2], F64, rng)
    X, y = rng.standard_normal((2, 3)), np.array([0, 1])
    env = dict(os.environ)
    if omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = str(omp_num_threads)
    arg = json.dumps(dict(Ws=[W.tolist() for W in Ws], bs=[b.tolist() for b in bs], X=X.tolist(), y=y.tolist(),
                          n_threads=n_threads))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_TINY_CHILD), arg], capture_output=True, text=True,
                          timeout=120, env=env)
    _assert_survived(proc.returncode, proc.stdout, proc.stderr)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if omp_num_threads is not None:
        assert res["max_threads"] == omp_num_threads  # the core really saw the huge count

    L1, g1 = mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", input_grad=True, n_threads=1)
    P1 = mlpgrad.forward(Ws, bs, X, head="softmax", n_threads=1)
    assert res["L"] == res["loss"] == L1
    for got, want in zip(res["grads"], g1.weights + g1.biases + [g1.input]):
        np.testing.assert_array_equal(np.array(got), want)
    np.testing.assert_array_equal(np.array(res["P"]), P1)

    L_ref, g_ref = reference.loss_and_grad(Ws, bs, X, y, head="softmax", input_grad=True)
    assert res["L"] == pytest.approx(L_ref, rel=tol(F64))
    for got, want in zip(res["grads"], g_ref.weights + g_ref.biases + [g_ref.input]):
        assert rel_err(np.array(got), want) <= tol(F64)
    assert rel_err(np.array(res["P"]), reference.forward(Ws, bs, X, head="softmax")) <= tol(F64)
    assert res["os_threads"] < 50


def test_huge_n_threads_on_a_small_problem_starts_few_threads():
    """n_threads is capped by the units of work: a 5-row problem never starts hundreds of OS threads
    (libgomp exits the process when it cannot create a thread); n_threads above 4096 is a ValueError."""
    code = textwrap.dedent("""
        import threading, numpy as np, mlpgrad
        Ws = [np.ones((3, 20)), np.ones((20, 2))]; bs = [np.zeros(20), np.zeros(2)]
        X = np.ones((5, 3)); y = np.array([0, 1, 0, 1, 1])
        ref = mlpgrad.loss(Ws, bs, X, y, head="softmax", n_threads=1)
        for t in (300, 4096):
            assert mlpgrad.loss(Ws, bs, X, y, head="softmax", n_threads=t) == ref
            assert mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", n_threads=t)[0] == ref
        import os
        print(len(os.listdir("/proc/self/task")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 50  # OS threads alive in the process afterwards
    with pytest.raises(ValueError, match="n_threads"):
        mlpgrad.loss(*make_problem([3, 4, 2], 5, "softmax")[:4], head="softmax", n_threads=4097)
