"""Random problems shared by the test modules (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import contextlib

import numpy as np


def make_network(sizes, dtype=np.float64, rng=None, scale=1.0):
    """Weights ~ N(0, scale^2 / d_in), biases ~ N(0, 0.1^2): lists of C-contiguous arrays of ``dtype``."""
    rng = np.random.default_rng(0) if rng is None else rng
    Ws = [(rng.standard_normal((a, b)) * scale / np.sqrt(a)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    return Ws, bs


def make_targets(head, kind, n, k, dtype=np.float64, rng=None):
    """kind: "labels" (softmax: int labels; sigmoid: hard 0/1) or "soft" (distributions / values in [0, 1]);
    identity head: real values (kind ignored), spread 2 about 0.5."""
    rng = np.random.default_rng(1) if rng is None else rng
    if head == "identity":
        return (0.5 + 2.0 * rng.standard_normal((n,) if k == 1 else (n, k))).astype(dtype)
    if head == "softmax":
        if kind == "labels":
            return rng.integers(0, k, size=n)
        t = rng.random((n, k)) + 1e-3
        return (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    shape = (n,) if k == 1 else (n, k)
    if kind == "labels":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def make_problem(sizes, n, head, kind="labels", dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    Ws, bs = make_network(sizes, dtype, rng)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = make_targets(head, kind, n, sizes[-1], dtype, rng)
    return Ws, bs, X, y


def rel_err(a, b):
    """Max-norm relative error: max|a - b| / max(max|b|, tiny)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if b.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def fd_gradient(loss_fn, arr, rel_step):
    """Five-point central differences of loss_fn() for every entry of arr (perturbed in place, restored);
    the step is rel_step * max(1, |entry|). Truncation error O(step^4)."""
    g = np.empty_like(arr)
    for idx in np.ndindex(arr.shape):
        orig = arr[idx]
        h = rel_step * max(1.0, abs(orig))

        def at(step):
            arr[idx] = orig + step
            try:
                return loss_fn()
            finally:
                arr[idx] = orig

        g[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return g


@contextlib.contextmanager
def forced_schedule(name):
    """The engine's schedule forced to name (chunked, layered; narrow: the automatic choice, which takes the narrow
    engine where the widths allow it) for the native calls inside; None: unchanged."""
    from mlpgrad import _native

    previous = _native.set_schedule("automatic" if name == "narrow" else name) if name else None
    try:
        yield
    finally:
        if previous is not None:
            _native.set_schedule(previous)
