"""mlpgrad.dask and the estimators on dask arrays, on a LocalCluster of 2 worker processes (1 thread, 512 MiB each).

Against the in-memory API (the specification): equal within 1e-12 (float64) / 1e-5 (float32) max-norm relative
error for both heads, labels and targets, sum and mean, with and without sample weights, on uneven row chunks
and on a single chunk; bit-identical from run to run and across schedulers; the same errors with the same
messages (a label out of range with the whole array's range); the Objective's curvature products likewise. Then
the estimators, MLPClassifier and MLPRegressor (lbfgs and newton-cg on the cluster, adam and sgd epochs over the
blocks, partial_fit over blocks, lazy predictions and score on the workers), the worker thread budget, the
benchmark's --quick mode and the README's example. Skipped when dask is not installed (the "dask" extra).
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlpgrad
import _report
from _bounds import tol
from _problems import make_problem, rel_err

# Every test here is slow: the cluster's worker processes, or a fresh interpreter importing mlpgrad, sklearn, dask.
pytestmark = pytest.mark.slow

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
LARGEST: dict = {}  # dtype name -> (largest relative error seen, where): printed after the run


@_report.section("mlpgrad.dask vs the in-memory API: largest max-norm relative error")
def _largest_errors():
    return [f"  {k}: {e:.2e} ({w})" for k, (e, w) in sorted(LARGEST.items())]


def test_import_mlpgrad_does_not_import_dask():
    """Runs whether or not dask is installed: mlpgrad, its estimator and its command line never import dask."""
    code = ("import sys\nimport mlpgrad\nfrom mlpgrad import cli\ncli.build_parser()\n"
            "try:\n    import sklearn, scipy\nexcept ImportError:\n    pass\nelse:\n    mlpgrad.MLPClassifier\n"
            "print(sorted(m for m in sys.modules if m == 'dask' or m.startswith(('dask.', 'distributed'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_mlpgrad_dask_without_dask_names_the_extra():
    code = ("import sys\nsys.modules['dask'] = None\nimport mlpgrad\n"
            "try:\n    import mlpgrad.dask\nexcept ImportError as e:\n    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ImportError") and 'pip install "mlpgrad[dask]"' in out


dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import mlpgrad.dask as mdask  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """The cluster of every test here: 2 worker processes, 1 thread and 512 MiB each; the default client."""
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, memory_limit="512MiB",
                                  dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _rows(a, chunks):
    """a (NumPy) as a dask array with the given row chunks and one chunk across the columns."""
    return None if a is None else da.from_array(a, chunks=(chunks,) + tuple((s,) for s in a.shape[1:]))


def _check(got, want, dtype, where):
    err = rel_err(got, want)
    name = np.dtype(dtype).name
    if err > LARGEST.get(name, (-1.0, ""))[0]:
        LARGEST[name] = (err, where)
    assert err <= tol(dtype), f"{where}: rel err {err:.3e}"


CASES = [("softmax", "labels", [6, 5, 4]), ("softmax", "soft", [6, 5, 4]),
         ("sigmoid", "labels", [6, 5, 1]), ("sigmoid", "soft", [6, 7, 5, 3])]
UNEVEN = (37, 100, 1, 62, 0, 99)  # 299 rows, a one-row block and an empty one


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("head,kind,sizes", CASES, ids=[f"{h}-{k}" for h, k, _ in CASES])
def test_equals_in_memory(client, head, kind, sizes, reduction, weighted, dtype):
    n = sum(UNEVEN)
    Ws, bs, X, y = make_problem(sizes, n, head, kind, dtype, seed=1)
    w = np.random.default_rng(2).uniform(0, 3, n) if weighted else None
    loss, g = mlpgrad.loss_and_grad(Ws, bs, X, y, head=head, reduction=reduction, sample_weight=w, input_grad=True)
    for chunks in (UNEVEN, (n,)):
        where = f"{head}-{kind} {reduction} {'weighted ' if weighted else ''}{np.dtype(dtype).name} chunks {chunks}"
        dl, dg = mdask.loss_and_grad(Ws, bs, _rows(X, chunks), _rows(y, chunks), head=head, reduction=reduction,
                                     sample_weight=_rows(w, chunks), input_grad=True)
        assert type(dl) is float
        _check(dl, loss, dtype, where + " loss")
        assert len(dg.weights) == len(Ws) and len(dg.biases) == len(bs)
        for name, got, want in [("dW", a, b) for a, b in zip(dg.weights, g.weights)] + \
                               [("db", a, b) for a, b in zip(dg.biases, g.biases)]:
            assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape
            _check(got, want, dtype, f"{where} {name}")
        assert isinstance(dg.input, da.Array) and dg.input.chunks == (chunks, (sizes[0],))
        dX = dg.input.compute()
        assert dX.dtype == g.input.dtype
        _check(dX, g.input, dtype, where + " dX")
        assert mdask.loss(Ws, bs, _rows(X, chunks), _rows(y, chunks), head=head, reduction=reduction,
                          sample_weight=_rows(w, chunks)) == pytest.approx(loss, rel=tol(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("head,kind,sizes", CASES, ids=[f"{h}-{k}" for h, k, _ in CASES])
def test_objective_curvature_equals_in_memory(client, head, kind, sizes, reduction, dtype):
    """mlpgrad.dask.Objective's hvp and ggn_vp (one vector, and 20: more than one native block of 16 columns) and
    ggn_diag, with sample weights and the penalty: the in-memory Objective's up to the order of the sums, on uneven
    chunks (a one-row and an empty block) and on one chunk; the same bits when repeated."""
    n = sum(UNEVEN)
    Ws, bs, X, y = make_problem(sizes, n, head, kind, dtype, seed=3)
    w = np.random.default_rng(4).uniform(0, 3, n)
    theta = mlpgrad.pack(Ws, bs)
    kw = dict(head=head, reduction=reduction, alpha=0.3)
    obj = mlpgrad.Objective(sizes, X, y, sample_weight=w, **kw)
    V = np.random.default_rng(5).standard_normal((obj.n_params, 20))

    def products(o):
        return {"hvp": o.hvp(theta, V), "ggn_vp": o.ggn_vp(theta, V), "hvp v": o.hvp(theta, V[:, 0]),
                "ggn_vp v": o.ggn_vp(theta, V[:, 0]), "ggn_diag": o.ggn_diag(theta)}

    want = products(obj)
    for chunks in (UNEVEN, (n,)):
        dobj = mdask.Objective(sizes, _rows(X, chunks), _rows(y, chunks), sample_weight=_rows(w, chunks), **kw)
        got = products(dobj)
        for name, a in got.items():
            assert a.dtype == want[name].dtype and a.shape == want[name].shape
            _check(a, want[name], dtype, f"{head}-{kind} {reduction} {np.dtype(dtype).name} chunks {chunks} {name}")
        assert np.array_equal(dobj.ggn_vp(theta, V), got["ggn_vp"])
    np.testing.assert_allclose(dobj.ggn_operator(theta) @ V[:, 0], got["ggn_vp v"])


def test_integer_X_and_label_dtypes_convert_like_in_memory(client):
    """X of integers and labels of uint8 / integral floats are converted on the workers as in memory."""
    Ws, bs, X, y = make_problem([4, 3, 3], 50, "softmax", seed=3)
    Xi = np.round(X * 3).astype(np.int16)
    for labels in (y.astype(np.uint8), y.astype(np.float32)):
        want = mlpgrad.loss_and_grad(Ws, bs, Xi, labels, head="softmax")
        got = mdask.loss_and_grad(Ws, bs, _rows(Xi, (20, 30)), _rows(labels, (20, 30)), head="softmax")
        _check(got[0], want[0], np.float64, "int16 X loss")
        for a, b in zip(got[1].weights + got[1].biases, want[1].weights + want[1].biases):
            _check(a, b, np.float64, "int16 X grads")


def test_empty(client):
    Ws, bs, X, y = make_problem([4, 3, 2], 0, "softmax")
    Xd, yd = da.from_array(X, chunks=(5, 4)), da.from_array(y, chunks=5)
    loss, g = mdask.loss_and_grad(Ws, bs, Xd, yd, head="softmax")
    assert loss == 0.0 and all(not a.any() and a.shape == W.shape for a, W in zip(g.weights, Ws))
    with pytest.raises(ValueError, match=re.escape("reduction='mean' needs a positive total weight: X has no rows")):
        mdask.loss_and_grad(Ws, bs, Xd, yd, head="softmax", reduction="mean")


# ------------------------------------------------------------------ determinism

def _bits(result):
    loss, g = result
    return np.float64(loss).tobytes() + b"".join(a.tobytes() for a in g.weights + g.biases)


def test_bit_identical_across_runs_schedulers_and_threads(client):
    """The same row chunks give the same bits: 5 runs on the cluster (each computed afresh: the scheduler sees
    new tasks), runs with 2 native threads per task, on dask's threaded scheduler (4 threads, tasks finishing in
    another order) and on the synchronous one (one thread, block order)."""
    Ws, bs, X, y = make_problem([30, 40, 10], 5000, "softmax", seed=4)
    w = np.random.default_rng(5).uniform(0, 1, 5000)
    chunks = (700, 1300, 500, 900, 1100, 500)
    Xd, yd, wd = _rows(X, chunks), _rows(y, chunks), _rows(w, chunks)
    Xd, yd, wd = dask.persist(Xd, yd, wd)
    args = (Ws, bs, Xd, yd)
    kw = dict(head="softmax", reduction="mean", sample_weight=wd)
    first = _bits(mdask.loss_and_grad(*args, **kw))
    before = _block_tasks(client)
    for _ in range(4):
        assert _bits(mdask.loss_and_grad(*args, **kw)) == first
    assert _block_tasks(client) - before == 4 * len(chunks)  # each run computed its blocks
    assert _bits(mdask.loss_and_grad(*args, n_threads=2, **kw)) == first
    local = dask.compute(Xd, yd, wd)  # the same data, in local dask arrays
    Xl, yl, wl = (_rows(a, chunks) for a in local)
    for scheduler, extra in (("threads", {"num_workers": 4}), ("sync", {})):
        with dask.config.set(scheduler=scheduler, **extra):
            assert _bits(mdask.loss_and_grad(Ws, bs, Xl, yl, head="softmax", reduction="mean", sample_weight=wl)) \
                == first
    # a different chunking changes only the rounding
    other = mdask.loss_and_grad(Ws, bs, _rows(X, 1000), _rows(y, 1000), **dict(kw, sample_weight=_rows(w, 1000)))
    assert other[0] == pytest.approx(np.frombuffer(first[:8])[0], rel=tol(np.float64))


def _block_tasks(client, name="mlpgrad-block") -> int:
    """How many tasks of prefix name the scheduler has seen finish so far (TaskPrefix.state_counts accumulates the
    number of transitions into each state)."""
    def count(dask_scheduler):
        prefix = dask_scheduler.task_prefixes.get(name)
        return 0 if prefix is None else int(prefix.state_counts["memory"])
    return client.run_on_scheduler(count)


def test_tree_shape_is_fixed(monkeypatch):
    """The reduction adds block results pairwise by block index, ((0 + 1) + (2 + 3)) + 4 for 5 blocks, whatever
    finishes first: the graph is built with stand-ins that return the block index and nest the additions."""
    monkeypatch.setattr(mdask, "_block_sums", lambda params, X, *args: int(X[0, 0]))
    monkeypatch.setattr(mdask, "_add", lambda a, b: (a, b))
    for n_blocks, want in [(1, 0), (2, (0, 1)), (3, ((0, 1), 2)), (5, (((0, 1), (2, 3)), 4)),
                           (6, (((0, 1), (2, 3)), (4, 5)))]:
        Xd = _rows(np.repeat(np.arange(float(n_blocks)), 2)[:, None], 2)
        _, root = mdask._graph([np.ones((1, 1))], [np.zeros(1)], Xd, Xd[:, 0], None, "sigmoid", True, None)
        assert root.compute(scheduler="sync") == want


# ------------------------------------------------------------------ errors

def _in_memory_error(func, *args, **kw):
    with pytest.raises((TypeError, ValueError)) as info:
        func(*args, **kw)
    return info.type, str(info.value)


BAD = {  # name -> (function of (Ws, bs, X, y, w) giving bad in-memory arguments)
    "X columns": lambda Ws, bs, X, y, w: (Ws, bs, X[:, :3], y, w),
    "y rows": lambda Ws, bs, X, y, w: (Ws, bs, X, y[:-1], w),
    "y width": lambda Ws, bs, X, y, w: (Ws, bs, X, np.ones((len(X), 3)), w),
    "sample_weight shape": lambda Ws, bs, X, y, w: (Ws, bs, X, y, w[:-2]),
    "X dtype": lambda Ws, bs, X, y, w: (Ws, bs, X.astype(complex), y, w),
    "y dtype": lambda Ws, bs, X, y, w: (Ws, bs, X, y.astype(complex), w),
    "sample_weight dtype": lambda Ws, bs, X, y, w: (Ws, bs, X, y, w.astype(complex)),
    "mixed weights": lambda Ws, bs, X, y, w: ([Ws[0], Ws[1].astype(np.float32)], bs, X, y, w),
    "weights chain": lambda Ws, bs, X, y, w: ([Ws[0], np.ones((6, 4))], bs, X, y, w),
    "label range": lambda Ws, bs, X, y, w: (Ws, bs, X, np.where(np.arange(len(y)) == 15, 7, y), w),
    "float labels": lambda Ws, bs, X, y, w: (Ws, bs, X, y + 0.5, w),
    "soft targets": lambda Ws, bs, X, y, w: (Ws, bs, X, -np.ones((len(X), 4)), w),
    "negative weight": lambda Ws, bs, X, y, w: (Ws, bs, X, y, np.where(np.arange(len(y)) == 25, -1.0, w)),
    "nan weight": lambda Ws, bs, X, y, w: (Ws, bs, X, y, np.where(np.arange(len(y)) == 3, np.nan, w)),
    "zero weights mean": lambda Ws, bs, X, y, w: (Ws, bs, X, y, 0 * w),
}


@pytest.mark.parametrize("case", list(BAD))
def test_errors_match_in_memory(client, case):
    """The same exception type and message as mlpgrad.loss_and_grad for the same (bad) arguments; element-wise
    errors come from a worker's task and are re-raised on the client."""
    Ws, bs, X, y = make_problem([5, 5, 4], 30, "softmax", seed=6)
    w = np.ones(30)
    args = BAD[case](Ws, bs, X, y, w)
    reduction = "mean" if case == "zero weights mean" else "sum"
    kind, message = _in_memory_error(mlpgrad.loss_and_grad, *args[:4], head="softmax", reduction=reduction,
                                     sample_weight=args[4])
    chunks = (10, 10, 10)
    dargs = [_rows(a, chunks if len(a) == 30 else (len(a),)) for a in args[2:]]
    with pytest.raises(kind) as info:
        mdask.loss_and_grad(*args[:2], *dargs[:2], head="softmax", reduction=reduction, sample_weight=dargs[2])
    assert str(info.value) == message


