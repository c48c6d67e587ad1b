"""The native epoch of mini-batch training (``_native.train_epoch``, cpp/src/train.cpp) against the same loop
written in Python: the batches gathered, weighed and skipped in Python, each one stepped by a one-batch native
epoch. Both run the same arithmetic in the same order, so they must agree bit for bit. (The step's arithmetic
itself is checked against NumPy in tests/test_estimator.py.)"""

import math
import os
import signal
import threading
import time

import numpy as np
import pytest

from mlpgrad import _native

SIGMOID, SOFTMAX = "sigmoid", "softmax"
ADAM, SGD = "adam", "sgd"


def _options(solver, batch_size, alpha, lr, nesterov):
    return _native.train_options(solver, batch_size, alpha, lr, 0.9, 0.999, 1e-8, 0.9, nesterov)


def _data(X, labels, targets, sw, head, sizes):
    return _native.bind_data(X, labels if labels is not None else targets, sw, head, X.shape[1], sizes[-1], X.dtype)


def _problem(dtype, head, n, sizes, weighted, seed=0):
    rng = np.random.default_rng(seed)
    n_reg = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    n_params = n_reg + sum(sizes[1:])
    flat = (rng.standard_normal(n_params) * 0.3).astype(dtype)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    if head == SOFTMAX:
        labels, targets = rng.integers(0, sizes[-1], n).astype(np.int64), None
    else:
        labels, targets = None, (rng.random((n, sizes[-1])) < 0.5).astype(dtype)
    sw = None
    if weighted:
        sw = rng.uniform(0, 2, n).astype(dtype)
        sw[:7] = 0  # the first batch (of 7 rows when unshuffled) weighs nothing: no step
    return flat, n_reg, X, labels, targets, sw


