"""The native per-sample functions (issue 12: ``mlpgrad.per_sample_grad_norms``, ``clipped_grad``,
``per_sample_grads``, ``grad_dot``, ``grad_gram``, ``sum_squared_grads``) against the NumPy reference
(``mlpgrad.reference``, checked against finite differences in test_per_sample_reference.py).

Tolerance (``_bounds.tol``), per result array, in the max-norm relative error of ``_problems.rel_err``:
1e-12 in float64 (native float64 against the reference on the same arrays), 1e-5 in float32 (native float32
against the reference in float64 on the same float32 values), as in test_native_vs_reference.py.

The reference builds the (N, P) matrix of per-sample gradients; to keep its memory bounded it is called on
blocks of rows (every result but the sums is row by row, and the sums are sums over blocks: clipped_grad with
the samples' scale c_i given as sample weights of a "sum", sum_squared_grads with the weights of the block).

The case table covers depth 1-5, widths 1-300, N 1-4096 (the largest marked slow), both heads, labels and
soft targets, both reductions, with and without sample weights, float32 and float64, and the layouts of
test_native_vs_reference.py.  Then: n_threads 1, 2, 3 and 8 give the same bits; every SIMD level; out=;
the Objective's methods equal the functional calls; the caller's arrays are left unchanged; N = 0.  The
largest error per dtype is printed after the run (tests/_report.py).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
import _report
from _bounds import tol
from _problems import make_network, make_problem, rel_err
from test_native_vs_reference import layout, network_layout, sample_weights

LARGEST = {}  # dtype name -> (error, where)


@_report.section("per-sample native vs reference: largest max-norm relative error")
def _largest():
    return [f"  {name}: {err:.3e} <= {tol(np.dtype(name)):.0e} at {where}"
            for name, (err, where) in sorted(LARGEST.items())]


def _check(what, got, want, dtype, where, bound=None):
    dtype = np.dtype(dtype)
    bound = tol(dtype) if bound is None else bound
    got_a, want_a = np.asarray(got), np.asarray(want)
    assert got_a.shape == want_a.shape, f"{where}: {what} shape {got_a.shape}, expected {want_a.shape}"
    want64 = want_a.astype(np.float64)
    if want64.size and not np.any(want64):
        err = float(np.max(np.abs(got_a.astype(np.float64))))
    else:
        err = rel_err(got_a, want64)
    if not err <= LARGEST.get(dtype.name, (0.0,))[0]:
        LARGEST[dtype.name] = (err, f"{where} {what}")
    assert err <= bound, f"{where}: {what} rel err {err:.3e} > {bound:.0e}"
    return err


def _to64(a):
    if a is None:
        return None
    if isinstance(a, list):
        return [_to64(x) for x in a]
    return np.array(a, dtype=np.float64) if a.dtype.kind == "f" else np.array(a)


def _flat(g):
    return mlpgrad.pack(g.weights, g.biases)


def _n_params(Ws):
    return sum(np.shape(W)[0] * np.shape(W)[1] + np.shape(W)[1] for W in Ws)


# -- the reference on blocks of rows --------------------------------------------------------------------

REF_BLOCK_ELEMENTS = 2_000_000  # rows per block: this many entries of the reference's (rows, P) matrix


def _blocks(n, P):
    step = max(1, REF_BLOCK_ELEMENTS // max(P, 1))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)] or [slice(0, 0)]


def _rows(a, s):
    return None if a is None else a[s]


class BlockReference:
    """The reference's six functions on float64 copies of a problem, computed a block of rows at a time."""

    def __init__(self, Ws, bs, X, y, head, sample_weight=None):
        self.Ws, self.bs, self.X, self.y = _to64(Ws), _to64(bs), _to64(X), _to64(y)
        self.w = _to64(sample_weight)
        self.head = head
        self.n, self.P = self.X.shape[0], _n_params(Ws)
        self.blocks = _blocks(self.n, self.P)

    def _per_row(self, fn, s):
        return fn(self.Ws, self.bs, self.X[s], self.y[s], head=self.head)

    def norms(self, per_layer=False):
        return np.concatenate([reference.per_sample_grad_norms(self.Ws, self.bs, self.X[s], self.y[s],
                                                               head=self.head, per_layer=per_layer)
                               for s in self.blocks])

    def grads(self):
        return np.concatenate([self._per_row(reference.per_sample_grads, s) for s in self.blocks])

    def dot(self, V):
        V = np.asarray(V, dtype=np.float64)
        return np.concatenate([reference.grad_dot(self.Ws, self.bs, self.X[s], self.y[s], V, head=self.head)
                               for s in self.blocks])

    def gram(self, X2=None, y2=None):
        X2, y2 = (self.X, self.y) if X2 is None else (_to64(X2), _to64(y2))
        blocks2 = _blocks(X2.shape[0], self.P)
        return np.concatenate([np.concatenate([reference.grad_gram(self.Ws, self.bs, self.X[s], self.y[s],
                                                                   X2[t], y2[t], head=self.head)
                                               for t in blocks2], axis=1)
                               for s in self.blocks])

    def scale(self, reduction):
        """c_i: w_i, or w_i / sum w for "mean"."""
        w = np.ones(self.n) if self.w is None else self.w
        return w / w.sum() if reduction == "mean" else w

    def clipped(self, max_norm, reduction="sum"):
        """(loss, flat gradient (P,), norms) of clipped_grad, from blocks: c_i passed as the sample weights of a
        "sum" (the clip factors are per sample, so the clipped sum is a sum over blocks)."""
        c = self.scale(reduction)
        loss, flat, norms = 0.0, np.zeros(self.P), []
        for s in self.blocks:
            L, g, nrm = reference.clipped_grad(self.Ws, self.bs, self.X[s], self.y[s], head=self.head,
                                               max_norm=max_norm, reduction="sum", sample_weight=c[s])
            loss += L
            flat += _flat(g)
            norms.append(nrm)
        return loss, flat, np.concatenate(norms)

    def sumsq(self):
        flat = np.zeros(self.P)
        for s in self.blocks:
            flat += _flat(reference.sum_squared_grads(self.Ws, self.bs, self.X[s], self.y[s], head=self.head,
                                                      sample_weight=_rows(self.w, s)))
        return flat