@pytest.mark.parametrize("labels", ["int64", "float64"])
def test_label_range_is_the_whole_arrays(client, labels):
    """A label out of range in one block is reported with the whole array's range (as in memory), not the
    block's: block 1 holds labels 3..7 (7 out of range), the array 0..7; by loss_and_grad, loss and the Objective,
    for labels scanned natively (int64) and checked in NumPy (float64)."""
    Ws, bs, X, y = make_problem([5, 5, 4], 30, "softmax", seed=6)
    y = y.copy()
    y[10:20], y[15], y[0] = 3, 7, 0
    y = y.astype(labels)
    message = re.escape("y labels must lie in [0, 4), got values in [0, 7]".replace("0, 7", "0.0, 7.0")
                        if labels == "float64" else "y labels must lie in [0, 4), got values in [0, 7]")
    with pytest.raises(ValueError, match=f"^{message}$"):
        mlpgrad.loss_and_grad(Ws, bs, X, y, head="softmax")
    Xd, yd = _rows(X, 10), _rows(y, 10)
    for call in (lambda: mdask.loss_and_grad(Ws, bs, Xd, yd, head="softmax"),
                 lambda: mdask.loss(Ws, bs, Xd, yd, head="softmax"),
                 lambda: mdask.Objective([5, 5, 4], Xd, yd, head="softmax")):
        with pytest.raises(ValueError, match=f"^{message}$"):
            call()


