"""Sparse X (issue 15, part 1): a scipy.sparse X gives the results of the same X dense, for every function.

A sparse X of any format (matrix or array) is checked and converted once to a canonical CSR matrix
(``_checks.check_X``: sorted indices, duplicates summed, int64 indices, values of the parameters' dtype; the
caller's matrix left as it is), which the native core takes as (values, indices, indptr, n_cols) and whose first
layer it computes on the nonzeros only. Each result on a sparse X is compared with the same call on
``X.toarray()``, per result array, in the max-norm relative error of ``_problems.rel_err`` (absolute when the dense
result is exactly zero): <= ``_bounds.tol(dtype)``, 1e-12 in float64 and 1e-5 in float32 (both runs in the same
dtype, on the same values: only the order of the first layer's sums differs). The largest error per dtype is
printed after the run (tests/_report.py).

Every function: forward, loss, loss_and_grad (dL/dX dense), the per-sample functions (norms whole and per layer,
clipped_grad whole and per layer, per_sample_grads, grad_dot with one and several vectors, grad_gram on X and with
a second set X2 sparse or dense, X sparse or dense, sum_squared_grads), the curvature functions (hvp, ggn_vp,
ggn_diag) and the Objective's methods and operators; the three heads, both reductions, sample weights, depth 1
(no hidden layer), 2 and 3. Shapes: d_0 from 1 to 3000, densities 0 to 1, empty rows, an all-zero X, N = 0, 1 and
the engine's chunk boundaries (95, 96, 300, 2000), and the boundaries of the slabs in which the per-sample,
curvature and Gram passes densify a sparse X. Then: every scipy.sparse format and the sparse arrays, unsorted
indices and duplicates, int32 / int64 indices and values of the other byte order all give the bits of the
canonical CSR; the caller's matrix is bitwise unchanged; the reference on a sparse X equals the reference on the
dense one; 1, 2, 3 and 8 threads give the same bits; every forced schedule and SIMD level agrees with dense; an
Objective keeps a sparse X it converted alive; NaN in a sparse X is not screened (as in a dense X); dense input
never imports scipy. The long parametrizations are marked slow.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import mlpgrad  # noqa: E402
from mlpgrad import reference  # noqa: E402
from mlpgrad._checks import check_X  # noqa: E402
import _report  # noqa: E402
from _bounds import tol  # noqa: E402
from _problems import forced_schedule, make_network, make_targets, rel_err  # noqa: E402

LARGEST = {}  # dtype name -> (error, where)


@_report.section("sparse X vs the same X dense: largest max-norm relative error")
def _largest():
    return [f"  {name}: {err:.3e} <= {tol(np.dtype(name)):.0e} at {where}"
            for name, (err, where) in sorted(LARGEST.items())]


FORMATS = ("csr", "csc", "coo", "lil", "dok", "bsr", "dia")
F32, F64 = np.float32, np.float64


# -- problems ----------------------------------------------------------------------------------------------------

def sparse_X(n, d0, density, dtype=F64, seed=0, empty_rows=0.0):
    """(CSR X, the same X dense): N(0, 1) values kept with probability ``density``, a share ``empty_rows`` of the
    rows all zero."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n, d0)) * (rng.random((n, d0)) < density)
    D[rng.random(n) < empty_rows] = 0.0
    D = D.astype(dtype)
    return sp.csr_matrix(D), D


HIDDEN = {1: [], 2: [6], 3: [7, 5]}  # depth -> hidden widths
K = {"softmax": 3, "sigmoid": 2, "identity": 2}


