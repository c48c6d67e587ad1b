"""``MLPClassifier`` and ``MLPRegressor`` on dask arrays chunked along rows (called by ``mlpgrad.estimator``).

``fit`` (solvers "lbfgs" and "newton-cg"): the in-memory fit (``_BaseMLP._fit``) with ``OnDask`` as the data's
side. The objective is an :class:`mlpgrad.dask.Objective`: before the first iteration every row block of X (cast
to the parameters' dtype), of the targets (binarized labels, or the regression values cast) and of the sample
weights is bound on its worker (converted, scanned, kept there), so every evaluation reads it from the workers'
memory, not from its source; each evaluation (and each Gauss-Newton product of newton-cg) is one task per block
and a fixed reduction tree, scipy's optimizer runs on the client. The blocks are released when ``fit`` returns.
The classifier's classes come from one pass over y (``dask.array.unique``); the regressor's number of outputs
from y's shape. The steps are the in-memory fit's, up to the order of the sums (tests/test_dask.py compares the
two).

``fit`` (solvers "adam" and "sgd"): epochs over the same bound blocks (``Epochs``). Each epoch visits the non-empty
blocks in an order drawn from ``random_state`` (with ``shuffle=True``, else in order) and runs the in-memory epoch on
each block, on its worker: mini-batches of ``batch_size`` rows within the block (the block's last one shorter), its
rows reshuffled from the same random state. The parameters, the optimizer's state and the random state go from
block to block (one task per block, each waiting for the one before); the data never leave their workers. The
stopping rules, the loss curve and the learning-rate schedules are the in-memory loop's, per epoch. On one block
this is the in-memory fit step for step. ``early_stopping=True`` is refused (no held-out split of dask arrays).

``partial_fit``: the same as calling ``partial_fit`` on each row block in order (blocks with no rows are
skipped). Mini-batch steps are sequential, so they run on the client: each block is fetched from the workers
(the next one while the current one trains, so at most two blocks are in the client's memory) and trained on
with the in-memory code. Persist X and y (``dask.persist``) before calling it once per epoch.

``predict``, ``predict_proba``, ``predict_log_proba``: lazy dask arrays with X's row chunks, one task per block
running the in-memory method on a snapshot of the fitted estimator; ``input_gradient`` the same over the blocks of
X and y. ``score``: a Python float, one task per block (the classifier's: its weighted count of correct
predictions; the regressor's: its sums of R^2), the blocks' results combined on the cluster.

Only this module's functions import dask, and only when called: ``is_dask_array`` looks at ``sys.modules``
(no dask array can exist before ``dask.array`` is imported).
"""

from __future__ import annotations

import copy
import sys
import time
import uuid
import warnings

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["is_dask_array", "OnDask", "Epochs", "partial_fit", "predict", "score", "input_gradient"]


def is_dask_array(*objs) -> bool:
    """Whether any of objs is a dask array, without importing dask."""
    mod = sys.modules.get("dask.array")
    return mod is not None and any(isinstance(obj, mod.Array) for obj in objs)


_HINT = "pass X, y and sample_weight all as dask arrays with the same row chunks, or all in memory"


def _check_X(est, X, reset):
    """X's type, shape and chunks (the rules of mlpgrad.dask); returns X."""
    from . import dask as mdask

    X = mdask._as_dask(X, "X", _HINT)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must be a real array (bool, integer or floating), got dtype {X.dtype}")
    mdask._check_ndim(X, (2,), "X", "2-D (n_samples, n_features)")
    mdask._check_chunks(X, "X")
    n, d = X.shape
    if n == 0 or d == 0:
        raise ValueError(f"Found array with shape {X.shape} while at least 1 sample and 1 feature are required "
                         f"by {type(est).__name__}.")
    if not reset and d != est.n_features_in_:
        raise ValueError(f"X has {d} features, but {type(est).__name__} is expecting {est.n_features_in_} features "
                         "as input.")
    return X


def _check_data(est, X, y, sample_weight, reset):
    """Types, shapes and chunks of X, y and sample_weight; returns (X, y, sample_weight, n, d)."""
    from . import dask as mdask

    X = _check_X(est, X, reset)
    n, d = X.shape
    y = mdask._as_dask(y, "y", _HINT)
    mdask._check_ndim(y, (1, 2), "y", "1-D (n_samples,) or 2-D (n_samples, n_outputs)")
    mdask._check_chunks(y, "y", X.chunks[0])
    if sample_weight is not None:
        sample_weight = mdask._as_dask(sample_weight, "sample_weight", _HINT)
        if sample_weight.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be a real array, got dtype {sample_weight.dtype}")
        mdask._check_ndim(sample_weight, (1,), "sample_weight", f"1-D ({n},)")
        mdask._check_chunks(sample_weight, "sample_weight", X.chunks[0])
    return X, y, sample_weight, n, d