def test_errors_of_the_chunking(client):
    Ws, bs, X, y = make_problem([4, 3, 3], 20, "softmax")
    w = np.ones(20)
    Xd, yd, wd = _rows(X, (10, 10)), _rows(y, (10, 10)), _rows(w, (10, 10))
    call = lambda X=Xd, y=yd, w=wd: mdask.loss_and_grad(Ws, bs, X, y, head="softmax", sample_weight=w)  # noqa: E731
    for name, kw in [("X", dict(X=X)), ("y", dict(y=y)), ("sample_weight", dict(w=w)), ("y", dict(y=list(y)))]:
        with pytest.raises(TypeError, match=rf"^{name} must be a dask array \(dask.array.Array\) chunked along rows"):
            call(**kw)
    with pytest.raises(ValueError, match=r"^X must be chunked along rows only .* got column chunks \(2, 2\)"):
        call(X=da.from_array(X, chunks=(10, 2)))
    with pytest.raises(ValueError, match=r"^y must have the row chunks of X \(10, 10\), got \(5, 5, 5, 5\)"):
        call(y=_rows(y, 5))
    with pytest.raises(ValueError, match=r"^sample_weight must have the row chunks of X \(10, 10\), got \(20,\)"):
        call(w=_rows(w, (20,)))
    Y = np.eye(3)[y]
    with pytest.raises(ValueError, match=r"^y must be chunked along rows only"):
        call(y=da.from_array(Y, chunks=(10, 2)))
    with pytest.raises(ValueError, match=r"^X must have known row chunk sizes, got \(nan, nan\)"):
        call(X=Xd[Xd[:, 0] > -np.inf])
    with pytest.raises(ValueError, match=r"^X must be 2-D \(N, d_0\), got 1-D dask array"):
        call(X=Xd[:, 0])
    # rechunked consistently: accepted, the same result up to rounding
    a = call()
    b = call(X=Xd.rechunk({0: 7}), y=yd.rechunk(7), w=wd.rechunk(7))
    assert b[0] == pytest.approx(a[0], rel=tol(np.float64))
    for bad, kind in [(dict(head="tanh"), ValueError), (dict(reduction="max"), ValueError),
                      (dict(n_threads=0), ValueError), (dict(n_threads=1.5), TypeError),
                      (dict(input_grad=1), TypeError)]:
        kw = {"head": "softmax", **bad}
        want = _in_memory_error(mlpgrad.loss_and_grad, Ws, bs, X, y, **kw)
        with pytest.raises(kind) as info:
            mdask.loss_and_grad(Ws, bs, Xd, yd, **kw)
        assert (info.type, str(info.value)) == want