class Problem:
    """A network, a sparse X and its dense twin, targets, sample weights, V (P, 3) and a second set X2, y2."""

    def __init__(self, n, d0, density, head="softmax", depth=2, dtype=F64, seed=0, hidden=None, empty_rows=0.1,
                 n2=7):
        rng = np.random.default_rng(seed + 1)
        self.dtype, self.head = np.dtype(dtype), head
        self.sizes = [d0] + (HIDDEN[depth] if hidden is None else list(hidden)) + [K[head]]
        self.Ws, self.bs = make_network(self.sizes, dtype, rng)
        self.X, self.D = sparse_X(n, d0, density, dtype, seed, empty_rows)
        self.y = make_targets(head, "labels" if head == "softmax" else "soft", n, K[head], dtype, rng)
        self.w = rng.uniform(0.0, 2.0, n).astype(dtype)
        self.P = sum(W.size + b.size for W, b in zip(self.Ws, self.bs))
        self.V = rng.standard_normal((self.P, 3)).astype(dtype)
        self.X2, self.D2 = sparse_X(n2, d0, density, dtype, seed + 2)
        self.y2 = make_targets(head, "labels" if head == "softmax" else "soft", n2, K[head], dtype, rng)
        self.where = f"{self.dtype.name} {self.sizes} N{n} density {density} {head}"

    @property
    def theta(self):
        return mlpgrad.pack(self.Ws, self.bs)


def _flat(g):
    return mlpgrad.pack(g.weights, g.biases)


def function_results(mod, p, X, X2=None, reduction="mean", heavy=True, **extra):
    """Every function of ``mod`` (mlpgrad or mlpgrad.reference) on problem p with X (sparse or dense): a dict of
    name -> result array. X2: grad_gram's second set (None: not called). heavy=False leaves out the (N, P) rows and
    the (N, N) Gram matrix (large N)."""
    Ws, bs, y, w, head, V = p.Ws, p.bs, p.y, p.w, p.head, p.V
    L = len(Ws)
    r = {"forward": mod.forward(Ws, bs, X, head=head, **extra),
         "loss": np.array(mod.loss(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=w, **extra))}
    loss, g = mod.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=w, input_grad=True,
                                **extra)
    assert type(g.input) is np.ndarray and g.input.shape == X.shape and g.input.dtype == p.dtype
    r.update({"loss_and_grad loss": np.array(loss), "loss_and_grad grad": _flat(g), "dX": g.input})
    r["norms"] = mod.per_sample_grad_norms(Ws, bs, X, y, head=head, **extra)
    r["layer norms"] = mod.per_sample_grad_norms(Ws, bs, X, y, head=head, per_layer=True, **extra)
    for name, max_norm in (("clipped", 0.5), ("clipped per layer", [0.5] * L)):
        loss, g, norms = mod.clipped_grad(Ws, bs, X, y, head=head, max_norm=max_norm, reduction=reduction,
                                          sample_weight=w, **extra)
        r.update({f"{name} loss": np.array(loss), f"{name} grad": _flat(g), f"{name} norms": norms})
    r["grad_dot"] = mod.grad_dot(Ws, bs, X, y, V[:, 0], head=head, **extra)
    r["grad_dot m"] = mod.grad_dot(Ws, bs, X, y, V, head=head, **extra)
    r["sum_squared_grads"] = _flat(mod.sum_squared_grads(Ws, bs, X, y, head=head, sample_weight=w, **extra))
    for op in ("hvp", "ggn_vp"):
        r[op] = getattr(mod, op)(Ws, bs, X, y, V, head=head, reduction=reduction, sample_weight=w, **extra)
    r["ggn_diag"] = mod.ggn_diag(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=w, **extra)
    if heavy:
        r["per_sample_grads"] = mod.per_sample_grads(Ws, bs, X, y, head=head, **extra)
        r["grad_gram"] = mod.grad_gram(Ws, bs, X, y, head=head, **extra)
    if X2 is not None:
        r["grad_gram X2"] = mod.grad_gram(Ws, bs, X, y, X2, p.y2, head=head, **extra)
    return r


