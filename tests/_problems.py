"""Random problems shared by the test modules (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import numpy as np


def make_network(sizes, dtype=np.float64, rng=None, scale=1.0):
    """Weights ~ N(0, scale^2 / d_in), biases ~ N(0, 0.1^2): lists of C-contiguous arrays of ``dtype``."""
    rng = np.random.default_rng(0) if rng is None else rng
    Ws = [(rng.standard_normal((a, b)) * scale / np.sqrt(a)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    return Ws, bs


def make_targets(head, kind, n, k, dtype=np.float64, rng=None):
    """kind: "labels" (softmax: int labels; sigmoid: hard 0/1) or "soft" (distributions / values in [0, 1])."""
    rng = np.random.default_rng(1) if rng is None else rng
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