def test_caller_arrays_unchanged_and_parameters_copied(client):
    Ws, bs, X, y = make_problem([5, 4, 1], 40, "sigmoid", "soft")
    w = np.random.default_rng(0).uniform(0, 1, 40)
    before = [a.copy() for a in Ws + bs + [X, y, w]]
    loss, g = mdask.loss_and_grad(Ws, bs, _rows(X, 15), _rows(y, 15), head="sigmoid", reduction="mean",
                                  sample_weight=_rows(w, 15), input_grad=True)
    for a, b in zip(Ws + bs + [X, y, w], before):
        assert np.array_equal(a, b)
    want = mlpgrad.loss_and_grad(Ws, bs, X, y, head="sigmoid", reduction="mean", sample_weight=w, input_grad=True)
    Ws[0] += 1.0  # the lazy dL/dX was taken at the parameters of the call
    _check(g.input.compute(), want[1].input, np.float64, "dX after the caller changed weights[0]")


# ------------------------------------------------------------------ threads

def test_worker_thread_budget(client):
    """n_threads=None: one thread per task on a worker (each of the worker's nthreads runs one task), and on
    dask's threaded scheduler; OpenMP's setting (None) on the synchronous scheduler; n_threads passes through."""
    assert set(client.run(lambda: mdask._task_threads(None)).values()) == {1}
    assert client.submit(mdask._task_threads, None, pure=False).result() == 1
    assert client.submit(mdask._task_threads, 3, pure=False).result() == 3
    task = dask.delayed(mdask._task_threads, pure=False)(None)
    assert task.compute(scheduler="threads") == 1
    assert task.compute(scheduler="sync") is None
    assert all(info["nthreads"] == 1 for info in client.scheduler_info()["workers"].values())


def test_runs_on_the_cluster(client):
    """The tasks run on the workers (not on the client): the scheduler has seen them."""
    Ws, bs, X, y = make_problem([4, 3, 2], 60, "softmax")
    before = _block_tasks(client)
    mdask.loss(Ws, bs, _rows(X, 20), _rows(y, 20), head="softmax")
    assert _block_tasks(client) - before == 3


# ------------------------------------------------------------------ the estimator

def _classification(kind, n=300, d=8):
    from sklearn.datasets import make_classification, make_multilabel_classification
    if kind == "multilabel":
        X, y = make_multilabel_classification(n, d, n_classes=3, random_state=0)
        return X / X.max(), y
    return make_classification(n, d, n_informative=5, n_classes={"binary": 2, "multiclass": 4}[kind],
                               random_state=0)