def objective_results(p, X, X2, reduction="mean"):
    """Every method of an Objective made from X (sparse or dense), with a penalty."""
    obj = mlpgrad.Objective(p.sizes, X, p.y, head=p.head, reduction=reduction, sample_weight=p.w, alpha=1e-3,
                            dtype=p.dtype)
    theta, V = p.theta, p.V
    r = {"loss": np.array(obj.loss(theta))}
    loss, r["grad"] = obj.loss_and_grad(theta)
    r["loss_and_grad loss"] = np.array(loss)
    r["norms"] = obj.per_sample_grad_norms(theta)
    r["layer norms"] = obj.per_sample_grad_norms(theta, per_layer=True)
    loss, r["clipped grad"], r["clipped norms"] = obj.clipped_grad(theta, 0.5)
    r["clipped loss"] = np.array(loss)
    r["per_sample_grads"] = obj.per_sample_grads(theta)
    r["grad_dot"] = obj.grad_dot(theta, V)
    r["grad_gram"] = obj.grad_gram(theta)
    r["grad_gram X2"] = obj.grad_gram(theta, X2, p.y2)
    r["sum_squared_grads"] = obj.sum_squared_grads(theta)
    r["hvp"] = obj.hvp(theta, V)
    r["ggn_vp"] = obj.ggn_vp(theta, V)
    r["ggn_diag"] = obj.ggn_diag(theta)
    r["hessian_operator"] = obj.hessian_operator(theta) @ V[:, 0]
    r["ggn_operator"] = obj.ggn_operator(theta).matmat(V)
    return r


def _err(got, want):
    """rel_err, or the absolute max when the dense result is exactly zero (an all-zero X has dW_1 = 0)."""
    want64 = np.asarray(want, dtype=np.float64)
    if want64.size and not np.any(want64):
        return float(np.max(np.abs(np.asarray(got, dtype=np.float64))))
    return rel_err(got, want)


def agree(got: dict, want: dict, dtype, where):
    """Every result of ``got`` within tol(dtype) of ``want``'s, of the same shape and dtype."""
    assert got.keys() == want.keys()
    dtype = np.dtype(dtype)
    for name in want:
        a, b = np.asarray(got[name]), np.asarray(want[name])
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {name} {a.shape} {a.dtype}, {b.shape} {b.dtype}"
        assert np.all(np.isfinite(a)), f"{where}: {name} not finite"
        err = _err(a, b)
        if not err <= LARGEST.get(dtype.name, (0.0,))[0]:
            LARGEST[dtype.name] = (err, f"{where} {name}")
        assert err <= tol(dtype), f"{where}: {name}: max-norm relative error {err:.3e} > {tol(dtype):.0e}"


def same_bits(got: dict, want: dict, where):
    assert got.keys() == want.keys()
    for name in want:
        a, b = np.asarray(got[name]), np.asarray(want[name])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {name}"
        assert np.array_equal(a, b, equal_nan=True), f"{where}: {name}: other bits"


# -- every function, every head, depth 1-3 -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity"])
def test_every_function_sparse_equals_dense(head, depth, dtype):
    """The native functions on a sparse X: the dense X's results; grad_gram with X and X2 sparse or dense in every
    combination; both reductions."""
    p = Problem(95, 40, 0.1, head, depth, dtype, seed=depth)
    for reduction in ("mean", "sum"):
        where = f"{p.where} {reduction}"
        want = function_results(mlpgrad, p, p.D, p.D2, reduction)
        agree(function_results(mlpgrad, p, p.X, p.X2, reduction), want, dtype, where)
    for X, X2 in ((p.X, p.D2), (p.D, p.X2)):
        agree({"gram": mlpgrad.grad_gram(p.Ws, p.bs, X, p.y, X2, p.y2, head=head)}, {"gram": want["grad_gram X2"]},
              dtype, f"{p.where} mixed X / X2")


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity"])
def test_objective_sparse_equals_dense(head, dtype):
    """An Objective made from a sparse X: every method and operator gives the dense Objective's results."""
    p = Problem(96, 33, 0.2, head, 2, dtype, seed=4)
    agree(objective_results(p, p.X, p.X2), objective_results(p, p.D, p.D2), dtype, f"Objective {p.where}")
    agree(objective_results(p, p.X, p.D2), objective_results(p, p.D, p.X2), dtype, f"Objective mixed {p.where}")


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity"])
def test_reference_sparse_equals_dense(head, depth):
    """The specification itself: scipy's products on a sparse X give the dense X's results."""
    p = Problem(30, 11, 0.3, head, depth, F64, seed=depth)
    agree(function_results(reference, p, p.X, p.X2), function_results(reference, p, p.D, p.D2), F64,
          f"reference {p.where}")