# -- the case table ---------------------------------------------------------------------------------------
# (sizes, N, dtype, head, target kind, reduction, sample weights, X layout, W layout, y layout)
CASES = [
    ([1, 1],                        1, "float32", "sigmoid", "soft",   "mean", False, "C",    "C",     "C"),
    ([2, 3],                        5, "float64", "softmax", "labels", "sum",  True,  "F",    "mixed", "rev"),
    ([3, 1],                      100, "float64", "sigmoid", "labels", "sum",  True,  "rev",  "slice", "rows"),
    ([7, 2],                     1000, "float32", "softmax", "labels", "mean", True,  "C",    "F",     "C"),
    ([300, 7],                    100, "float32", "softmax", "soft",   "sum",  False, "rows", "slice", "F"),
    ([5, 300],                    257, "float64", "sigmoid", "soft",   "mean", False, "C",    "C",     "rows"),
    ([3, 15, 2],                    5, "float32", "sigmoid", "labels", "sum",  True,  "rev",  "C",     "rev"),
    ([16, 17, 16],                257, "float32", "softmax", "soft",   "mean", True,  "F",    "mixed", "C"),
    ([31, 33, 7],                  64, "float64", "softmax", "labels", "sum",  False, "C",    "F",     "rows"),
    ([300, 300, 1],                 5, "float64", "sigmoid", "labels", "mean", True,  "slice", "mixed", "C"),
    ([1, 300, 3],                1000, "float32", "softmax", "labels", "sum",  False, "C",    "slice", "C"),
    ([17, 16, 15, 3],               1, "float32", "sigmoid", "soft",   "sum",  False, "rows", "mixed", "F"),
    ([3, 7, 15, 2],               100, "float64", "softmax", "soft",   "mean", True,  "C",    "C",     "rev"),
    ([63, 65, 127, 10],           257, "float32", "softmax", "labels", "mean", False, "F",    "C",     "C"),
    ([2, 3, 5, 7, 11],            100, "float64", "sigmoid", "labels", "mean", True,  "F",    "slice", "rev"),
    ([15, 17, 31, 33, 4],         257, "float32", "sigmoid", "soft",   "sum",  True,  "C",    "mixed", "C"),
    ([7, 7, 7, 7, 7, 7],         1000, "float32", "softmax", "labels", "sum",  True,  "rows", "F",     "rows"),
    ([1, 2, 1, 2, 1, 2],            5, "float64", "sigmoid", "soft",   "sum",  False, "C",    "mixed", "C"),
    ([3, 16, 31, 63, 127, 2],      64, "float64", "softmax", "soft",   "mean", False, "rev",  "slice", "C"),
    ([300, 2, 300, 3],             65, "float32", "softmax", "soft",   "sum",  True,  "F",    "F",     "rev"),
    # the largest: full runs only
    ([33, 64, 10],               4096, "float32", "softmax", "labels", "mean", True,  "C",    "C",     "C"),
    ([129, 65, 33, 10],          4096, "float64", "sigmoid", "soft",   "sum",  False, "rows", "mixed", "C"),
    ([65, 300, 300, 300, 300, 7], 100, "float32", "softmax", "soft",   "mean", True,  "F",    "mixed", "F"),
    ([64, 127, 10],              2048, "float64", "softmax", "labels", "sum",  True,  "C",    "slice", "C"),
]

SLOW_ENTRIES = 3_000_000  # N * P above this: seconds in the reference


def _case_id(case):
    sizes, n, dtype, head, kind, red, sw, xl, wl, yl = case
    return (f"{'-'.join(map(str, sizes))}_N{n}_{dtype[-2:]}_{head}_{kind}_{red}{'_sw' if sw else ''}"
            f"_X{xl}_W{wl}_y{yl}")


def _is_slow(case):
    return case[1] * _n_params([np.empty((a, b)) for a, b in zip(case[0][:-1], case[0][1:])]) > SLOW_ENTRIES


def _params(cases):
    return [pytest.param(c, marks=pytest.mark.slow) if _is_slow(c) else c for c in cases]


def test_case_table_covers_the_matrix():
    assert {len(c[0]) - 1 for c in CASES} == {1, 2, 3, 4, 5}
    assert {1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 300} <= {d for c in CASES for d in c[0]}
    assert {1, 5, 64, 65, 100, 257, 1000, 4096} <= {c[1] for c in CASES}
    for column, values in ((2, {"float32", "float64"}), (3, {"sigmoid", "softmax"}), (4, {"labels", "soft"}),
                           (5, {"sum", "mean"}), (6, {True, False})):
        assert {c[column] for c in CASES} == values
        assert {c[column] for c in CASES if not _is_slow(c)} == values
    for dtype in ("float32", "float64"):
        for head in ("sigmoid", "softmax"):
            assert any(c[2] == dtype and c[3] == head for c in CASES if not _is_slow(c))


