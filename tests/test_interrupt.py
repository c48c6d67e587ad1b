"""Ctrl-C during a long native call raises KeyboardInterrupt between chunks and leaves no bad state."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import mlpgrad
from _problems import make_problem


@pytest.mark.slow  # a call of seconds, to be interrupted
@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="needs POSIX signals")
@pytest.mark.parametrize("sizes,n", [([256, 1024, 1024, 10], 32768),  # chunked schedule
                                     ([2048, 2048, 10], 1024)])       # layered schedule
def test_ctrl_c_interrupts_a_long_call(sizes, n, ctrl_c):
    Ws, bs, X, y = make_problem(sizes, n, "softmax", "labels", np.float64)
    small = slice(0, 200)
    before = mlpgrad.loss_and_grad(Ws, bs, X[small], y[small], head="softmax", input_grad=True)
    start = time.perf_counter()
    mlpgrad.loss_and_grad(Ws, bs, X[: n // 16], y[: n // 16], head="softmax")
    full = 16 * (time.perf_counter() - start)  # estimated duration of the whole call

    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax", input_grad=True)
        time.sleep(5)  # only reached if the native call ignored the signal
    elapsed = time.perf_counter() - start
    timer.join()
    print(f"interrupted after {elapsed:.2f} s of a call estimated at {full:.1f} s")
    assert elapsed < max(0.5 * full, 1.0)

    after = mlpgrad.loss_and_grad(Ws, bs, X[small], y[small], head="softmax", input_grad=True)
    assert after[0] == before[0]
    for a, b in zip(after[1].weights + after[1].biases + [after[1].input],
                    before[1].weights + before[1].biases + [before[1].input]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a call long enough for three signals, each running another call
@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_signal_handler_calling_mlpgrad_mid_call_leaves_the_outer_call_intact():
    # Python signal handlers run on the calling thread between chunks of a long native call; one that
    # calls mlpgrad itself must not disturb the outer call's workspace.
    Ws, bs, X, y = make_problem([256, 512, 512, 10], 16384, "softmax", "labels", np.float64)
    Ws2, bs2, X2, y2 = make_problem([600, 700, 10], 3000, "softmax", "labels", np.float64)
    expected = mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax")
    inner = []

    def handler(signum, frame):
        inner.append(mlpgrad.loss_and_grad(Ws2, bs2, X2, y2, head="softmax")[0])

    previous = signal.signal(signal.SIGUSR1, handler)
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGUSR1)) for t in (0.02, 0.05, 0.1)]
    try:
        for timer in timers:
            timer.start()
        got = mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax")
        for timer in timers:
            timer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    print(f"{len(inner)} nested calls from the signal handler")
    assert inner, "the handler never ran"
    assert got[0] == expected[0]
    for a, b in zip(got[1].weights + got[1].biases, expected[1].weights + expected[1].biases):
        np.testing.assert_array_equal(a, b)
