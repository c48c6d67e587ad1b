"""Memory: repeated calls do not grow the process, keep no references to the caller's objects, and
return arrays that own their memory.

Resident memory is read from /proc/self/statm (Linux); elsewhere the RSS test is skipped.  A leak of
one converted copy of X per call (the conversions to C order and to the weights' dtype happen on every
call here) would be 2 KiB x 10 000 calls = 20 MB, of one result array ~1 KiB per call = 10 MB: far above
the 1 MiB allowed for allocator noise.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import mlpgrad
from _problems import make_network, make_targets

WARMUP, CALLS = 1000, 10_000
ALLOWED_GROWTH = 1 << 20  # bytes


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _problem(dtype, head, kind, layout):
    """A small problem (8-16-16-3, N = 32); "converted": X is a strided float64 view with float32 weights
    (or float32 with float64 weights) and y a negative-stride view, so every call converts copies."""
    rng = np.random.default_rng(0)
    Ws, bs = make_network([8, 16, 16, 3], dtype, rng)
    X = rng.standard_normal((32, 8)).astype(dtype)
    y = make_targets(head, kind, 32, 3, dtype, rng)
    w = rng.uniform(0.5, 1.5, 32).astype(dtype)
    if layout == "converted":
        other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
        X = np.repeat(X.astype(other), 2, axis=1)[:, ::2]
        y = y[::-1].copy()[::-1]
        w = np.repeat(w, 2)[::2]
    return Ws, bs, X, y, w


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
@pytest.mark.parametrize("dtype, head, kind, layout", [
    (np.float64, "softmax", "labels", "contiguous"),
    (np.float32, "sigmoid", "soft", "converted"),
], ids=["float64-softmax-labels", "float32-sigmoid-converted"])
def test_repeated_calls_do_not_grow_resident_memory(dtype, head, kind, layout):
    Ws, bs, X, y, w = _problem(dtype, head, kind, layout)
    kw = dict(head=head, reduction="mean", sample_weight=w, input_grad=True)

    def calls(count):
        for _ in range(count):
            L, g = mlpgrad.loss_and_grad(Ws, bs, X, y, **kw)
        return L, g

    calls(WARMUP)  # OpenMP threads, per-thread workspaces, allocator pools
    gc.collect()
    before = _rss()
    L, g = calls(CALLS)
    del g
    gc.collect()
    growth = _rss() - before
    print(f"\nRSS growth over {CALLS} loss_and_grad calls after {WARMUP} warm-up calls: {growth / 1024:+.0f} KiB "
          f"({before / 2**20:.1f} MiB before)")
    assert np.isfinite(L)
    assert growth <= ALLOWED_GROWTH, f"resident memory grew by {growth / 1024:.0f} KiB over {CALLS} calls"


def _refcounts(objs):
    return [sys.getrefcount(o) for o in objs]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "converted"])
def test_calls_keep_no_references_to_the_inputs(dtype, layout):
    """The reference counts of X, y, sample_weight, the weight and bias lists and every array in them are
    the same after 100 calls of each function (and after calls that raise) as before."""
    Ws, bs, X, y, w = _problem(dtype, "softmax", "labels", layout)
    objs = [Ws, bs, X, y, w, *Ws, *bs]
    gc.collect()
    before = _refcounts(objs)
    for _ in range(100):
        mlpgrad.forward(Ws, bs, X, head="softmax")
        mlpgrad.forward(Ws, bs, X, head="softmax", n_threads=2)
        mlpgrad.loss(Ws, bs, X, y, head="softmax", sample_weight=w)
        mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", sample_weight=w)
        mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", reduction="mean", sample_weight=w, input_grad=True)
        with pytest.raises(ValueError):
            mlpgrad.loss(Ws, bs, X, y[:-1], head="softmax")
        with pytest.raises(ValueError):
            mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", sample_weight=w[:-1])
    gc.collect()
    after = _refcounts(objs)
    names = ["weights", "biases", "X", "y", "sample_weight"] + [f"weights[{i}]" for i in range(len(Ws))] + \
            [f"biases[{i}]" for i in range(len(bs))]
    changed = {n: (a, b) for n, a, b in zip(names, before, after) if a != b}
    assert not changed, f"reference counts changed (before, after): {changed}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "converted"])
def test_results_own_their_memory(dtype, layout):
    """Every returned array owns its data (or at least is no view of an input), is writeable, and has
    exactly one reference besides the local name: nothing else holds on to it."""
    Ws, bs, X, y, w = _problem(dtype, "sigmoid", "soft", layout)
    inputs = [X, y, w, *Ws, *bs]
    P = mlpgrad.forward(Ws, bs, X, head="sigmoid")
    L, g = mlpgrad.loss_and_grad(Ws, bs, X, y, head="sigmoid", sample_weight=w, input_grad=True)
    results = [P, *g.weights, *g.biases, g.input]
    assert isinstance(L, float)
    for r in results:
        assert isinstance(r, np.ndarray) and r.flags.writeable
        assert r.flags.owndata or not any(r.base is a or np.shares_memory(r, a) for a in inputs)
        assert not any(np.shares_memory(r, a) for a in inputs)
    del results
    gc.collect()
    # the list of results and the local name: 2 (+1 for getrefcount's argument)
    assert sys.getrefcount(P) == 2
    assert all(sys.getrefcount(a) == 3 for a in g.weights)  # the list, the loop name, the argument
