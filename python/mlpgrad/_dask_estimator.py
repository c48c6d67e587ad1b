"""``MLPClassifier.fit`` / ``partial_fit`` on dask arrays chunked along rows (called by ``mlpgrad.estimator``).

``fit`` (solvers "lbfgs" and "newton-cg"): the in-memory fit (``MLPClassifier._fit``) with ``OnDask`` as the
data's side. The objective is an :class:`mlpgrad.dask.Objective`: before the first iteration every row block of X
(cast to the parameters' dtype), of the binarized targets and of the sample weights is bound on its worker
(converted, scanned, kept there), so every evaluation reads it from the workers' memory, not from its source; each
evaluation (and each Gauss-Newton product of newton-cg) is one task per block and a fixed reduction tree, scipy's
optimizer runs on the client. The blocks are released when ``fit`` returns.
The classes come from one pass over y (``dask.array.unique``). The steps are the in-memory fit's, up to the
order of the sums (tests/test_dask.py compares the two).

``partial_fit``: the same as calling ``partial_fit`` on each row block in order (blocks with no rows are
skipped). Mini-batch steps are sequential, so they run on the client: each block is fetched from the workers
(the next one while the current one trains, so at most two blocks are in the client's memory) and trained on
with the in-memory code. Persist X and y (``dask.persist``) before calling it once per epoch.

Only this module's functions import dask, and only when called: ``is_dask_array`` looks at ``sys.modules``
(no dask array can exist before ``dask.array`` is imported).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

__all__ = ["is_dask_array", "OnDask", "partial_fit"]


def is_dask_array(*objs) -> bool:
    """Whether any of objs is a dask array, without importing dask."""
    mod = sys.modules.get("dask.array")
    return mod is not None and any(isinstance(obj, mod.Array) for obj in objs)


_HINT = "pass X, y and sample_weight all as dask arrays with the same row chunks, or all in memory"


def _check_data(est, X, y, sample_weight, reset):
    """Types, shapes and chunks (the rules of mlpgrad.dask); returns (X, y, sample_weight, n, d)."""
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
    Y = binarizer.transform(yb).astype(bool)
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if softmax:
        return np.argmax(Y, axis=1).astype(np.int64)
    return np.ascontiguousarray(Y, dtype=dtype)


class OnDask:
    """The data's side of ``MLPClassifier.fit`` on dask arrays (the full-batch solvers; MLPClassifier._fit does the
    rest): the checks, the classes from one pass over y, and the objective as an ``mlpgrad.dask.Objective``, whose
    bound blocks live on the workers until the fit ends."""

    def __init__(self, est, X, y, sample_weight, first_pass):
        import dask.array as da
        from sklearn.exceptions import DataConversionWarning
        from sklearn.preprocessing import LabelBinarizer
        from sklearn.utils.multiclass import unique_labels

        if est.solver not in ("lbfgs", "newton-cg"):
            raise ValueError(f"solver={est.solver!r}: fit on dask arrays uses solver='lbfgs' or 'newton-cg' "
                             "(full-batch gradients on the cluster); for mini-batch steps (adam, sgd) call "
                             "partial_fit(X, y, classes=...) once per epoch, which steps through the row blocks")
        X, y, sample_weight, n, d = _check_data(est, X, y, sample_weight, reset=first_pass)
        # classes: one pass over y; the binarizer is fitted on a stand-in with y's distinct values and y's width
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
                          "(n_samples, ), for example using ravel().", DataConversionWarning, stacklevel=4)
            y = y[:, 0]
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
        if first_pass:
            est.n_features_in_ = d
        est.n_outputs_ = est._label_binarizer.transform(standin[:1]).reshape(1, -1).shape[1]
        self.est, self.X, self.y, self.sample_weight = est, X, y, sample_weight
        self.n_features, self.dtype = d, X.dtype
        self._objective = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._objective = None  # releases the bound blocks on the workers
        return False

    def objective(self):
        """The fit's objective (MLPClassifier's: mean loss, penalty alpha / 2 ||W||^2 / total weight)."""
        from . import dask as mdask

        est, y = self.est, self.y
        dtype, k = est._flat.dtype, est.n_outputs_
        softmax = est.out_activation_ == "softmax"
        if softmax:
            T = y.map_blocks(_targets_block, est._label_binarizer, True, dtype, dtype=np.int64)
        elif y.ndim == 1:
            T = y.map_blocks(_targets_block, est._label_binarizer, False, dtype, dtype=dtype, new_axis=1,
                             chunks=(y.chunks[0], (k,)))
        else:
            T = y.map_blocks(_targets_block, est._label_binarizer, False, dtype, dtype=dtype)
        obj = mdask.Objective(est._layer_units(), self.X, T, head=est._head(), reduction="mean",
                              sample_weight=self.sample_weight, dtype=dtype, n_threads=est.n_threads)
        if not obj._x_finite:
            raise ValueError("Input X contains NaN or infinity.")
        obj.alpha = est.alpha / obj.total_weight  # scikit-learn's penalty, divided by the total weight
        self._objective = obj
        return obj

    def arrays(self, dtype):  # pragma: no cover - the solver check in __init__ keeps stochastic fits away
        raise AssertionError("fit on dask arrays runs the full-batch solvers only")


def partial_fit(est, X, y, sample_weight=None, classes=None):
    """``est.partial_fit(X, y, sample_weight, classes)`` with dask arrays: block by block; see the module docstring."""
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
                est.partial_fit(Xb, yb, sample_weight=wb, classes=classes)
    est.fit_time_ = time.perf_counter() - t0
    return est