def test_native_sparse_matches_reference():
    """Closing the loop on one problem: native on a sparse X against the reference on the same sparse X."""
    p = Problem(50, 20, 0.2, "softmax", 3, F64, seed=9)
    agree(function_results(mlpgrad, p, p.X, p.X2), function_results(reference, p, p.X, p.X2), F64,
          f"native vs reference {p.where}")


# -- shapes: d_0, density, N at the chunk boundaries, empty rows, an all-zero X -------------------------------------

def _shape_case(n, d0, density, dtype=F64, head="softmax", hidden=(8,)):
    p = Problem(n, d0, density, head, dtype=dtype, seed=n + d0, hidden=hidden, empty_rows=0.1)
    heavy = n * p.P <= 2_000_000 and n <= 300
    agree(function_results(mlpgrad, p, p.X, p.X2, heavy=heavy),
          function_results(mlpgrad, p, p.D, p.D2, heavy=heavy), dtype, p.where)


QUICK_SHAPES = [(1, 1, 1.0), (96, 1, 0.5), (95, 300, 0.05), (300, 3000, 0.001), (2000, 70, 0.05), (96, 300, 0.0),
                (1, 3000, 0.05)]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("n, d0, density", QUICK_SHAPES)
def test_shapes(n, d0, density, dtype):
    _shape_case(n, d0, density, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("hidden", [(8,), (40, 20)], ids=["narrow-hidden", "wide-hidden"])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("d0", [1, 7, 300, 3000])
@pytest.mark.parametrize("n", [1, 95, 96, 300, 2000])
def test_shapes_all(n, d0, density, hidden, dtype):
    _shape_case(n, d0, density, dtype, head="sigmoid" if n % 2 else "softmax", hidden=hidden)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_all_zero_and_empty(dtype):
    """An X without nonzeros (every row empty) gives the zero-input results; N = 0 works as for a dense X."""
    p = Problem(40, 25, 0.0, "softmax", 3, dtype)
    assert p.X.nnz == 0
    agree(function_results(mlpgrad, p, p.X, p.X2), function_results(mlpgrad, p, p.D, p.D2), dtype, "all zero")
    Ws, bs = p.Ws, p.bs
    X0 = sp.csr_matrix((0, 25), dtype=dtype)
    y0 = np.zeros(0, dtype=np.int64)
    assert mlpgrad.forward(Ws, bs, X0, head="softmax").shape == (0, 3)
    L, g = mlpgrad.loss_and_grad(Ws, bs, X0, y0, head="softmax", input_grad=True)
    assert L == 0.0 and g.input.shape == (0, 25) and not np.any(_flat(g))
    assert mlpgrad.per_sample_grad_norms(Ws, bs, X0, y0, head="softmax").shape == (0,)
    assert mlpgrad.grad_gram(Ws, bs, X0, y0, p.X2, p.y2, head="softmax").shape == (0, 7)


# The per-sample functions, the curvature products and the Gram matrix run a sparse X in slabs of rows densified,
# 64 MiB each (cpp/src/config.hpp kSparseSlabBytes): at d_0 = 2^15, 256 rows of float64 or 512 of float32 per slab.
SLAB_D0 = 1 << 15
SLAB_ROWS = {np.dtype(F64): 256, np.dtype(F32): 512}


def _slab_case(dtype, n, threads=(None,)):
    p = Problem(n, SLAB_D0, 0.001, "softmax", dtype=dtype, seed=n, hidden=(8,))
    want = function_results(mlpgrad, p, p.D, p.D2, heavy=False)
    want["gram"] = mlpgrad.grad_gram(p.Ws, p.bs, p.D, p.y, head="softmax")
    runs = {}
    for t in threads:
        runs[t] = function_results(mlpgrad, p, p.X, p.X2, heavy=False, n_threads=t)
        runs[t]["gram"] = mlpgrad.grad_gram(p.Ws, p.bs, p.X, p.y, head="softmax", n_threads=t)
        agree(runs[t], want, dtype, f"slabs of {SLAB_ROWS[np.dtype(dtype)]} rows, n_threads={t}, {p.where}")
    for t in threads[1:]:
        same_bits(runs[t], runs[threads[0]], f"slabs, n_threads={t} against {threads[0]}")


def test_slabs():
    """Two slabs, the second of one row: the dense X's results."""
    _slab_case(F64, SLAB_ROWS[np.dtype(F64)] + 1)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, F64])