def _build_case(case, seed):
    sizes, n, dtype, head, kind, red, sw, xl, wl, yl = case
    Ws, bs, X, y = make_problem(sizes, n, head, kind, np.dtype(dtype), seed=seed)
    w = sample_weights(n, dtype, np.random.default_rng(seed + 1)) if sw else None
    Ws, bs = network_layout(Ws, bs, wl)
    return Ws, bs, layout(X, xl), layout(y, yl), w


def _clip_levels(norms):
    """max_norm values that clip none, some and all of the samples."""
    return (float(np.max(norms)) * 2 if norms.size else 1.0, float(np.median(norms)) if norms.size else 1.0,
            float(np.min(norms)) / 2 if norms.size and np.min(norms) > 0 else 1e-6)


@pytest.mark.parametrize("case", _params(CASES), ids=_case_id)
def test_native_matches_reference(case):
    sizes, n, dtype, head, kind, red, sw, xl, wl, yl = case
    dt = np.dtype(dtype)
    where = _case_id(case)
    Ws, bs, X, y, w = _build_case(case, seed=zlib.crc32(where.encode()) % 1000)
    ref = BlockReference(Ws, bs, X, y, head, w)
    P, L = ref.P, len(Ws)
    args = (Ws, bs, X, y)

    norms_ref = ref.norms()
    norms = mlpgrad.per_sample_grad_norms(*args, head=head)
    assert norms.dtype == dt and norms.shape == (n,)
    _check("norms", norms, norms_ref, dt, where)
    layer_norms_ref = ref.norms(per_layer=True)
    layer_norms = mlpgrad.per_sample_grad_norms(*args, head=head, per_layer=True)
    assert layer_norms.dtype == dt and layer_norms.shape == (n, L)
    _check("layer norms", layer_norms, layer_norms_ref, dt, where)

    kw = dict(head=head, reduction=red, sample_weight=w)
    for max_norm in _clip_levels(norms_ref):
        L_ref, g_ref, nr = ref.clipped(max_norm, red)
        loss, g, got_norms = mlpgrad.clipped_grad(*args, max_norm=max_norm, **kw)
        assert isinstance(loss, float) and isinstance(g, mlpgrad.Gradients) and g.input is None
        assert all(a.dtype == dt for a in g.weights + g.biases)
        assert [a.shape for a in g.weights] == [np.shape(W) for W in Ws]
        _check("clipped loss", loss, L_ref, dt, where)
        _check(f"clipped_grad({max_norm:.3g})", _flat(g), g_ref, dt, where)
        _check("clipped norms", got_norms, nr, dt, where)
    limits = [float(np.median(layer_norms_ref[:, l])) if n else 1.0 for l in range(L)]
    L_ref, g_ref, nr = ref.clipped(limits, red)
    loss, g, got_norms = mlpgrad.clipped_grad(*args, max_norm=limits, **kw)
    assert got_norms.shape == (n, L)
    _check("clipped loss per layer", loss, L_ref, dt, where)
    _check("clipped_grad per layer", _flat(g), g_ref, dt, where)
    _check("clipped norms per layer", got_norms, nr, dt, where)

    if n * P <= 4 * REF_BLOCK_ELEMENTS:
        G = mlpgrad.per_sample_grads(*args, head=head)
        assert G.dtype == dt and G.shape == (n, P) and G.flags.c_contiguous
        _check("per_sample_grads", G, ref.grads(), dt, where)

    rng = np.random.default_rng(7)
    V = rng.standard_normal((P, 3)).astype(dt)
    D = mlpgrad.grad_dot(*args, V, head=head)
    assert D.dtype == dt and D.shape == (n, 3)
    _check("grad_dot", D, ref.dot(V), dt, where)
    d1 = mlpgrad.grad_dot(*args, V[:, 1], head=head)
    assert d1.dtype == dt and d1.shape == (n,)
    _check("grad_dot 1-D", d1, ref.dot(V[:, 1]), dt, where)

    m = min(n, 300)  # the Gram matrix of the first rows, and against a second set
    K = mlpgrad.grad_gram(Ws, bs, X[:m], y[:m], head=head)
    assert K.dtype == dt and K.shape == (m, m)
    sub = BlockReference(Ws, bs, X[:m], y[:m], head)
    _check("grad_gram", K, sub.gram(), dt, where)
    X2, y2 = X[m // 2:][:7], y[m // 2:][:7]
    K2 = mlpgrad.grad_gram(Ws, bs, X[:m], y[:m], X2, y2, head=head)
    assert K2.shape == (m, X2.shape[0])
    _check("grad_gram X2", K2, sub.gram(X2, y2), dt, where)

    s = mlpgrad.sum_squared_grads(*args, head=head, sample_weight=w)
    assert isinstance(s, mlpgrad.Gradients) and s.input is None and all(a.dtype == dt for a in s.weights + s.biases)
    _check("sum_squared_grads", _flat(s), ref.sumsq(), dt, where)


def test_grad_gram_of_a_large_batch_against_its_blocks():
    """N = N2 = 1024 (past any blocking of K): entries of the full native K against reference blocks."""
    sizes, n = [20, 33, 10], 1024
    Ws, bs, X, y = make_problem(sizes, n, "softmax", "labels", np.float32, seed=4)
    K = mlpgrad.grad_gram(Ws, bs, X, y, head="softmax")
    assert K.shape == (n, n)
    np.testing.assert_array_equal(K, K.T)  # g_i . g_j computed once or symmetrically
    for rows, cols in ((slice(0, 64), slice(0, 1024)), (slice(900, 1024), slice(500, 700))):
        want = BlockReference(Ws, bs, X[rows], y[rows], "softmax").gram(X[cols], y[cols])
        _check("grad_gram block", K[rows, cols], want, np.float32, f"gram 1024 [{rows}, {cols}]")


# -- the same bits for any number of threads, and on every SIMD level -----------------------------------

def _all_results(Ws, bs, X, y, head, w, V, X2, y2, **extra):
    """Every function's results on one problem, as a flat list of arrays and floats."""
    L = len(Ws)
    out = [mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head=head, **extra),
           mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head=head, per_layer=True, **extra)]
    for max_norm, red in ((0.05, "sum"), ([0.05] * L, "mean")):
        loss, g, norms = mlpgrad.clipped_grad(Ws, bs, X, y, head=head, max_norm=max_norm, reduction=red,
                                              sample_weight=w, **extra)
        out += [loss, _flat(g), norms]
    out += [mlpgrad.per_sample_grads(Ws, bs, X, y, head=head, **extra),
            mlpgrad.grad_dot(Ws, bs, X, y, V, head=head, **extra),
            mlpgrad.grad_dot(Ws, bs, X, y, V[:, 0], head=head, **extra),
            mlpgrad.grad_gram(Ws, bs, X, y, head=head, **extra),
            mlpgrad.grad_gram(Ws, bs, X, y, X2, y2, head=head, **extra),
            _flat(mlpgrad.sum_squared_grads(Ws, bs, X, y, head=head, sample_weight=w, **extra))]
    return out