def _targets_block(yb, binarizer, softmax, dtype):
    """One block of targets as the core takes them (MLPClassifier._validate_input, then _targets)."""
    if yb.shape[0] == 0:  # scikit-learn refuses empty input: a stand-in row's targets, without the row
        standin = binarizer.classes_[:1] if yb.ndim == 1 else np.zeros((1,) + yb.shape[1:], yb.dtype)
        return _targets_block(standin, binarizer, softmax, dtype)[:0]
    Y = binarizer.transform(yb).astype(bool)
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if softmax:
        return np.argmax(Y, axis=1).astype(np.int64)
    return np.ascontiguousarray(Y, dtype=dtype)


class _Classes:
    """MLPClassifier's targets on dask arrays: the classes from one pass over y (``dask.array.unique``), the label
    binarizer fitted on a stand-in with y's distinct values and y's width; each block binarized on its worker."""

    def __init__(self, est, y):
        import dask.array as da
        from sklearn.preprocessing import LabelBinarizer
        from sklearn.utils.multiclass import unique_labels

        values = da.unique(y).compute()
        if values.dtype.kind == "f" and np.isnan(values).any():
            raise ValueError("Input y contains NaN.")
        standin = values if y.ndim == 1 else np.repeat(values[:, None], y.shape[1], axis=1)
        if not hasattr(est, "classes_") or not est.warm_start:
            est._label_binarizer = LabelBinarizer().fit(standin)
            est.classes_ = est._label_binarizer.classes_
        elif set(unique_labels(standin)) != set(est.classes_):
            raise ValueError("warm_start can only be used where `y` has the same classes as in the previous call to "
                             f"fit. Previously got {est.classes_}, `y` has {unique_labels(standin)}")
        est.n_outputs_ = est._label_binarizer.transform(standin[:1]).reshape(1, -1).shape[1]

    @staticmethod
    def blocks(est, y, dtype):
        """y's blocks as the core takes them, a dask array with y's row chunks."""
        k = est.n_outputs_
        if est.out_activation_ == "softmax":
            return y.map_blocks(_targets_block, est._label_binarizer, True, dtype, dtype=np.int64)
        if y.ndim == 1:
            return y.map_blocks(_targets_block, est._label_binarizer, False, dtype, dtype=dtype, new_axis=1,
                                chunks=(y.chunks[0], (k,)))
        return y.map_blocks(_targets_block, est._label_binarizer, False, dtype, dtype=dtype)


class _Values:
    """MLPRegressor's targets on dask arrays: real values, their width the number of outputs (which must be the
    fitted one's when a fit continues); each block cast on its worker, where binding it checks that it is finite
    (the core's scan)."""

    def __init__(self, est, y, first_pass):
        est._check_real(y.dtype)
        k = 1 if y.ndim == 1 else y.shape[1]
        if not first_pass:
            est._check_n_outputs(k)
        est.n_outputs_ = k

    @staticmethod
    def blocks(est, y, dtype):
        if y.ndim == 1:
            return y.map_blocks(_values_block, dtype, dtype=dtype, new_axis=1, chunks=(y.chunks[0], (1,)))
        return y.map_blocks(_values_block, dtype, dtype=dtype)


def _values_block(yb, dtype):
    """One block of regression targets as the core takes them: (n, k) C-ordered in the parameters' dtype."""
    return np.ascontiguousarray(yb[:, None] if yb.ndim == 1 else yb, dtype=dtype)