def test_slabs_all(dtype):
    """float64: one slab exactly, one row more, several slabs with a partial last one, 1, 2 and 3 threads the same
    bits; float32 (twice the rows per slab, 26 s for the same cases): one row more than a slab."""
    rows = SLAB_ROWS[np.dtype(dtype)]
    if dtype == F32:
        _slab_case(dtype, rows + 1)
        return
    for n in (rows, rows + 1):
        _slab_case(dtype, n)
    _slab_case(dtype, 2 * rows + 37, threads=(1, 2, 3))


# -- formats and layouts of the same matrix: the canonical CSR's bits --------------------------------------------

def _bits_problem():
    return Problem(97, 30, 0.15, "softmax", 2, F64, seed=3)


def _native_bits(p, X):
    return function_results(mlpgrad, p, X, p.X2)


def _snapshot(X):
    """The arrays that hold a sparse matrix's values and structure, by format, as bytes."""
    parts = {"csr": ("data", "indices", "indptr"), "csc": ("data", "indices", "indptr"),
             "bsr": ("data", "indices", "indptr"), "coo": ("data", "row", "col"), "dia": ("data", "offsets")}
    if X.format in parts:
        return [(getattr(X, a).dtype.str, getattr(X, a).tobytes()) for a in parts[X.format]]
    return repr(sorted(X.todok().items()) if X.format == "dok" else (X.rows.tolist(), X.data.tolist()))


@pytest.mark.parametrize("kind", ["matrix", "array"])
def test_every_format_gives_the_canonical_bits(kind):
    p = _bits_problem()
    want = _native_bits(p, p.X)
    for fmt in FORMATS:
        with warnings.catch_warnings():  # DIA of a random matrix: scipy warns that it has many diagonals
            warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
            X = getattr(sp, f"{fmt}_{kind}")(p.D)
        before = _snapshot(X)
        same_bits(_native_bits(p, X), want, f"{fmt}_{kind}")
        assert _snapshot(X) == before, f"{fmt}_{kind}: the caller's matrix changed"


def _non_canonical(D, rng):
    """A CSR matrix of D (float64) with its rows' entries shuffled and some values split into two duplicates."""
    rows, cols = np.nonzero(D)
    vals = D[rows, cols]
    split = rng.random(len(vals)) < 0.3
    part = np.where(split, rng.uniform(0.2, 0.8, len(vals)), 1.0) * vals
    rows = np.concatenate([rows, rows[split]])
    cols = np.concatenate([cols, cols[split]])
    vals = np.concatenate([part, (vals - part)[split]])
    order = np.lexsort((rng.random(len(rows)), rows))  # by row, shuffled within
    indptr = np.searchsorted(rows[order], np.arange(D.shape[0] + 1))
    X = sp.csr_matrix(D.shape)
    X.data, X.indices, X.indptr = vals[order], cols[order].astype(np.int32), indptr.astype(np.int32)
    return X