def _max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_lbfgs_fit_on_cluster_matches_in_memory(client, kind, weighted):
    """Float64, 10 L-BFGS iterations: the parameters agree to 1e-10 absolute and the final loss to 1e-12 relative
    (observed: up to 3e-12 and 7e-14; the line searches amplify the rounding of the other summation order)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification(kind)
    w = np.random.default_rng(1).uniform(0.1, 2, len(y)) if weighted else None
    kw = dict(hidden_layer_sizes=(12, 7), max_iter=10, random_state=3, solver="lbfgs")
    a = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    chunks = (70, 90, 80, 60)
    b = MLPClassifier(**kw).fit(_rows(X, chunks), _rows(y, chunks), sample_weight=_rows(w, chunks))
    assert b.n_iter_ == a.n_iter_ and b.out_activation_ == a.out_activation_
    np.testing.assert_array_equal(b.classes_, a.classes_)
    assert b.n_features_in_ == a.n_features_in_ and b.coefs_[0].dtype == np.float64
    assert _max_diff(a, b) <= tol(np.float64, "optimizer")
    assert b.loss_ == pytest.approx(a.loss_, rel=tol(np.float64))
    np.testing.assert_array_equal(b.predict(X), a.predict(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("chunks", [(300,), (70, 90, 80, 60)], ids=["one-block", "uneven"])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_newton_cg_fit_on_cluster_matches_in_memory(client, kind, chunks):
    """newton-cg, float64, 6 outer iterations with sample weights: the Gauss-Newton products and gradients from the
    cluster give the in-memory fit's iterates, to the optimizer's bound (the line searches and conjugate gradients
    amplify the rounding of the other summation order)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification(kind)
    w = np.random.default_rng(1).uniform(0.1, 2, len(y))
    kw = dict(hidden_layer_sizes=(12, 7), max_iter=6, random_state=3, solver="newton-cg")
    a = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    b = MLPClassifier(**kw).fit(_rows(X, chunks), _rows(y, chunks), sample_weight=_rows(w, chunks))
    assert b.n_iter_ == a.n_iter_ == len(b.loss_curve_)
    assert _max_diff(a, b) <= tol(np.float64, "optimizer")
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=tol(np.float64))
    np.testing.assert_array_equal(b.predict(X), a.predict(X))


def test_lbfgs_fit_persists_the_data(client, tmp_path):
    """Every block of X is produced once in a fit of many iterations (persisted on the workers), not once per
    iteration: each production of a block appends a line to a file."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification("binary")
    log = tmp_path / "blocks.log"
    Xd = _rows(X, 100).map_blocks(_logged, str(log), dtype=X.dtype)
    est = MLPClassifier((5,), solver="lbfgs", max_iter=15, random_state=0, tol=0.0)
    from sklearn.exceptions import ConvergenceWarning
    with pytest.warns(ConvergenceWarning):  # max_iter reached, on purpose
        est.fit(Xd, _rows(y, 100))
    assert est.n_iter_ == 15
    assert sorted(log.read_text().split()) == ["0", "1", "2"]


def _logged(block, path, block_info=None):
    with open(path, "a") as f:
        f.write(f"{block_info[0]['chunk-location'][0]}\n")
    return block


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_partial_fit_over_blocks(client, kind, solver):
    """partial_fit on dask arrays = partial_fit on each row block in order, bit for bit (the same code)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification(kind)
    w = np.random.default_rng(2).uniform(0.1, 2, len(y))
    classes = np.unique(y) if kind == "multiclass" else np.arange(y.shape[1])
    chunks = (70, 90, 80, 60)
    kw = dict(hidden_layer_sizes=(12,), random_state=3, solver=solver, batch_size=32)
    a, b = MLPClassifier(**kw), MLPClassifier(**kw)
    Xd, yd, wd = dask.persist(_rows(X, chunks), _rows(y, chunks), _rows(w, chunks))
    for _ in range(2):  # epochs
        start = 0
        for c in chunks:
            a.partial_fit(X[start:start + c], y[start:start + c], sample_weight=w[start:start + c], classes=classes)
            start += c
        b.partial_fit(Xd, yd, sample_weight=wd, classes=classes)
    assert _max_diff(a, b) == 0.0
    assert b.loss_curve_ == a.loss_curve_ and len(b.loss_curve_) == 2 * len(chunks)
    assert b.t_ == a.t_ == 2 * len(y)


