"""Threads: results independent of the thread count, OpenMP visible to threadpoolctl, the GIL released."""

import threading
import time

import numpy as np
import pytest

import mlpgrad
from _problems import make_problem


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes,n,head", [([5, 3, 5], 20000, "softmax"), ([33, 70, 17, 1], 3001, "sigmoid"),
                                          ([300, 257, 10], 1500, "softmax")])
def test_bit_identical_for_any_thread_count(dtype, sizes, n, head):
    Ws, bs, X, y = make_problem(sizes, n, head, "labels", dtype)
    w = np.random.default_rng(3).random(n)
    runs = []
    for threads in (1, 2, 3, 8, None, 1):
        L, g = mlpgrad.loss_and_grad(Ws, bs, X, y, head=head, sample_weight=w, input_grad=True, n_threads=threads)
        runs.append((L, g))
    L0, g0 = runs[0]
    for L, g in runs[1:]:
        assert L == L0
        for a, b in zip(g.weights + g.biases + [g.input], g0.weights + g0.biases + [g0.input]):
            np.testing.assert_array_equal(a, b)
    P = [mlpgrad.forward(Ws, bs, X, head=head, n_threads=t) for t in (1, 2, 3)]
    np.testing.assert_array_equal(P[0], P[1])
    np.testing.assert_array_equal(P[0], P[2])


def test_threadpoolctl_sees_and_limits_openmp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not mlpgrad.build_info()["openmp"]:
        pytest.skip("built without OpenMP")
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert mlpgrad.build_info()["max_threads"] == 1


def test_gil_is_released_during_native_work():
    # A pure-Python thread keeps counting while the main thread is inside long native calls.
    Ws, bs, X, y = make_problem([256, 512, 512, 10], 8192, "softmax", "labels", np.float64)
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=count)
    t.start()
    try:
        time.sleep(0.05)
        before = counter[0]
        time.sleep(0.2)
        rate = (counter[0] - before) / 0.2  # counts per second with the main thread idle
        before = counter[0]
        start = time.perf_counter()
        calls = 0
        while time.perf_counter() - start < 0.5:
            mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", n_threads=1)
            calls += 1
        elapsed = time.perf_counter() - start
        progressed = counter[0] - before
    finally:
        stop.set()
        t.join()
    share = progressed / (rate * elapsed)
    print(f"{calls} native calls in {elapsed:.2f} s; the Python thread ran at {share:.0%} of its idle rate")
    # With the GIL held it would only run in the gaps between calls (a few percent of the time).
    assert share > 0.3


def test_forced_schedules_run_and_agree():
    """The schedule switch of tests and experiments (_native.set_schedule, MLPGRAD_SCHEDULE at load) reaches the
    engine: on a narrow network, forcing chunked or layered replaces the narrow engine (another summation order,
    so other bits for some result), and every schedule agrees with the reference and is restored afterwards."""
    from mlpgrad import _native, reference
    from _bounds import tol
    from _problems import forced_schedule, rel_err

    Ws, bs, X, y = make_problem([5, 3, 5], 5000, "softmax", "labels", np.float32, seed=2)
    ref = reference.loss_and_grad([W.astype(np.float64) for W in Ws], [b.astype(np.float64) for b in bs],
                                  X.astype(np.float64), y, head="softmax")[1]
    before = _native.set_schedule("automatic")
    _native.set_schedule(before)
    results = {}
    for name in ("narrow", "chunked", "layered"):
        with forced_schedule(name):
            results[name] = mlpgrad.pack(*mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax")[1][:2])
        assert _native.set_schedule(before) == before  # restored
    for g in results.values():
        assert rel_err(g, mlpgrad.pack(ref.weights, ref.biases)) <= tol(np.float32)
    assert not np.array_equal(results["narrow"], results["chunked"])