class OnDask:
    """The data's side of ``fit`` on dask arrays (_BaseMLP._fit does the rest): the checks, the targets
    (``_Classes`` or ``_Values``), and the objective as an ``mlpgrad.dask.Objective``, whose bound blocks live
    on the workers until the fit ends: the full-batch solvers evaluate it, adam and sgd train on its blocks
    (``Epochs``)."""

    def __init__(self, est, X, y, sample_weight, first_pass):
        from sklearn.base import is_classifier
        from sklearn.exceptions import DataConversionWarning

        if est.solver in ("adam", "sgd") and est.early_stopping:
            raise ValueError(f"early_stopping=True is not supported by fit on dask arrays (solver={est.solver!r}): "
                             "hold out a validation set yourself and call score on it")
        X, y, sample_weight, n, d = _check_data(est, X, y, sample_weight, reset=first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
                          "(n_samples, ), for example using ravel().", DataConversionWarning, stacklevel=4)
            y = y[:, 0]
        self.targets = _Classes(est, y) if is_classifier(est) else _Values(est, y, first_pass)
        if first_pass:
            est.n_features_in_ = d
        self.est, self.X, self.y, self.sample_weight = est, X, y, sample_weight
        self.n_features, self.dtype = d, X.dtype
        self._objective = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._objective = None  # releases the bound blocks on the workers
        return False

    def objective(self):
        """The fit's objective (scikit-learn's: mean loss, penalty alpha / 2 ||W||^2 / total weight)."""
        from . import dask as mdask

        est = self.est
        dtype = est._flat.dtype
        T = self.targets.blocks(est, self.y, dtype)
        obj = mdask.Objective(est._layer_units(), self.X, T, head=est._head(), reduction="mean",
                              sample_weight=self.sample_weight, dtype=dtype, n_threads=est.n_threads)
        if not obj._x_finite:
            raise ValueError("Input X contains NaN or infinity.")
        obj.alpha = est.alpha / obj.total_weight  # scikit-learn's penalty, divided by the total weight
        self._objective = obj
        return obj

    def epochs(self):
        """adam / sgd's epochs over the objective's bound blocks (no validation set: early_stopping is refused)."""
        return Epochs(self.est, self.objective(), self.X.chunks[0]), None


class Epochs:
    """adam / sgd's epochs over the row blocks bound on the workers (_BaseMLP._fit_stochastic runs them, as it runs
    the in-memory _Epochs). An epoch visits the blocks in an order drawn from the estimator's random
    state (``shuffle=True``; else in order), and on each block runs the in-memory epoch (``estimator._epoch``:
    one native train_epoch call, mini-batches within the block, its rows reshuffled as in memory) on the block's
    worker. The steps are sequential, so the parameters, the optimizer's state and the random state travel from
    block to block (one task per block, each depending on the last); the data stay where they are, and so does
    each block's row order between epochs. With one block this is the in-memory fit, step for step."""

    def __init__(self, est, objective, row_chunks):
        self.est, self.objective, self.n_samples = est, objective, objective.n_samples
        self.sizes = est._layer_units()
        self.nonempty = np.array([i for i, rows in enumerate(row_chunks) if rows], dtype=np.int64)
        self.orders = {}  # block -> its last row order (a Delayed kept on its worker), with shuffle

    def run(self, options, sumsq):
        """One epoch: (the summed loss scikit-learn reports, new sumsq), the estimator's parameters, state and random
        state updated."""
        import dask

        from .estimator import _shuffled

        est, token = self.est, uuid.uuid4().hex
        blocks = _shuffled(self.nonempty, est._random_state) if est.shuffle else self.nonempty
        state = {key: est._state[key] for key in ("m", "v", "t") if key in est._state}
        carry = dask.delayed(dict(flat=est._flat.copy(), state=copy.deepcopy(state), sumsq=sumsq, loss=0.0,
                                  random_state=copy.deepcopy(est._random_state)),
                             name=f"mlpgrad-carry-{token}", traverse=False)
        for b in blocks:
            step = dask.delayed(_train_block, nout=2)(carry, self.objective._blocks[b], self.orders.get(b),
                                                      self.sizes, options, est.shuffle, est.n_threads,
                                                      dask_key_name=f"mlpgrad-train-{b}-{token}")
            carry, order = step
            if est.shuffle:
                self.orders[b] = order
        kept = dask.persist(carry, *self.orders.values())
        self.orders = dict(zip(self.orders, kept[1:]))
        out = kept[0].compute()
        est._flat[...] = out["flat"]
        for key, value in out["state"].items():
            est._state[key][...] = value
        est._random_state.set_state(out["random_state"].get_state())
        return out["loss"], out["sumsq"]  # the reported loss: the epochs' options carry its loss_scale


def _train_block(carry, data, order, sizes, options, shuffle, n_threads):
    """One block's share of an epoch, on its worker: (the carry after it, the block's new row order)."""
    from . import dask as mdask
    from ._checks import check_n_threads
    from .estimator import _epoch

    carry = copy.deepcopy(carry)  # the inputs stay as they were (a task may be run again)
    if shuffle and order is None:
        order = np.arange(data.n, dtype=np.int64)
    loss, carry["sumsq"], order = _epoch(carry["flat"], carry["state"], sizes, data, order if shuffle else None,
                                         carry["random_state"], options, carry["sumsq"],
                                         check_n_threads(mdask._task_threads(n_threads)))
    carry["loss"] += loss
    return carry, order