def test_non_canonical_input_gives_the_canonical_answer():
    """Unsorted indices and duplicates: the bits of scipy's canonical form (duplicates summed as scipy sums them),
    the caller's matrix (and COO's) bitwise unchanged."""
    p = _bits_problem()
    X = _non_canonical(p.D, np.random.default_rng(0))
    assert not X.has_sorted_indices and X.nnz > p.X.nnz
    canonical = X.copy()
    canonical.sum_duplicates()
    want = _native_bits(p, canonical)
    for variant in (X, X.tocoo(), sp.csr_array(X)):
        before = _snapshot(variant)
        same_bits(_native_bits(p, variant), want, f"non-canonical {variant.format}")
        assert _snapshot(variant) == before, "the caller's matrix changed"
    agree(want, _native_bits(p, p.D), F64, "canonical vs dense")


def test_index_dtypes_and_byte_order():
    """int32 and int64 indices (and each mixed with the other for indptr), values in the other byte order, integer
    values: the same bits as the canonical float64 CSR."""
    p = _bits_problem()
    want = _native_bits(p, p.X)
    other = ">" if sys.byteorder == "little" else "<"
    for idx, ptr in ((np.int32, np.int32), (np.int64, np.int64), (np.int32, np.int64), (np.int64, np.int32)):
        X = sp.csr_matrix(p.X.shape)
        X.data, X.indices, X.indptr = p.X.data.copy(), p.X.indices.astype(idx), p.X.indptr.astype(ptr)
        same_bits(_native_bits(p, X), want, f"indices {np.dtype(idx)}, indptr {np.dtype(ptr)}")
    X = p.X.copy()
    X.data = X.data.astype(other + "f8")
    before = _snapshot(X)
    same_bits(_native_bits(p, X), want, "values of the other byte order")
    assert _snapshot(X) == before
    Xi = sp.csr_matrix(np.round(p.D * 4).astype(np.int16))
    same_bits(_native_bits(p, Xi), _native_bits(p, sp.csr_matrix(np.round(p.D * 4))), "int16 values")


def test_check_X_makes_a_canonical_csr():
    """What the core receives: a csr_matrix of the dtype, C-contiguous native values, int64 indices strictly
    increasing in each row, int64 indptr; a canonical CSR of the dtype is shared, not copied."""
    p = _bits_problem()
    X = _non_canonical(p.D, np.random.default_rng(1))
    for dtype in (F32, F64):
        M = check_X(sp.coo_array(X), 30, np.dtype(dtype))
        assert type(M) is sp.csr_matrix and M.dtype == dtype and M.data.flags.c_contiguous and M.data.dtype.isnative
        assert M.indices.dtype == M.indptr.dtype == np.int64 and M.indptr[0] == 0 and M.indptr[-1] == M.nnz
        for i in range(M.shape[0]):
            assert np.all(np.diff(M.indices[M.indptr[i]:M.indptr[i + 1]]) > 0)
        np.testing.assert_array_equal(M.toarray(), X.toarray().astype(dtype))
    C = check_X(p.X, 30, np.dtype(F64))
    C64 = check_X(C, 30, np.dtype(F64))
    assert all(np.shares_memory(getattr(C64, a), getattr(C, a)) for a in ("data", "indices", "indptr"))


# -- the reference, threads, schedules, SIMD levels ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, F64])
def test_n_threads_give_the_same_bits(dtype):
    p = Problem(2000, 500, 0.05, "softmax", 3, dtype, seed=11, hidden=(40, 20))
    want = function_results(mlpgrad, p, p.X, p.X2, heavy=False, n_threads=1)
    for t in (2, 3, 8):
        same_bits(function_results(mlpgrad, p, p.X, p.X2, heavy=False, n_threads=t), want, f"n_threads={t}")


