"""Concurrency: many Python threads calling the native core at the same time.

The native work runs with the GIL released, so calls from different Python threads really overlap, each
with its own OpenMP team and workspace.  Results are documented as bit-identical for any thread count,
so every result computed concurrently must equal, bitwise, the serial result computed beforehand.  The
per-call ``n_threads`` must stay with its call: it may not change OpenMP's default in the calling
thread or in any other (``mlpgrad.build_info()["max_threads"]``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import mlpgrad
from _problems import make_problem

PY_THREADS = 8
CALLS_PER_THREAD = 200


def _cases():
    """(name, function, args, kwargs): mixed shapes (the narrow engine for widths <= 16, the layered
    schedule for short batches, the chunked one for >= 8 chunks), dtypes, heads, targets, reductions."""
    out = []
    table = [
        # sizes, N, head, kind, dtype, sample weights, reduction
        ([5, 3, 5], 2000, "softmax", "labels", np.float32, False, "sum"),        # narrow, 2 chunks
        ([5, 3, 5], 7, "sigmoid", "soft", np.float64, True, "mean"),             # narrow, tiny
        ([16, 9, 16, 1], 1500, "sigmoid", "labels", np.float64, True, "sum"),    # narrow, k = 1, y (N,)
        ([20, 33, 4], 300, "softmax", "soft", np.float64, False, "mean"),        # layered
        ([20, 33, 4], 257, "softmax", "labels", np.float32, True, "sum"),        # layered
        ([40, 17, 17, 3], 1000, "sigmoid", "soft", np.float32, False, "mean"),   # layered
        ([64, 128, 10], 2200, "softmax", "labels", np.float64, True, "sum"),     # chunked: 9 chunks
        ([33, 70, 2], 5000, "sigmoid", "soft", np.float32, True, "mean"),        # chunked
        ([1, 1], 1, "sigmoid", "labels", np.float64, False, "sum"),
        ([3, 4], 0, "softmax", "labels", np.float32, False, "sum"),              # empty batch
    ]
    for i, (sizes, n, head, kind, dtype, weighted, red) in enumerate(table):
        Ws, bs, X, y = make_problem(sizes, n, head, kind, dtype, seed=i)
        w = np.random.default_rng(100 + i).uniform(0.0, 2.0, n).astype(dtype) if weighted else None
        name = f"{sizes}-N{n}-{head}-{np.dtype(dtype).name}"
        out.append((f"{name}-loss_and_grad", "loss_and_grad", (Ws, bs, X, y),
                    dict(head=head, reduction=red, sample_weight=w, input_grad=True)))
        out.append((f"{name}-loss_and_grad-no-dX", "loss_and_grad", (Ws, bs, X, y),
                    dict(head=head, reduction=red, sample_weight=w)))
        out.append((f"{name}-loss", "loss", (Ws, bs, X, y), dict(head=head, reduction=red, sample_weight=w)))
        out.append((f"{name}-forward", "forward", (Ws, bs, X), dict(head=head)))
    return out


CASES = _cases()


def _call(case, n_threads):
    _, func, args, kw = case
    return getattr(mlpgrad, func)(*args, n_threads=n_threads, **kw)


def _flatten(result):
    """A result as a flat list: the loss (float) and arrays, or the probabilities."""
    if isinstance(result, np.ndarray):
        return [result]
    if isinstance(result, float):
        return [result]
    L, g = result
    return [L] + list(g.weights) + list(g.biases) + ([g.input] if g.input is not None else [None])


def _bitwise_equal(a, b):
    fa, fb = _flatten(a), _flatten(b)
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
                return False
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return False
        elif type(x) is not type(y) or (x is not None and np.float64(x).tobytes() != np.float64(y).tobytes()):
            return False
    return True


@pytest.fixture(scope="module")
def serial():
    """The serial results (n_threads=1), computed before any concurrency; checked against n_threads=None."""
    results = [_call(case, 1) for case in CASES]
    for case, r in zip(CASES, results):
        assert _bitwise_equal(_call(case, None), r), case[0]
    return results


def _run_threads(target, n):
    """Run target(i) in n threads started together; re-raise the first exception of any thread."""
    barrier = threading.Barrier(n)
    errors = []

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append((i, exc))

    threads = [threading.Thread(target=wrapped, args=(i,), name=f"mlpgrad-worker-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        i, exc = errors[0]
        raise AssertionError(f"worker {i} raised {type(exc).__name__}: {exc}") from exc


def test_concurrent_calls_match_serial_results_bitwise(serial):
    """8 Python threads x 200 calls, each picking a case and n_threads in (None, 1, 2, 3) at random."""
    max_threads = mlpgrad.build_info()["max_threads"]
    mismatches, seen = [], []

    def worker(i):
        rng = np.random.default_rng(1000 + i)
        mine = mlpgrad.build_info()["max_threads"]  # a new thread starts with OpenMP's initial default
        for _ in range(CALLS_PER_THREAD):
            c = int(rng.integers(len(CASES)))
            n_threads = (None, 1, 2, 3)[int(rng.integers(4))]
            if not _bitwise_equal(_call(CASES[c], n_threads), serial[c]):
                mismatches.append((i, CASES[c][0], n_threads))
            seen.append(c)
        assert mlpgrad.build_info()["max_threads"] == mine, "n_threads changed this thread's OpenMP default"

    _run_threads(worker, PY_THREADS)
    assert len(seen) == PY_THREADS * CALLS_PER_THREAD
    assert set(seen) == set(range(len(CASES)))
    assert not mismatches, f"{len(mismatches)} results differ from the serial ones, e.g. {mismatches[:5]}"
    assert mlpgrad.build_info()["max_threads"] == max_threads
    for case, r in zip(CASES, serial):  # and the main thread still gets the serial results
        assert _bitwise_equal(_call(case, None), r), case[0]


def _fresh_thread_default():
    out = []
    t = threading.Thread(target=lambda: out.append(mlpgrad.build_info()["max_threads"]))
    t.start()
    t.join()
    return out[0]


def test_n_threads_does_not_leak_between_threads(serial):
    """Half the threads call with n_threads=1, half with 3, interleaved with calls without n_threads;
    nobody's OpenMP default changes: not the main thread's, not the workers', not a new thread's."""
    main_default, fresh_default = mlpgrad.build_info()["max_threads"], _fresh_thread_default()
    heavy = [c for c, case in enumerate(CASES) if case[1] != "forward" and case[2][2].shape[0] >= 1000]
    seen, mismatches = {}, []

    def worker(i):
        n_threads = 1 if i % 2 == 0 else 3
        seen[i] = {mlpgrad.build_info()["max_threads"]}
        for j in range(40):
            c = heavy[(i + j) % len(heavy)]
            for nt in (n_threads, None):
                if not _bitwise_equal(_call(CASES[c], nt), serial[c]):
                    mismatches.append((i, CASES[c][0], nt))
            seen[i].add(mlpgrad.build_info()["max_threads"])

    _run_threads(worker, PY_THREADS)
    assert not mismatches, mismatches[:5]
    assert mlpgrad.build_info()["max_threads"] == main_default
    for i, values in seen.items():
        assert values == {fresh_default}, f"worker {i} saw OpenMP defaults {values}, expected {fresh_default}"
    assert _fresh_thread_default() == fresh_default
    print(f"\nOpenMP default: main thread {main_default}, new threads {fresh_default}; unchanged")