def _python_epoch(flat, state, t, sizes, X, labels, targets, sw, order, batch_size, head, alpha, sumsq, solver,
                  lr, nesterov):
    """The epoch as the estimator ran it before it moved to native code: gather, weigh and skip each batch in
    Python; one native one-batch epoch makes its step."""
    grad = np.empty_like(flat)
    t_arr = np.array([t], dtype=np.int64)
    loss_sum, steps = 0.0, 0
    for start in range(0, X.shape[0], batch_size):
        idx = np.arange(start, min(start + batch_size, X.shape[0]))
        if order is not None:
            idx = order[idx]
        Xb = np.ascontiguousarray(X[idx])
        lb = None if labels is None else labels[idx]
        tb = None if targets is None else targets[idx]
        wb = None if sw is None else sw[idx]
        if wb is not None:
            wsum = 0.0
            for w in wb:  # in order, in double, as the core sums them
                wsum += float(w)
            if not wsum > 0:
                continue
        batch_loss, sumsq, n_steps = _native.train_epoch(
            flat, grad, state[0], state[1] if solver == ADAM else None, t_arr, sizes,
            _data(Xb, lb, tb, wb, head, sizes), None, _options(solver, len(idx), alpha, lr, nesterov), sumsq, 1)
        assert n_steps == 1
        loss_sum += batch_loss
        steps += 1
    return loss_sum, sumsq, steps, int(t_arr[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver,nesterov", [(ADAM, True), (SGD, True), (SGD, False)])
@pytest.mark.parametrize("head", [SOFTMAX, SIGMOID])
@pytest.mark.parametrize("shuffled,weighted", [(False, False), (True, False), (False, True), (True, True)])
def test_epoch_equals_python_loop(dtype, solver, nesterov, head, shuffled, weighted):
    sizes, n, batch_size = [5, 9, 4], 96, 7  # 14 batches, the last of 5 rows
    flat, n_reg, X, labels, targets, sw = _problem(dtype, head, n, sizes, weighted)
    order = np.random.default_rng(3).permutation(n).astype(np.int64) if shuffled else None
    alpha, lr = 0.01, 0.05
    X0 = X.copy()
    results = []
    for native in (True, False):
        p = flat.copy()
        state = [np.zeros_like(p), np.zeros_like(p)]
        t = np.array([3], dtype=np.int64)  # a warm start: adam's bias correction continues from t = 3
        sumsq = float(np.dot(p[:n_reg].astype(np.float64), p[:n_reg]))
        for _ in range(2):  # two epochs: the state carries over
            if native:
                loss_sum, sumsq, steps = _native.train_epoch(
                    p, np.empty_like(p), state[0], state[1] if solver == ADAM else None, t, sizes,
                    _data(X, labels, targets, sw, head, sizes), order, _options(solver, batch_size, alpha, lr, nesterov),
                    sumsq, 2)
            else:
                loss_sum, sumsq, steps, t_new = _python_epoch(p, state, int(t[0]), sizes, X, labels, targets, sw,
                                                              order, batch_size, head, alpha, sumsq, solver, lr,
                                                              nesterov)
                t[0] = t_new
        results.append((p, state, loss_sum, sumsq, steps, int(t[0])))
    (pa, sa, la, qa, na, ta), (pb, sb, lb, qb, nb, tb) = results
    assert na == nb == (13 if weighted and not shuffled else 14)
    assert ta == tb == 3 + 2 * na
    assert la == lb and qa == qb
    assert np.array_equal(pa, pb) and not np.array_equal(pa, flat)
    assert np.array_equal(sa[0], sb[0]) and np.array_equal(sa[1], sb[1])
    assert np.array_equal(X, X0)  # the data are only read


def _call(**override):
    sizes = [3, 4, 2]
    n_params = 3 * 4 + 4 * 2 + 4 + 2
    args = dict(params=np.zeros(n_params), grad=np.zeros(n_params), state1=np.zeros(n_params),
                state2=np.zeros(n_params), t=np.zeros(1, np.int64), sizes=sizes, X=np.zeros((10, 3)),
                labels=np.zeros(10, np.int64), sample_weight=None, order=None, batch_size=4, alpha=0.0, sumsq=0.0,
                solver=ADAM, lr=0.001, n_threads=1)
    args.update(override)
    a = args
    data = _native.bind_data(a["X"], a["labels"], a["sample_weight"], SOFTMAX, a["X"].shape[1], 2, np.float64)
    options = _options(a["solver"], a["batch_size"], a["alpha"], a["lr"], True)
    return _native.train_epoch(a["params"], a["grad"], a["state1"], a["state2"], a["t"], a["sizes"], data,
                               a["order"], options, a["sumsq"], a["n_threads"])


def test_epoch_counts_steps_and_rows():
    t = np.array([5], np.int64)
    loss_sum, sumsq, steps = _call(lr=0.0, t=t)  # the parameters stay zero: a uniform softmax over 2 classes
    assert steps == 3 and t[0] == 8 and sumsq == 0.0
    assert loss_sum == pytest.approx(10 * math.log(2), rel=1e-15)  # batches of 4, 4 and 2 rows


@pytest.mark.parametrize("solver", [ADAM, SGD])
def test_loss_scale_scales_the_data_loss_only(solver):
    """loss_scale s: the epoch's loss sum is s * (each batch's data loss) + (its penalty), summed over the batches
    with their sizes; the steps do not change. From one start, s = 1, 1/3 and 0 give the sums a + p, a/3 + p and
    p of the same data losses a and penalties p."""
    sizes, alpha = [5, 6, 3], 0.7
    flat0, n_reg, X, labels, _, sw = _problem(np.float64, SOFTMAX, 53, sizes, weighted=True)
    data = _data(X, labels, None, sw, SOFTMAX, sizes)
    sums, params = [], []
    for scale in (1.0, 1.0 / 3.0, 0.0):
        flat, grad = flat0.copy(), np.empty_like(flat0)
        s1, s2, t = np.zeros_like(flat0), np.zeros_like(flat0), np.zeros(1, np.int64)
        options = _native.train_options(solver, 8, alpha, 0.01, 0.9, 0.999, 1e-8, 0.9, True, loss_scale=scale)
        loss, _, steps = _native.train_epoch(flat, grad, s1, s2, t, sizes, data, None, options,
                                             float(flat0[:n_reg] @ flat0[:n_reg]), 2)
        assert steps == 7  # batches of 8 rows, the last of 5
        sums.append(loss)
        params.append(flat)
    assert np.array_equal(params[0], params[1]) and np.array_equal(params[0], params[2])
    data_loss, penalty = sums[0] - sums[2], sums[2]
    assert penalty > 0 and data_loss > 0
    assert sums[1] == pytest.approx(data_loss / 3.0 + penalty, rel=1e-13)


@pytest.mark.parametrize("override,error,match", [
    (dict(order=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10])), ValueError, r"order\[9\] is outside \[0, n\)"),
    (dict(order=np.arange(9)), ValueError, "order: expected one index per row"),
    (dict(labels=np.full(10, 2)), ValueError, r"y labels must lie in \[0, 2\)"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(state1=np.zeros(3)), TypeError, "state1: expected a writeable C-contiguous array"),
    (dict(state2=None), TypeError, "state2"),
    (dict(grad=np.zeros(26, np.float32)), TypeError, "grad"),
    (dict(t=np.zeros(1, np.int32)), TypeError, "t: expected a writeable C-contiguous array"),
    (dict(X=np.zeros((10, 4))), ValueError, "data: its shapes do not match the network"),
    (dict(sizes=[3, 0, 2]), ValueError, "every layer size must be >= 1"),
    (dict(sample_weight=-np.ones(10)), ValueError, "sample_weight must be finite and >= 0"),
])
def test_epoch_rejects_bad_arguments(override, error, match):
    with pytest.raises(error, match=match):
        _call(**override)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="needs POSIX signals")
def test_ctrl_c_stops_an_epoch_between_steps(ctrl_c):
    sizes, n, batch_size = [64, 1024, 10], 200_000, 200  # about 0.75 s on one thread
    flat, n_reg, X, labels, targets, sw = _problem(np.float32, SOFTMAX, n, sizes, False)
    state, t = [np.zeros_like(flat), np.zeros_like(flat)], np.zeros(1, np.int64)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        _native.train_epoch(flat, np.empty_like(flat), state[0], state[1], t, sizes,
                            _data(X, labels, None, None, SOFTMAX, sizes), None,
                            _options(ADAM, batch_size, 1e-4, 1e-3, True), 0.0, 1)
        time.sleep(5)  # only reached if the epoch ignored the signal
    elapsed = time.perf_counter() - start
    timer.join()
    assert elapsed < 1.5
    assert 0 < t[0] < n // batch_size  # the steps made are counted, and the epoch stopped early
    assert np.isfinite(flat).all()