@pytest.mark.parametrize("schedule", ["narrow", "chunked", "layered"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_forced_schedules(schedule, dtype):
    """Each schedule of the engine on a sparse X against itself on the dense X; the narrow engine takes networks of
    widths <= 16 (d_0 included), so its problem is narrow."""
    for d0, hidden in ((12, (9, 5)), (300, (40,))):
        p = Problem(1100, d0, 0.2, "sigmoid", dtype=dtype, seed=d0, hidden=hidden)
        with forced_schedule(schedule):
            agree(function_results(mlpgrad, p, p.X, p.X2, heavy=False),
                  function_results(mlpgrad, p, p.D, p.D2, heavy=False), dtype, f"{schedule} {p.where}")


@pytest.mark.parametrize("simd", mlpgrad.build_info()["simd_available"])
def test_every_simd_level(simd):
    previous = mlpgrad.build_info()["simd"]
    mlpgrad._native.set_simd(simd)
    try:
        for dtype in (F32, F64):
            p = Problem(130, 70, 0.1, "softmax", 3, dtype, seed=5)
            agree(function_results(mlpgrad, p, p.X, p.X2), function_results(mlpgrad, p, p.D, p.D2), dtype,
                  f"{simd} {p.where}")
    finally:
        mlpgrad._native.set_simd(previous)


# -- what the binding keeps, NaN, scipy optional ---------------------------------------------------------------------

def test_objective_keeps_its_converted_X_alive():
    """An Objective made from a sparse X that had to be converted (int32 indices, float64 values for a float32
    Objective) holds the converted arrays itself: the caller's X deleted, the results stay the dense X's."""
    p = Problem(200, 50, 0.1, "softmax", 2, F32, seed=2)
    X = sp.csr_matrix(p.D.astype(F64))
    assert X.indices.dtype == np.int32
    obj = mlpgrad.Objective(p.sizes, X, p.y, head="softmax", dtype=F32)
    dense = mlpgrad.Objective(p.sizes, p.D, p.y, head="softmax", dtype=F32)
    del X
    gc.collect()
    np.full(10**6, np.nan)  # likely to reuse the freed memory
    for _ in range(3):
        agree({"grad": obj.loss_and_grad(p.theta)[1]}, {"grad": dense.loss_and_grad(p.theta)[1]}, F32,
              "Objective after the caller's X is gone")


@pytest.mark.parametrize("impl", [mlpgrad, reference], ids=["native", "reference"])
def test_nan_in_sparse_X_is_not_screened(impl):
    """As for a dense X (README, "NaN, Inf and extreme values"): NaN flows into its sample's results, but the zeros a
    sparse X does not store multiply nothing: of dW_1 only the rows of the sample's stored columns are NaN."""
    p = Problem(9, 6, 0.5, "softmax", 2, F64, seed=1, empty_rows=0.0)
    X = p.X.copy()
    X.data[X.indptr[4]] = np.nan  # row 4's first value
    P = impl.forward(p.Ws, p.bs, X, head="softmax")
    assert np.all(np.isnan(P[4])) and np.all(np.isfinite(np.delete(P, 4, axis=0)))
    L, g = impl.loss_and_grad(p.Ws, p.bs, X, p.y, head="softmax", input_grad=True)
    stored = np.zeros(6, dtype=bool)
    stored[X.indices[X.indptr[4]:X.indptr[5]]] = True
    assert np.isnan(L) and 0 < stored.sum() < 6
    np.testing.assert_array_equal(np.isnan(g.weights[0]).any(axis=1), stored)
    assert np.all(np.isnan(g.weights[0][stored])) and np.all(np.isnan(g.weights[1]))
    assert np.all(np.isnan(g.input[4])) and np.all(np.isfinite(np.delete(g.input, 4, axis=0)))


def test_dense_input_does_not_import_scipy():
    code = ("import sys, numpy as np, mlpgrad\n"
            "W, b = [np.zeros((3, 2))], [np.zeros(2)]\n"
            "mlpgrad.loss_and_grad(W, b, np.ones((4, 3)), np.array([0, 1, 1, 0]), head='softmax')\n"
            "mlpgrad.Objective([3, 2], np.ones((4, 3)), np.array([0, 1, 1, 0]), head='softmax')\n"
            "assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if m.startswith('scipy'))\n")
    subprocess.run([sys.executable, "-c", code], check=True)