def _snapshot(est):
    """The fitted estimator as one Delayed (a copy: later fits do not change the lazy results)."""
    import dask

    return dask.delayed(copy.deepcopy(est), name=f"mlpgrad-estimator-{uuid.uuid4().hex}", traverse=False)


def _on_worker(est, n_rows, d):
    """est with n_threads as its share of the worker's threads (mlpgrad.dask._task_threads), and a stand-in X
    of one row for blocks without rows (scikit-learn refuses empty input)."""
    from . import dask as mdask

    threads = mdask._task_threads(est.n_threads)
    if threads != est.n_threads:
        est = copy.copy(est)  # the shared copy on the worker stays as it is
        est.n_threads = threads
    return est, (np.zeros((1, d)) if n_rows == 0 else None)


def _predict_block(X, est, method):
    """``est.<method>`` of one row block."""
    est, standin = _on_worker(est, X.shape[0], X.shape[1])
    if standin is not None:
        return getattr(est, method)(standin)[:0]
    return getattr(est, method)(X)


def predict(est, method, X):
    """``est.predict`` / ``predict_proba`` / ``predict_log_proba`` (method) of a dask array X chunked along rows: a
    lazy dask array with X's row chunks, one task per block calling the in-memory method on its block with a
    snapshot of the fitted estimator (taken now)."""
    check_is_fitted(est)
    X = _check_X(est, X, reset=False)
    sample = getattr(est, method)(np.zeros((1, X.shape[1])))  # the result's dtype and columns, from the method
    if sample.ndim == 1:
        shape = dict(drop_axis=1, chunks=(X.chunks[0],))
    else:
        shape = dict(chunks=(X.chunks[0], (sample.shape[1],)))
    return X.map_blocks(_predict_block, est=_snapshot(est), method=method, dtype=sample.dtype, meta=sample[:0],
                        name=f"mlpgrad-predict-{uuid.uuid4().hex}", **shape)


def _input_gradient_block(X, y, est, one_d):
    """``est.input_gradient`` of one row block (y given as 2-D; one_d: it was 1-D)."""
    if X.shape[0] == 0:
        return np.zeros((0, X.shape[1]), est.coefs_[0].dtype)
    est, _ = _on_worker(est, X.shape[0], X.shape[1])
    return est.input_gradient(X, y[:, 0] if one_d else y)


def input_gradient(est, X, y):
    """``est.input_gradient`` of dask arrays chunked along rows: a lazy dask array (n_samples, n_features) of the
    parameters' dtype with X's row chunks, one task per block calling the in-memory method on its blocks of X and
    y with a snapshot of the fitted estimator (taken now); a block's bad labels or targets raise when computed."""
    check_is_fitted(est)
    X, y, _, _, d = _check_data(est, X, y, None, reset=False)
    one_d = y.ndim == 1
    dtype = est.coefs_[0].dtype
    return X.map_blocks(_input_gradient_block, y[:, None] if one_d else y, est=_snapshot(est), one_d=one_d,
                        dtype=dtype, meta=np.zeros((0, 0), dtype), chunks=(X.chunks[0], (d,)),
                        name=f"mlpgrad-input-gradient-{uuid.uuid4().hex}")


def _score_block(X, y, sample_weight, est):
    """(weighted count of correct rows, total weight) of one row block, as float64."""
    from sklearn.metrics import accuracy_score

    if X.shape[0] == 0:
        return np.zeros(2)
    est, _ = _on_worker(est, X.shape[0], X.shape[1])
    total = X.shape[0] if sample_weight is None else np.sum(sample_weight, dtype=np.float64)
    return np.array([accuracy_score(y, est.predict(X), normalize=False, sample_weight=sample_weight), total],
                    dtype=np.float64)