def _same_bits(got, want, where):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        if isinstance(b, float):
            assert isinstance(a, float) and a == b, f"{where}: result {i}: {a!r} != {b!r}"
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: result {i}"
            np.testing.assert_array_equal(a, b, err_msg=f"{where}: result {i}")


def _threads_problem(dtype, head, kind, sizes=(33, 65, 17, 10), n=700):
    Ws, bs, X, y = make_problem(list(sizes), n, head, kind, np.dtype(dtype), seed=5)
    w = sample_weights(n, dtype, np.random.default_rng(6))
    V = np.random.default_rng(8).standard_normal((_n_params(Ws), 4)).astype(dtype)
    X2, y2 = X[::7], y[::7]
    return Ws, bs, X, y, head, w, V, X2, y2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head, kind", [("softmax", "labels"), ("sigmoid", "soft")])
def test_n_threads_give_the_same_bits(dtype, head, kind):
    problem = _threads_problem(dtype, head, kind)
    want = _all_results(*problem)
    for t in (1, 2, 3, 8):
        _same_bits(_all_results(*problem, n_threads=t), want, f"n_threads={t} {head} {np.dtype(dtype)}")


@pytest.mark.parametrize("simd", mlpgrad.build_info()["simd_available"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_simd_level_matches_reference(simd, dtype):
    """Each instruction set's engine against the reference (CI runs the other suites per level through
    MLPGRAD_SIMD; this one sets it itself)."""
    previous = mlpgrad.build_info()["simd"]
    mlpgrad._native.set_simd(simd)
    try:
        for case in (([17, 33, 5], 70, "softmax", "soft", "mean", True),
                     ([9, 16, 31, 1], 33, "sigmoid", "labels", "sum", False)):
            sizes, n, head, kind, red, sw = case
            where = f"{simd} {np.dtype(dtype).name} {sizes} N{n} {head}"
            Ws, bs, X, y = make_problem(sizes, n, head, kind, np.dtype(dtype), seed=n)
            w = sample_weights(n, dtype, np.random.default_rng(n)) if sw else None
            ref = BlockReference(Ws, bs, X, y, head, w)
            _check("norms", mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head=head), ref.norms(), dtype, where)
            _check("layer norms", mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head=head, per_layer=True),
                   ref.norms(True), dtype, where)
            mn = float(np.median(ref.norms()))
            _, g, _ = mlpgrad.clipped_grad(Ws, bs, X, y, head=head, max_norm=mn, reduction=red, sample_weight=w)
            _check("clipped_grad", _flat(g), ref.clipped(mn, red)[1], dtype, where)
            _check("per_sample_grads", mlpgrad.per_sample_grads(Ws, bs, X, y, head=head), ref.grads(), dtype, where)
            V = np.random.default_rng(1).standard_normal((ref.P, 2)).astype(dtype)
            _check("grad_dot", mlpgrad.grad_dot(Ws, bs, X, y, V, head=head), ref.dot(V), dtype, where)
            _check("grad_gram", mlpgrad.grad_gram(Ws, bs, X, y, X[:9], y[:9], head=head), ref.gram(X[:9], y[:9]),
                   dtype, where)
            _check("sum_squared_grads", _flat(mlpgrad.sum_squared_grads(Ws, bs, X, y, head=head, sample_weight=w)),
                   ref.sumsq(), dtype, where)
    finally:
        mlpgrad._native.set_simd(previous)


@pytest.mark.parametrize("schedule", ["chunked", "layered", "narrow"])
def test_forced_schedule_gives_the_same_bits(schedule):
    """The per-sample engine has its own schedule: forcing loss_and_grad's changes nothing here."""
    from _problems import forced_schedule

    problem = _threads_problem(np.float32, "softmax", "labels", sizes=(10, 16, 3), n=300)
    want = _all_results(*problem)
    with forced_schedule(schedule):
        _same_bits(_all_results(*problem), want, f"schedule {schedule}")


