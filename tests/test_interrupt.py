"""Ctrl-C during a long native call raises KeyboardInterrupt between chunks and leaves no bad state."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import mlpgrad
from _problems import make_problem


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="needs POSIX signals")
@pytest.mark.parametrize("sizes,n", [([256, 1024, 1024, 10], 32768),  # chunked schedule
                                     ([2048, 2048, 10], 1024)])       # layered schedule
def test_ctrl_c_interrupts_a_long_call(sizes, n):
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