def _r2_block(X, y, sample_weight, est):
    """R^2's sums of one row block, per output (float64): (rows, total weight W, the weighted mean of y, the
    weighted sum of squared deviations from that mean, the weighted sum of squared residuals)."""
    k = est.n_outputs_
    if X.shape[0] == 0:
        return 0, 0.0, np.zeros(k), np.zeros(k), np.zeros(k)
    est, _ = _on_worker(est, X.shape[0], X.shape[1])
    Y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)
    if Y.shape[1] != k:
        raise ValueError(f"y must have {k} column(s) (the fitted outputs), got {Y.shape[1]}")
    if not np.isfinite(Y).all():
        raise ValueError("Input y contains NaN or infinity.")
    w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    W = float(np.sum(w))
    mean = (w @ Y) / W if W > 0 else np.zeros(k)
    residual = Y - np.asarray(est.predict(X), dtype=np.float64).reshape(Y.shape)
    return X.shape[0], W, mean, w @ (Y - mean) ** 2, w @ residual ** 2


def _r2_merge(a, b):
    """Two blocks' R^2 sums as one (the pairwise update of a weighted mean and its sum of squared deviations)."""
    n, W = a[0] + b[0], a[1] + b[1]
    if W == 0:
        return n, W, a[2], a[3] + b[3], a[4] + b[4]
    delta = b[2] - a[2]
    return n, W, a[2] + delta * (b[1] / W), a[3] + b[3] + delta ** 2 * (a[1] * b[1] / W), a[4] + b[4]


def _r2(sums):
    """R^2 from the merged sums, with r2_score's rules: 1 - residual / deviation per output, 1.0 where both are
    0, 0.0 where only the deviation is; the outputs' plain average; NaN (and its warning) for fewer than 2 rows."""
    from sklearn.exceptions import UndefinedMetricWarning

    n, _, _, deviation, residual = sums
    if n < 2:
        warnings.warn("R^2 is not defined for fewer than two samples: score returns NaN", UndefinedMetricWarning,
                      stacklevel=3)
        return float("nan")
    scores = np.ones_like(deviation)
    both = (deviation != 0) & (residual != 0)
    scores[both] = 1.0 - residual[both] / deviation[both]
    scores[(residual != 0) & (deviation == 0)] = 0.0
    return float(np.mean(scores))


def score(est, X, y, sample_weight=None):
    """``est.score`` of dask arrays, as a Python float: one task per row block and mlpgrad.dask's fixed pairwise
    tree over the blocks' results, the client receiving the root's. MLPClassifier: the weighted mean accuracy
    (each block's weighted count of correct predictions, added up). MLPRegressor: R^2 (each block's per-output
    weighted mean, sum of squared deviations and of squared residuals, merged pairwise)."""
    import dask
    from sklearn.base import is_classifier

    from . import dask as mdask

    check_is_fitted(est)
    X, y, sample_weight, n, d = _check_data(est, X, y, sample_weight, reset=False)
    est_d, token = _snapshot(est), uuid.uuid4().hex
    xs, ys, ws = mdask._blocks(X), mdask._blocks(y), mdask._blocks(sample_weight)
    ws = ws if ws is not None else [None] * len(xs)
    block, merge = (_score_block, np.add) if is_classifier(est) else (_r2_block, _r2_merge)
    parts = [dask.delayed(block)(xs[i], ys[i], ws[i], est_d, dask_key_name=f"mlpgrad-score-{i}-{token}")
             for i in range(len(xs))]
    root = dask.compute(mdask._tree(parts, token, merge))[0]
    if not is_classifier(est):
        return _r2(root)
    correct, total = root
    return float(correct / total)


def partial_fit(est, X, y, sample_weight=None, **fit_params):
    """``est.partial_fit(X, y, sample_weight, **fit_params)`` (MLPClassifier's ``classes``) with dask arrays: block
    by block; see the module docstring."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.base import get_scheduler

    reset = not hasattr(est, "coefs_")
    X, y, sample_weight, n, d = _check_data(est, X, y, sample_weight, reset=reset)
    blocks = [list(a.to_delayed().ravel()) if a is not None else None for a in (X, y, sample_weight)]
    scheduler = get_scheduler()  # the caller's (a Client made current in this thread only, say), for the fetches
    t0 = time.perf_counter()

    def fetch(i):
        return dask.compute(*(b[i] if b is not None else None for b in blocks), scheduler=scheduler)

    n_blocks = len(blocks[0])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlpgrad-prefetch") as pool:
        pending = pool.submit(fetch, 0)
        for i in range(n_blocks):
            Xb, yb, wb = pending.result()
            if i + 1 < n_blocks:
                pending = pool.submit(fetch, i + 1)
            if Xb.shape[0]:
                est.partial_fit(Xb, yb, sample_weight=wb, **fit_params)
    est.fit_time_ = time.perf_counter() - t0
    return est