STOCHASTIC = [("adam", "multiclass", dict()), ("sgd", "multilabel", dict(learning_rate="invscaling"))]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("solver,kind,extra", STOCHASTIC, ids=[f"{s}-{k}" for s, k, _ in STOCHASTIC])
def test_stochastic_fit_one_block_equals_in_memory(client, solver, kind, extra):
    """adam / sgd fit on one row block, with sample weights: the in-memory fit's steps (the same native epoch, the
    same draws from random_state), so the same parameters and loss curve, bit for bit."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification(kind)
    w = np.random.default_rng(2).uniform(0.1, 2, len(y))
    kw = dict(hidden_layer_sizes=(12,), random_state=3, solver=solver, batch_size=32, max_iter=4, **extra)
    a = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    b = MLPClassifier(**kw).fit(_rows(X, len(y)), _rows(y, len(y)), sample_weight=_rows(w, len(y)))
    assert b.n_iter_ == a.n_iter_ == 4 and b.t_ == a.t_
    assert b.loss_curve_ == a.loss_curve_
    assert _max_diff(a, b) == 0.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
def test_stochastic_fit_over_blocks(client):
    """adam on uneven blocks (one of them empty): one training task per non-empty block and epoch, on the cluster;
    the loss decreases; the same random_state gives the same fit, another one another fit (the block order and
    the rows' order are drawn from it)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification("multiclass")
    chunks = (70, 90, 0, 80, 60)
    Xd, yd = dask.persist(_rows(X, chunks), _rows(y, chunks))
    kw = dict(hidden_layer_sizes=(12,), solver="adam", batch_size=32, max_iter=5, learning_rate_init=0.01)
    before = _block_tasks(client, "mlpgrad-train")
    a = MLPClassifier(random_state=3, **kw).fit(Xd, yd)
    assert _block_tasks(client, "mlpgrad-train") - before == 5 * 4
    assert a.n_iter_ == 5 and a.t_ == 5 * len(y)
    assert np.all(np.diff(a.loss_curve_) < 0), a.loss_curve_
    b = MLPClassifier(random_state=3, **kw).fit(Xd, yd)
    assert b.loss_curve_ == a.loss_curve_ and _max_diff(a, b) == 0.0
    c = MLPClassifier(random_state=4, **kw).fit(Xd, yd)
    assert _max_diff(a, c) > 0.0
    assert a.score(Xd, yd) == pytest.approx(a.score(X, y), abs=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_predict_and_score_on_the_workers(client, kind):
    """predict, predict_proba and predict_log_proba of a dask array: lazy dask arrays with X's row chunks (an empty
    block included), one task per block on the cluster, equal to the in-memory results, and taken at the parameters
    of the call (a later fit does not change them); score: a float, the in-memory score (with sample weights)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification(kind)
    w = np.random.default_rng(2).uniform(0.1, 2, len(y))
    est = MLPClassifier((6,), solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    chunks = (100, 0, 200)
    Xd, yd, wd = _rows(X, chunks), _rows(y, chunks), _rows(w, chunks)
    lazy = {m: getattr(est, m)(Xd) for m in ("predict", "predict_proba", "predict_log_proba")}
    want = {m: getattr(est, m)(X) for m in lazy}
    score = est.score(Xd, yd, sample_weight=wd)
    assert type(score) is float and score == pytest.approx(est.score(X, y, sample_weight=w), abs=1e-12)
    est.fit(X[::-1], y[::-1])  # other parameters: the lazy results keep the earlier ones
    before = _block_tasks(client, "mlpgrad-predict")
    for method, result in lazy.items():
        assert isinstance(result, da.Array) and result.chunks[0] == chunks
        got = result.compute()
        assert got.dtype == want[method].dtype and got.shape == want[method].shape
        np.testing.assert_array_equal(got, want[method])
    assert _block_tasks(client, "mlpgrad-predict") - before == 3 * len(chunks)


def test_estimator_errors_on_dask(client):
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier
    X, y = _classification("binary", n=40)
    Xd, yd = _rows(X, 20), _rows(y, 20)
    with pytest.raises(ValueError, match=r"^early_stopping=True is not supported by fit on dask arrays"):
        MLPClassifier(early_stopping=True).fit(Xd, yd)
    with pytest.raises(ValueError, match=r"^y must have the row chunks of X"):
        MLPClassifier(solver="lbfgs").fit(Xd, _rows(y, 10))
    with pytest.raises(TypeError, match=r"^y must be a dask array"):
        MLPClassifier(solver="lbfgs").fit(Xd, y)
    with pytest.raises(TypeError, match=r"^X must be a dask array"):
        MLPClassifier().partial_fit(X, yd, classes=[0, 1])
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        MLPClassifier().partial_fit(Xd, yd)
    Xn = X.copy()
    Xn[33, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        MLPClassifier(solver="lbfgs").fit(_rows(Xn, 20), yd)


# ------------------------------------------------------------------ MLPRegressor

def _regression(k, n=300, d=8):
    """make_regression's data with k outputs ((n,) for k = 1), scaled to unit spread."""
    from sklearn.datasets import make_regression
    X, y = make_regression(n, d, n_targets=k, n_informative=5, noise=0.1, random_state=0)
    return X, y / np.std(y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
def test_regressor_full_batch_fit_on_cluster_matches_in_memory(client, k, solver):
    """MLPRegressor, float64, with sample weights, on uneven chunks (an empty block included): 8 L-BFGS or 4
    newton-cg iterations on the cluster give the in-memory fit's iterates and reported losses (for 3 outputs
    scikit-learn's, the squared error averaged over them), to the optimizer's bound."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPRegressor
    X, y = _regression(k)
    w = np.random.default_rng(1).uniform(0.1, 2, len(X))
    kw = dict(hidden_layer_sizes=(12, 7), max_iter=8 if solver == "lbfgs" else 4, random_state=3, solver=solver,
              alpha=0.01)
    a = MLPRegressor(**kw).fit(X, y, sample_weight=w)
    chunks = (70, 90, 0, 80, 60)
    b = MLPRegressor(**kw).fit(_rows(X, chunks), _rows(y, chunks), sample_weight=_rows(w, chunks))
    assert b.n_iter_ == a.n_iter_ and b.n_outputs_ == a.n_outputs_ == k and b.out_activation_ == "identity"
    assert _max_diff(a, b) <= tol(np.float64, "optimizer")
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=tol(np.float64))
    np.testing.assert_allclose(b.predict(X), a.predict(X), atol=tol(np.float64, "optimizer"))


REGRESSOR_STOCHASTIC = [("adam", 1, dict()), ("sgd", 3, dict(alpha=0.0, learning_rate="invscaling")),
                        ("adam", 3, dict(alpha=0.3))]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("solver,k,extra", REGRESSOR_STOCHASTIC, ids=[f"{s}-{k}" for s, k, _ in REGRESSOR_STOCHASTIC])
def test_regressor_stochastic_fit_one_block_equals_in_memory(client, solver, k, extra):
    """adam / sgd fit of MLPRegressor on one row block, with sample weights: the in-memory fit, bit for bit; over
    uneven blocks, the reported loss decreases (for 3 outputs the data loss scaled by 1/3, the penalty not)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPRegressor
    X, y = _regression(k)
    w = np.random.default_rng(2).uniform(0.1, 2, len(X))
    kw = dict(hidden_layer_sizes=(12,), random_state=3, solver=solver, batch_size=32, max_iter=4,
              learning_rate_init=0.01, **extra)
    a = MLPRegressor(**kw).fit(X, y, sample_weight=w)
    b = MLPRegressor(**kw).fit(_rows(X, len(X)), _rows(y, len(X)), sample_weight=_rows(w, len(X)))
    assert b.n_iter_ == a.n_iter_ == 4 and b.t_ == a.t_
    assert b.loss_curve_ == a.loss_curve_
    assert _max_diff(a, b) == 0.0
    c = MLPRegressor(**kw).fit(_rows(X, (70, 90, 0, 80, 60)), _rows(y, (70, 90, 0, 80, 60)))
    assert np.all(np.diff(c.loss_curve_) < 0), c.loss_curve_


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_regressor_partial_fit_over_blocks(client, solver):
    """MLPRegressor.partial_fit on dask arrays = partial_fit on each row block in order, bit for bit (3 outputs,
    alpha > 0: the per-mini-batch epochs, on the client)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPRegressor
    X, y = _regression(3)
    chunks = (70, 90, 80, 60)
    kw = dict(hidden_layer_sizes=(12,), random_state=3, solver=solver, batch_size=32)
    a, b = MLPRegressor(**kw), MLPRegressor(**kw)
    Xd, yd = dask.persist(_rows(X, chunks), _rows(y, chunks))
    start = 0
    for c in chunks:
        a.partial_fit(X[start:start + c], y[start:start + c])
        start += c
    b.partial_fit(Xd, yd)
    assert _max_diff(a, b) == 0.0 and b.loss_curve_ == a.loss_curve_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
def test_regressor_predict_and_score_on_the_workers(client, k):
    """MLPRegressor.predict of a dask array: a lazy dask array with X's row chunks (an empty block included),
    (n,) for one output, equal to the in-memory predictions; score: a float, the in-memory R^2 (sklearn's
    r2_score, with sample weights) up to the order of the sums, from the blocks' sums merged on the cluster."""
    pytest.importorskip("sklearn")
    from sklearn.metrics import r2_score

    from mlpgrad import MLPRegressor
    X, y = _regression(k)
    w = np.random.default_rng(2).uniform(0.1, 2, len(X))
    est = MLPRegressor(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    chunks = (100, 0, 1, 199)
    Xd, yd, wd = _rows(X, chunks), _rows(y, chunks), _rows(w, chunks)
    lazy = est.predict(Xd)
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == chunks and lazy.shape == y.shape
    np.testing.assert_array_equal(lazy.compute(), est.predict(X))
    for weights, wdask in ((None, None), (w, wd)):
        score = est.score(Xd, yd, sample_weight=wdask)
        assert type(score) is float
        assert score == pytest.approx(r2_score(y, est.predict(X), sample_weight=weights), rel=1e-12)
    constant = np.full_like(y, 1.5)
    assert est.score(Xd, _rows(constant, chunks)) == r2_score(constant, est.predict(X)) == 0.0  # no spread


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
def test_regressor_errors_on_dask(client):
    pytest.importorskip("sklearn")
    from mlpgrad import MLPRegressor
    X, y = _regression(3, n=40)
    Xd, yd = _rows(X, 20), _rows(y, 20)
    with pytest.raises(ValueError, match=r"^early_stopping=True is not supported by fit on dask arrays"):
        MLPRegressor(early_stopping=True).fit(Xd, yd)
    yn = y.copy()
    yn[13, 1] = np.inf
    with pytest.raises(ValueError, match="y must be finite"):
        MLPRegressor(solver="lbfgs").fit(Xd, _rows(yn, 20))
    with pytest.raises(ValueError, match="y must hold real numbers"):
        MLPRegressor(solver="lbfgs").fit(Xd, _rows(np.array(["a"] * 40), 20))
    est = MLPRegressor(solver="lbfgs", warm_start=True, max_iter=2).fit(Xd, yd)
    with pytest.raises(ValueError, match=r"y has 1 output\(s\), but MLPRegressor was fitted with 3"):
        est.fit(Xd, _rows(y[:, 0], 20))


# ------------------------------------------------------------------ the benchmark and the README

def test_bench_dask_quick(client, capsys):
    from mlpgrad import cli
    assert cli.main(["bench-dask", "--quick", "--workers", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "| workers | rows | data |" in out
    assert re.search(r"^\| 1 \| 40,000 \|", out, re.M) and re.search(r"^\| 2 \| 40,000 \|", out, re.M)
    assert "bit-identical loss and gradients: yes" in out
    assert "scaling 2 workers vs 1:" in out
    assert distributed.default_client() is client  # the bench's own clusters left the default client alone


def test_bench_dask_help():
    out = subprocess.run([sys.executable, "-m", "mlpgrad", "bench-dask", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--quick" in out and "--memory-limit" in out


def test_readme_dask_example_runs():
    """The README's Dask example, in a fresh interpreter (it starts and closes its own cluster), checked
    against the in-memory API."""
    pytest.importorskip("sklearn")
    text = README.read_text()
    section = text[text.index("## Scale out with Dask"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    check = textwrap.dedent("""
        Xn, yn = dask.compute(X, y)
        ref_loss, ref_grads = mlpgrad.loss_and_grad(net.weights, net.biases, Xn, yn, head="softmax", reduction="mean")
        assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss), (loss, ref_loss)
        assert max(np.max(np.abs(a - b)) / np.max(np.abs(b)) for a, b in zip(grads.weights, ref_grads.weights)) <= 1e-12
        assert est.n_iter_ >= 1
        print("README example OK")
    """)
    code = block.replace("client.close()", check + "client.close()")
    env = dict(os.environ, PYTHONWARNINGS="ignore::UserWarning")  # ConvergenceWarning (max_iter=20) is fine here
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "README example OK" in out.stdout


# ------------------------------------------------------------------ input_gradient, sparse row blocks

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "regression-1", "regression-3"])
def test_input_gradient_on_the_workers(client, kind):
    """input_gradient of dask arrays: a lazy dask array (n, d) with X's row chunks (an empty block included), one
    task per block, equal to the in-memory result (each row's gradient is its own); a bad label raises on compute."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier, MLPRegressor
    if kind.startswith("regression"):
        X, y = _regression(int(kind[-1]))
        est = MLPRegressor(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    else:
        X, y = _classification(kind)
        est = MLPClassifier((6,), solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    chunks = (100, 0, 1, 199)
    before = _block_tasks(client, "mlpgrad-input-gradient")
    lazy = est.input_gradient(_rows(X, chunks), _rows(y, chunks))
    assert isinstance(lazy, da.Array) and lazy.chunks == (chunks, (X.shape[1],))
    got, want = lazy.compute(), est.input_gradient(X, y)
    assert got.dtype == want.dtype == np.float64 and not np.all(want == 0)
    np.testing.assert_array_equal(got, want)
    assert _block_tasks(client, "mlpgrad-input-gradient") - before == len(chunks)
    if kind == "multiclass":
        bad = y.copy()
        bad[150] = 7
        lazy = est.input_gradient(_rows(X, chunks), _rows(bad, chunks))
        with pytest.raises(ValueError, match="has classes not in `self.classes_`"):
            lazy.compute()


def _sparse_rows(a, chunks):
    """a as a dask array of the given row chunks whose blocks are scipy.sparse CSR matrices."""
    import scipy.sparse
    return _rows(a, chunks).map_blocks(scipy.sparse.csr_matrix)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter is small on purpose
def test_sparse_row_blocks_equal_dense_ones(client):
    """X as a dask array of scipy.sparse CSR row blocks (an empty block included), float64: mlpgrad.dask's
    loss_and_grad (dL/dX dense), the Objective's loss, gradient and curvature products, and both estimators' fits
    (lbfgs, adam), predictions, scores and input gradients equal those of the same X in dense blocks, to float64's
    bound (the fits to the optimizer's)."""
    pytest.importorskip("sklearn")
    from mlpgrad import MLPClassifier, MLPRegressor
    X, y = _classification("multiclass")
    X = np.where(np.abs(X) < 1.5, 0.0, X)  # about 60% zeros
    chunks = (100, 0, 1, 199)
    Xs, Xd, yd = _sparse_rows(X, chunks), _rows(X, chunks), _rows(y, chunks)
    assert np.mean(X == 0) > 0.5 and type(Xs.blocks[0].compute()).__name__ == "csr_matrix"
    where = "sparse row blocks"

    net = mlpgrad.MLP([X.shape[1], 5, 4], head="softmax", dtype=np.float64, seed=0)
    a, b = (mdask.loss_and_grad(net.weights, net.biases, A, yd, head="softmax", input_grad=True) for A in (Xs, Xd))
    _check(a[0], b[0], np.float64, f"{where} loss")
    for got, want in zip(a[1].weights + a[1].biases, b[1].weights + b[1].biases):
        _check(got, want, np.float64, f"{where} gradients")
    dX = a[1].input.compute()
    assert type(dX) is np.ndarray
    _check(dX, b[1].input.compute(), np.float64, f"{where} dX")

    objs = [mdask.Objective(net.layer_sizes, A, yd, head="softmax", alpha=0.1) for A in (Xs, Xd)]
    theta = mlpgrad.pack(net.weights, net.biases)
    V = np.random.default_rng(1).standard_normal((theta.size, 3))
    for name in ("loss_and_grad", "hvp", "ggn_vp", "ggn_diag"):
        args = (theta, V) if name in ("hvp", "ggn_vp") else (theta,)
        got, want = (getattr(o, name)(*args) for o in objs)
        _check(np.hstack(got) if name == "loss_and_grad" else got,
               np.hstack(want) if name == "loss_and_grad" else want, np.float64, f"{where} Objective.{name}")

    for solver, max_iter in (("lbfgs", 5), ("adam", 3)):
        kw = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=max_iter, random_state=0)
        ests = [MLPClassifier(**kw).fit(A, yd) for A in (Xs, Xd)]
        assert _max_diff(*ests) <= tol(np.float64, "optimizer")
        np.testing.assert_allclose(ests[0].predict_proba(Xs).compute(), ests[1].predict_proba(Xd).compute(),
                                   rtol=0, atol=1e-10)
        assert ests[0].score(Xs, yd) == ests[1].score(Xd, yd)
        np.testing.assert_allclose(ests[0].input_gradient(Xs, yd).compute(),
                                   ests[1].input_gradient(Xd, yd).compute(), rtol=0, atol=1e-10)
    t = _rows(np.asarray(X @ np.arange(X.shape[1]) / X.shape[1]), chunks)
    regs = [MLPRegressor(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=5, random_state=0).fit(A, t)
            for A in (Xs, Xd)]
    assert _max_diff(*regs) <= tol(np.float64, "optimizer")
    assert regs[0].score(Xs, t) == pytest.approx(regs[1].score(Xd, t), rel=1e-10)