# -- per_sample_grads' out= ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_is_written_and_returned(dtype):
    Ws, bs, X, y = make_problem([6, 9, 3], 40, "softmax", "soft", np.dtype(dtype), seed=2)
    P = _n_params(Ws)
    want = mlpgrad.per_sample_grads(Ws, bs, X, y, head="softmax")
    out = np.full((40, P), np.nan, dtype=dtype)
    got = mlpgrad.per_sample_grads(Ws, bs, X, y, head="softmax", out=out)
    assert got is out
    np.testing.assert_array_equal(out, want)
    # a second call into the same out (stale values everywhere) gives the same bits
    got = mlpgrad.per_sample_grads(Ws, bs, X, y, head="softmax", out=out, n_threads=1)
    assert got is out
    np.testing.assert_array_equal(out, want)


def test_bad_out_raises():
    Ws, bs, X, y = make_problem([6, 9, 3], 40, "softmax", "labels", np.float64, seed=2)
    P = _n_params(Ws)
    readonly = np.zeros((40, P))
    readonly.flags.writeable = False
    for out, exc in [([[0.0] * P] * 40, TypeError), (np.zeros((40, P), dtype=np.float32), TypeError),
                     (np.zeros((40, P + 1)), ValueError), (np.zeros((39, P)), ValueError),
                     (np.zeros(40 * P), ValueError), (np.zeros((40, P), order="F"), ValueError),
                     (np.zeros((40, 2 * P))[:, ::2], ValueError), (readonly, ValueError)]:
        before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
        with pytest.raises(exc, match=r"^out must"):
            mlpgrad.per_sample_grads(Ws, bs, X, y, head="softmax", out=out)
        if before is not None:
            np.testing.assert_array_equal(out, before)  # nothing written before the error


# -- the Objective's methods ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head, kind, reduction, weighted", [("softmax", "labels", "mean", True),
                                                             ("sigmoid", "soft", "sum", False)])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_objective_methods_equal_the_functions(dtype, head, kind, reduction, weighted, alpha):
    sizes, n = [7, 12, 5, 3], 50
    Ws, bs, X, y = make_problem(sizes, n, head, kind, np.dtype(dtype), seed=9)
    w = sample_weights(n, dtype, np.random.default_rng(10)) if weighted else None
    obj = mlpgrad.Objective(sizes, X, y, head=head, reduction=reduction, sample_weight=w, alpha=alpha, dtype=dtype)
    theta = mlpgrad.pack(Ws, bs)
    Wt, bt = obj.unpack(theta)
    P, nW = theta.size, sum(W.size for W in Ws)
    where = f"Objective {head} {np.dtype(dtype).name} alpha={alpha}"
    args = (Wt, bt, X, y)

    np.testing.assert_array_equal(obj.per_sample_grad_norms(theta),
                                  mlpgrad.per_sample_grad_norms(*args, head=head), err_msg=where)
    np.testing.assert_array_equal(obj.per_sample_grad_norms(theta, per_layer=True),
                                  mlpgrad.per_sample_grad_norms(*args, head=head, per_layer=True), err_msg=where)
    G = obj.per_sample_grads(theta)
    np.testing.assert_array_equal(G, mlpgrad.per_sample_grads(*args, head=head), err_msg=where)
    out = np.empty((n, P), dtype=dtype)
    assert obj.per_sample_grads(theta, out=out) is out
    np.testing.assert_array_equal(out, G)
    V = np.random.default_rng(11).standard_normal((P, 2))
    np.testing.assert_array_equal(obj.grad_dot(theta, V), mlpgrad.grad_dot(*args, V, head=head), err_msg=where)
    np.testing.assert_array_equal(obj.grad_gram(theta), mlpgrad.grad_gram(*args, head=head), err_msg=where)
    np.testing.assert_array_equal(obj.grad_gram(theta, X[:5], y[:5]),
                                  mlpgrad.grad_gram(*args, X[:5], y[:5], head=head), err_msg=where)
    s = obj.sum_squared_grads(theta)
    assert s.shape == (P,) and s.dtype == dtype
    np.testing.assert_array_equal(s, _flat(mlpgrad.sum_squared_grads(*args, head=head, sample_weight=w)),
                                  err_msg=where)

    # clipped_grad: the loss and the gradient with the penalty alpha / 2 ||W||^2 added, unclipped
    penalty_grad = np.zeros(P, dtype=np.float64)
    penalty_grad[:nW] = alpha * theta[:nW].astype(np.float64)
    penalty = 0.5 * alpha * float(np.sum(theta[:nW].astype(np.float64) ** 2))
    for max_norm in (0.05, [0.05] * (len(sizes) - 1), np.inf):
        loss, grad, norms = obj.clipped_grad(theta, max_norm)
        L_f, g_f, n_f = mlpgrad.clipped_grad(*args, head=head, max_norm=max_norm, reduction=reduction,
                                             sample_weight=w)
        assert grad.shape == (P,) and grad.dtype == dtype
        np.testing.assert_array_equal(norms, n_f, err_msg=where)
        _check("Objective.clipped_grad loss", loss, L_f + penalty, dtype, where)
        _check("Objective.clipped_grad", grad, _flat(g_f) + penalty_grad, dtype, where)
        if alpha == 0:
            assert loss == L_f, where
            np.testing.assert_array_equal(grad, _flat(g_f), err_msg=where)
    # with no clipping it is loss_and_grad
    loss, grad, _ = obj.clipped_grad(theta, np.inf)
    L0, g0 = obj.loss_and_grad(theta)
    _check("Objective.clipped_grad(inf) vs loss_and_grad", grad, g0, dtype, where)
    _check("Objective.clipped_grad(inf) loss", loss, L0, dtype, where)


def test_objective_bad_arguments():
    sizes = [3, 5, 2]
    Ws, bs, X, y = make_problem(sizes, 4, "softmax", "labels", np.float64, seed=0)
    obj = mlpgrad.Objective(sizes, X, y, head="softmax")
    theta = mlpgrad.pack(Ws, bs)
    P = theta.size
    for call, exc, match in [
            (lambda: obj.clipped_grad(theta, 0.0), ValueError, r"^max_norm must be a real number > 0"),
            (lambda: obj.clipped_grad(theta, [1.0]), ValueError, r"^max_norm must be .* got a sequence of length 1"),
            (lambda: obj.grad_dot(theta, np.ones(P + 1)), ValueError, r"^V must have shape \(32,\)"),
            (lambda: obj.grad_dot(theta, np.ones(P, dtype=complex)), TypeError, r"^V must be a real array"),
            (lambda: obj.grad_gram(theta, X), ValueError, r"^y2 must be given with X2"),
            (lambda: obj.grad_gram(theta, X, np.array([0, 1, 2, 0])), ValueError, r"^y2 labels must lie in"),
            (lambda: obj.per_sample_grads(theta, out=np.empty((4, P), dtype=np.float32)), TypeError, r"^out must"),
            (lambda: obj.per_sample_grad_norms(theta, per_layer="yes"), TypeError, r"^per_layer must be a bool"),
            (lambda: obj.sum_squared_grads(theta[:-1]), ValueError, r"^theta must have shape \(32,\)")]:
        with pytest.raises(exc, match=match):
            call()


# -- the caller's arrays ---------------------------------------------------------------------------------

def _snapshot(arrays):
    return [(a.shape, a.strides, a.dtype, a.tobytes()) for a in arrays]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_not_modified(dtype):
    sizes, n = [5, 8, 3], 20
    Ws, bs, X, y = make_problem(sizes, n, "softmax", "soft", np.dtype(dtype), seed=12)
    Ws, bs = network_layout(Ws, bs, "mixed")
    X, y = layout(X, "F"), layout(y, "rows")
    w = sample_weights(n, dtype, np.random.default_rng(13))
    P = _n_params(Ws)
    V = np.random.default_rng(14).standard_normal((P, 2))  # float64: converted for float32
    Vi = np.arange(P) % 5 - 2
    X2, y2 = X[::3].astype(np.float64), y[::3]
    arrays = Ws + bs + [X, y, w, V, Vi, X2, y2]
    before = _snapshot(arrays)
    _all_results(Ws, bs, X, y, "softmax", w, V, X2, y2)
    mlpgrad.grad_dot(Ws, bs, X, y, Vi, head="softmax")
    mlpgrad.grad_dot(Ws, bs, X, y, V.astype(dtype), head="softmax")
    assert _snapshot(arrays) == before


# -- special values: N = 0, zero gradients, no clipping, many vectors -------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head, y0", [("softmax", np.zeros(0, dtype=np.int64)), ("sigmoid", np.zeros((0, 2)))])
def test_empty_batch_as_the_reference(dtype, head, y0):
    """N = 0: empty results of the right shapes and dtype, zero sums and loss 0.0, as the reference; "mean" is
    refused (no total weight), as by loss_and_grad."""
    Ws, bs = make_network([3, 5, 2], dtype)
    X = np.zeros((0, 3), dtype=dtype)
    P = _n_params(Ws)
    Xb, yb = np.ones((2, 3)), (np.array([0, 1]) if head == "softmax" else np.full((2, 2), 0.5))
    for name, call in [
            ("norms", lambda m: m.per_sample_grad_norms(Ws, bs, X, y0, head=head)),
            ("layer norms", lambda m: m.per_sample_grad_norms(Ws, bs, X, y0, head=head, per_layer=True)),
            ("grads", lambda m: m.per_sample_grads(Ws, bs, X, y0, head=head)),
            ("dot", lambda m: m.grad_dot(Ws, bs, X, y0, np.ones(P), head=head)),
            ("dot 2-D", lambda m: m.grad_dot(Ws, bs, X, y0, np.ones((P, 3)), head=head)),
            ("gram", lambda m: m.grad_gram(Ws, bs, X, y0, head=head)),
            ("gram X2", lambda m: m.grad_gram(Ws, bs, X, y0, Xb, yb, head=head)),
            ("gram empty X2", lambda m: m.grad_gram(Ws, bs, Xb, yb, X, y0, head=head)),
            ("ssg", lambda m: _flat(m.sum_squared_grads(Ws, bs, X, y0, head=head))),
            ("clipped", lambda m: _flat(m.clipped_grad(Ws, bs, X, y0, head=head, max_norm=1.0)[1])),
            ("clipped norms", lambda m: m.clipped_grad(Ws, bs, X, y0, head=head, max_norm=[1.0, 2.0])[2])]:
        got, want = call(mlpgrad), call(reference)
        assert got.shape == want.shape and got.dtype == want.dtype == dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    out = np.empty((0, P), dtype=dtype)
    assert mlpgrad.per_sample_grads(Ws, bs, X, y0, head=head, out=out) is out
    assert mlpgrad.clipped_grad(Ws, bs, X, y0, head=head, max_norm=1.0)[0] == 0.0
    with pytest.raises(ValueError, match=r"reduction='mean' needs a positive total weight: X has no rows"):
        mlpgrad.clipped_grad(Ws, bs, X, y0, head=head, max_norm=1.0, reduction="mean")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_gradients_get_factor_one(dtype):
    """A zero last layer gives logits 0 and p = 1/2 exactly: a sigmoid target of 1/2 makes a sample's gradient
    exactly zero, and every hidden layer's part is zero for every sample. Clipping must leave them finite."""
    Ws, bs = make_network([3, 4, 2], dtype, np.random.default_rng(5))
    Ws[-1][...] = 0
    bs[-1][...] = 0
    X = np.random.default_rng(6).standard_normal((4, 3)).astype(dtype)
    y = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.0, 0.25]], dtype=dtype)
    norms = mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head="sigmoid")
    assert norms[0] == 0 and norms[2] == 0
    for max_norm in (float(norms[3]) / 2, [1e-3, float(norms[3]) / 2]):
        _, g, _ = mlpgrad.clipped_grad(Ws, bs, X, y, head="sigmoid", max_norm=max_norm)
        _, g_ref, _ = reference.clipped_grad(_to64(Ws), _to64(bs), _to64(X), _to64(y), head="sigmoid",
                                             max_norm=max_norm)
        assert all(np.all(np.isfinite(a)) for a in g.weights + g.biases)
        assert not np.any(g.weights[0]) and not np.any(g.biases[0])
        _check("clipped_grad with zero norms", _flat(g), _flat(g_ref), dtype, f"zero norms {max_norm}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_no_clipping_is_loss_and_grad(dtype, reduction):
    Ws, bs, X, y = make_problem([9, 20, 4], 300, "softmax", "soft", np.dtype(dtype), seed=15)
    w = sample_weights(300, dtype, np.random.default_rng(16))
    L0, g0 = mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", reduction=reduction, sample_weight=w)
    for max_norm in (np.inf, [np.inf, np.inf], 1e30):
        loss, g, _ = mlpgrad.clipped_grad(Ws, bs, X, y, head="softmax", max_norm=max_norm, reduction=reduction,
                                          sample_weight=w)
        where = f"max_norm {max_norm} {reduction} {np.dtype(dtype).name}"
        _check("clipped loss vs loss_and_grad", loss, L0, dtype, where)
        _check("clipped_grad(no clip) vs loss_and_grad", _flat(g), _flat(g0), dtype, where)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_dot_with_many_vectors_and_converted_V(dtype):
    """More vectors than one native pass takes (the columns go in blocks), and V of other dtypes (converted)."""
    Ws, bs, X, y = make_problem([6, 11, 3], 90, "softmax", "labels", np.dtype(dtype), seed=17)
    ref = BlockReference(Ws, bs, X, y, "softmax")
    rng = np.random.default_rng(18)
    for V in (rng.standard_normal((ref.P, 130)), np.asfortranarray(rng.standard_normal((ref.P, 65))),
              rng.standard_normal((ref.P, 200))[:, ::3], rng.integers(-4, 5, (ref.P, 2)).astype(np.int16),
              rng.standard_normal(ref.P).astype(np.float32)):
        Vc = V.astype(dtype)  # what the native call computes with
        D = mlpgrad.grad_dot(Ws, bs, X, y, V, head="softmax")
        assert D.dtype == dtype and D.shape == (90,) + V.shape[1:]
        _check("grad_dot", D, ref.dot(Vc), dtype, f"V {V.dtype}{V.shape}")


# -- bad arguments: the reference's rules and messages ----------------------------------------------------

def _bad_calls():
    Ws, bs, X, y = make_problem([3, 5, 2], 4, "softmax", "labels", np.float64, seed=0)
    P = _n_params(Ws)
    a = (Ws, bs, X, y)
    return [
        ("max_norm 0", "max_norm", lambda m: m.clipped_grad(*a, head="softmax", max_norm=0.0)),
        ("max_norm nan", "max_norm", lambda m: m.clipped_grad(*a, head="softmax", max_norm=np.nan)),
        ("max_norm bool", "max_norm", lambda m: m.clipped_grad(*a, head="softmax", max_norm=True)),
        ("max_norm str", "max_norm", lambda m: m.clipped_grad(*a, head="softmax", max_norm="1")),
        ("max_norm length", "max_norm", lambda m: m.clipped_grad(*a, head="softmax", max_norm=[1.0, 2, 3])),
        ("max_norm negative", "max_norm", lambda m: m.clipped_grad(*a, head="softmax", max_norm=[1.0, -2.0])),
        ("V complex", "V", lambda m: m.grad_dot(*a, np.ones(P, dtype=complex), head="softmax")),
        ("V bool", "V", lambda m: m.grad_dot(*a, np.ones(P, dtype=bool), head="softmax")),
        ("V object", "V", lambda m: m.grad_dot(*a, np.ones(P, dtype=object), head="softmax")),
        ("V str", "V", lambda m: m.grad_dot(*a, "V", head="softmax")),
        ("V shape", "V", lambda m: m.grad_dot(*a, np.ones(P + 1), head="softmax")),
        ("V transposed", "V", lambda m: m.grad_dot(*a, np.ones((2, P)), head="softmax")),
        ("V no columns", "V", lambda m: m.grad_dot(*a, np.ones((P, 0)), head="softmax")),
        ("V nan", "V", lambda m: m.grad_dot(*a, np.full(P, np.nan), head="softmax")),
        ("X2 alone", "y2", lambda m: m.grad_gram(*a, X, head="softmax")),
        ("y2 alone", "X2", lambda m: m.grad_gram(*a, y2=y, head="softmax")),
        ("X2 columns", "X2", lambda m: m.grad_gram(*a, np.ones((3, 4)), np.zeros(3, dtype=int),
                                                   head="softmax")),
        ("y2 labels", "y2", lambda m: m.grad_gram(*a, X, np.array([0, 1, 7, 0]), head="softmax")),
        ("y2 rows", "y2", lambda m: m.grad_gram(*a, X, y[:2], head="softmax")),
        ("per_layer", "per_layer", lambda m: m.per_sample_grad_norms(*a, head="softmax", per_layer=1)),
        ("out dtype", "out", lambda m: m.per_sample_grads(*a, head="softmax",
                                                          out=np.empty((4, P), dtype=np.float32))),
        ("out shape", "out", lambda m: m.per_sample_grads(*a, head="softmax", out=np.empty((4, P + 1)))),
        ("head", "head", lambda m: m.grad_gram(*a, head="relu")),
        ("sample_weight", "sample_weight", lambda m: m.sum_squared_grads(*a, head="softmax",
                                                                         sample_weight=-np.ones(4))),
        ("reduction", "reduction", lambda m: m.clipped_grad(*a, head="softmax", max_norm=1.0, reduction="avg")),
    ]


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("name, argument, call", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_as_the_reference(name, argument, call):
    """The same exception and message as the reference, naming the argument first."""
    with pytest.raises((TypeError, ValueError)) as want:
        call(reference)
    with pytest.raises(want.type) as got:
        call(mlpgrad)
    assert str(got.value) == str(want.value)
    assert str(got.value).startswith(argument + " "), str(got.value)


# -- identities between the native functions --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("per_layer", [False, True])
def test_clipped_grad_is_loss_and_grad_with_clip_factors_as_weights(dtype, reduction, per_layer):
    """Clipping is a reweighting of the samples' losses: clipped_grad equals loss_and_grad with sample weights
    w_i f_i (whole clipping; per layer, each layer's gradient with its own factors), the native code on both sides."""
    Ws, bs, X, y = make_problem([12, 30, 20, 4], 400, "softmax", "labels", np.dtype(dtype), seed=31)
    w = sample_weights(400, dtype, np.random.default_rng(32))
    L = len(Ws)
    layer_norms = mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head="softmax", per_layer=True).astype(np.float64)
    norms = np.sqrt((layer_norms ** 2).sum(axis=1))
    clip = [float(np.median(layer_norms[:, l])) for l in range(L)] if per_layer else float(np.median(norms))
    loss, g, got_norms = mlpgrad.clipped_grad(Ws, bs, X, y, head="softmax", max_norm=clip, reduction=reduction,
                                              sample_weight=w)
    where = f"{reduction} per_layer={per_layer} {np.dtype(dtype).name}"
    _check("norms", got_norms, layer_norms if per_layer else norms, dtype, where)
    L0 = mlpgrad.loss(Ws, bs, X, y, head="softmax", reduction=reduction, sample_weight=w)
    _check("unclipped loss", loss, L0, dtype, where)
    total = float(np.sum(w, dtype=np.float64))
    for l in range(L if per_layer else 1):
        f = np.minimum(1.0, (clip[l] / layer_norms[:, l]) if per_layer else clip / norms)
        # "mean" divides by the total of the original weights, not of w f: the factors enter as a "sum"
        w_f = (w * f / (total if reduction == "mean" else 1.0)).astype(dtype)
        _, g_w = mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", sample_weight=w_f)
        layers = [l] if per_layer else range(L)
        for m in layers:
            _check(f"layer {m} weights", g.weights[m], g_w.weights[m], dtype, where)
            _check(f"layer {m} biases", g.biases[m], g_w.biases[m], dtype, where)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head,kind", [("softmax", "labels"), ("sigmoid", "soft")])
def test_per_sample_grads_sum_to_the_gradient(dtype, head, kind):
    """sum_i c_i g_i = the gradient, and sum_i w_i g_i^2 = sum_squared_grads, from the native rows."""
    Ws, bs, X, y = make_problem([7, 25, 9, 3], 300, head, kind, np.dtype(dtype), seed=33)
    w = sample_weights(300, dtype, np.random.default_rng(34))
    G = mlpgrad.per_sample_grads(Ws, bs, X, y, head=head).astype(np.float64)
    _, g = mlpgrad.loss_and_grad(Ws, bs, X, y, head=head, reduction="mean", sample_weight=w)
    c = w.astype(np.float64) / np.sum(w, dtype=np.float64)
    where = f"{head} {np.dtype(dtype).name}"
    _check("sum_i c_i g_i vs loss_and_grad", c @ G, _flat(g), dtype, where)
    sq = mlpgrad.sum_squared_grads(Ws, bs, X, y, head=head, sample_weight=w)
    _check("w @ G**2 vs sum_squared_grads", w.astype(np.float64) @ (G * G), _flat(sq), dtype, where)
    V = np.random.default_rng(35).standard_normal((G.shape[1], 3))
    _check("G @ V vs grad_dot", G @ V, mlpgrad.grad_dot(Ws, bs, X, y, V, head=head), dtype, where)
    _check("G G^T vs grad_gram", G @ G.T, mlpgrad.grad_gram(Ws, bs, X, y, head=head), dtype, where)
