"""``mlpgrad.dask``: the loss and its gradients over dask arrays chunked along rows, computed on a Dask cluster.

    import dask
    import dask.array as da
    from dask.distributed import Client
    import mlpgrad.dask

    client = Client(...)                      # a cluster (without one: dask's local scheduler)
    X, y = dask.persist(X, y)                 # (N, d_0) and (N,) or (N, k), the same row chunks
    loss, grads = mlpgrad.dask.loss_and_grad(weights, biases, X, y, head="softmax", reduction="mean")

The arguments and their rules are those of :func:`mlpgrad.loss_and_grad` (README, "Input rules"), except that
``X``, ``y`` and ``sample_weight`` are dask arrays chunked along rows only, with the same row chunks. X's blocks
may be scipy.sparse matrices: each is taken as a sparse X in memory is (dL/dX dense).

How it is computed (the pattern of dask-glm, on Dask's own scheduler):

* the parameters enter the task graph once (a copy, so later changes of the caller's arrays are not seen);
* every row block is one task, run where the block lives: the native core with reduction "sum" on that block,
  which returns the block's summed loss, its summed gradients (one flat float64 vector) and its total weight;
* the blocks' results are added by a pairwise tree of fixed shape over the block index (block 0 + block 1,
  block 2 + block 3, ..., then the sums of those pairs, and so on), in float64;
* the client applies the "mean" scaling (1 / total weight) and casts the gradients to the parameters' dtype.

So the result is the in-memory one up to the order of the sums (float64: within 1e-12 relative), and it is
bit-identical from run to run for the same row chunks, whatever the number of workers, their threads or the
order in which tasks finish: every block's partial sums are bit-identical for any thread count (the core's
guarantee) and the tree's shape and order depend only on the number of blocks.

Threads: ``n_threads=None`` gives each native call its share of the worker's thread budget. A
dask.distributed worker runs up to ``nthreads`` tasks at once, one per thread, so each task's native call
gets ``nthreads / nthreads`` = 1 thread and the worker's calls together never use more than its ``nthreads``
cores (no oversubscription; start workers with ``threads_per_worker`` = cores per worker). The same holds for
dask's local threaded and process schedulers (one thread per task); the synchronous scheduler (tasks on the
calling thread) leaves the count to OpenMP (``OMP_NUM_THREADS``). ``n_threads=T`` gives each call T threads
instead, e.g. on workers started with ``nthreads=1`` that each own T cores.

Needs the "dask" extra (``pip install "mlpgrad[dask]"``); ``import mlpgrad`` works without it.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import threading
import uuid
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by tests/test_dask.py
    raise ImportError(f'mlpgrad.dask needs dask[array,distributed] ({exc}): pip install "mlpgrad[dask]"') from exc

from . import _native
from . import curvature as _curv
from ._checks import (LabelRangeError, check_flag, check_head, check_n_threads, check_network, check_reduction,
                      check_total_weight, check_vectors, label_range_message)
from ._flat import unpack
from ._types import ArrayLike, FloatArray, Gradients, Params
from .objective import _FlatObjective, _operator, as_theta, check_out as _check_out

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator

__all__ = ["loss", "loss_and_grad", "Objective"]


# ------------------------------------------------------------------ argument checks (on the client)

def _describe(obj) -> str:
    if isinstance(obj, (np.ndarray, da.Array)):
        kind = "dask array" if isinstance(obj, da.Array) else "array"
        return f"{kind} of shape {obj.shape} and dtype {obj.dtype}"
    return type(obj).__name__


def _as_dask(obj, name: str, hint: str) -> "da.Array":
    if not isinstance(obj, da.Array):
        raise TypeError(f"{name} must be a dask array (dask.array.Array) chunked along rows, got {_describe(obj)}: "
                        + hint.format(name=name))
    return obj


def _check_chunks(arr, name: str, row_chunks=None) -> None:
    """Known row chunk sizes; one chunk across the columns; the row chunks of X (row_chunks)."""
    if any(math.isnan(c) for c in arr.chunks[0]):
        raise ValueError(f"{name} must have known row chunk sizes, got {arr.chunks[0]}: "
                         f"call {name}.compute_chunk_sizes() first")
    if arr.ndim == 2 and arr.numblocks[1] != 1:
        raise ValueError(f"{name} must be chunked along rows only (one chunk across its {arr.shape[1]} columns), "
                         f"got column chunks {arr.chunks[1]}: use {name}.rechunk({{1: -1}})")
    if row_chunks is not None and arr.chunks[0] != row_chunks:
        raise ValueError(f"{name} must have the row chunks of X {row_chunks}, got {arr.chunks[0]}: "
                         f"use {name}.rechunk({{0: X.chunks[0]}})")


def _check_ndim(arr, ndims, name: str, what: str) -> None:
    if arr.ndim not in ndims:
        raise ValueError(f"{name} must be {what}, got {arr.ndim}-D dask array of shape {arr.shape}")


def check_dask_data(X, y, sample_weight, head, d0, k, func="loss_and_grad"):
    """The rules of X, y and sample_weight that need no data (types, shapes, dtypes) and the chunking rules;
    returns (X, y, sample_weight). The element-wise rules (label range, target values, sample weights) are
    checked on the workers by the in-memory API's code (``_native.bind_data``), with the same messages."""
    hint = (f"for arrays in memory use mlpgrad.{func}, or wrap it: "
            "dask.array.from_array({name}, chunks=(rows_per_block, -1))")
    X = _as_dask(X, "X", hint)
    if X.dtype.kind not in "iuf":
        raise TypeError(f"X must be a real array (integer or floating), got dtype {X.dtype}")
    _check_ndim(X, (2,), "X", "2-D (N, d_0)")
    if X.shape[1] != d0:
        raise ValueError(f"X must have {d0} columns to match weights[0] of shape ({d0}, ...), got shape {X.shape}")
    _check_chunks(X, "X")
    n = X.shape[0]

    y = _as_dask(y, "y", hint)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must be a real array, got dtype {y.dtype}")
    _check_ndim(y, (1, 2), "y", f"1-D (N,) or 2-D (N, {k})")
    if not any(math.isnan(c) for c in y.chunks[0]) and y.shape[0] != n:
        raise ValueError(f"y must have {n} rows to match X, got shape {y.shape}")
    if y.ndim == 2 and y.shape[1] != k:
        raise ValueError(f"y must have shape ({n}, {k}) to match the {k} outputs, got {y.shape}")
    if head in ("sigmoid", "identity") and y.ndim == 1 and k != 1:
        raise ValueError(f"y of shape ({n},) needs one output unit; the network has {k}: pass y of shape ({n}, {k})")
    _check_chunks(y, "y", X.chunks[0])

    if sample_weight is not None:
        sample_weight = _as_dask(sample_weight, "sample_weight", hint)
        if sample_weight.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be a real array, got dtype {sample_weight.dtype}")
        _check_ndim(sample_weight, (1,), "sample_weight", f"1-D ({n},)")
        if not any(math.isnan(c) for c in sample_weight.chunks[0]) and sample_weight.shape[0] != n:
            raise ValueError(f"sample_weight must have shape ({n},) to match X, got {sample_weight.shape}")
        _check_chunks(sample_weight, "sample_weight", X.chunks[0])
    return X, y, sample_weight


def check_dask_problem(weights, biases, X, y, head, reduction, sample_weight, func="loss_and_grad"):
    """The in-memory rules of the parameters, head and reduction, and check_dask_data's; returns
    (head, reduction, weights, biases, dtype, X, y, sample_weight)."""
    head = check_head(head)
    reduction = check_reduction(reduction)
    Ws, bs, dtype = check_network(weights, biases)
    X, y, sample_weight = check_dask_data(X, y, sample_weight, head, Ws[0].shape[0], Ws[-1].shape[1], func)
    if X.shape[0] == 0:  # the total weight of no rows is known without the data
        check_total_weight(reduction, 0.0, 0)
    return head, reduction, Ws, bs, dtype, X, y, sample_weight


# ------------------------------------------------------------------ the tasks (on the workers)

def _task_threads(n_threads):
    """Threads of one task's native call: n_threads if given, else the task's share of its worker's budget
    (see the module docstring): 1 on a dask.distributed worker (one of its nthreads task slots) and on the
    local threaded or process schedulers; None (OpenMP's setting) on the calling thread (synchronous)."""
    if n_threads is not None:
        return n_threads
    try:
        from distributed import get_worker
        get_worker()
        return 1
    except (ImportError, ValueError):  # not on a dask.distributed worker
        pass
    if threading.current_thread() is threading.main_thread() and multiprocessing.parent_process() is None:
        return None
    return 1


def _bind_block(X, y, sample_weight, head, d0, k, dtype, check=True, own=False):
    """One row block bound as the in-memory API binds a batch (_native.bind_data)."""
    return _native.bind_data(X, y, sample_weight, head, d0, k, dtype, check, own)


def _block_sums(params, X, y, sample_weight, head, want_grad, n_threads):
    """One row block, bound here: (summed loss, summed gradients as one flat float64 vector or None, total weight)."""
    weights, biases = params  # unpickled on the worker: the core compares dtypes by value
    data = _bind_block(X, y, sample_weight, head, weights[0].shape[0], weights[-1].shape[1], weights[0].dtype)
    value, grad, _ = _native.loss_and_grad(list(weights), list(biases), data, "sum", want_grad, False,
                                           check_n_threads(_task_threads(n_threads)))
    return float(value), (grad.astype(np.float64) if want_grad else None), data.total_weight


def _bound_block_sums(theta, sizes, data, want_grad, n_threads):
    """The same for a block bound once (Objective): the parameters as one flat vector."""
    value, grad, _ = _native.loss_and_grad_flat(theta, sizes, data, "sum", want_grad, False,
                                                check_n_threads(_task_threads(n_threads)))
    return float(value), (grad.astype(np.float64) if want_grad else None), data.total_weight


def _bound_block_curvature(theta, sizes, data, op, V, n_threads):
    """One bound block's H V or G V (P, m) (op "hvp" / "ggn_vp"), or its diag(G) (P,) (op "ggn_diag", V None), with
    reduction "sum", as float64."""
    threads = check_n_threads(_task_threads(n_threads))
    if op == "ggn_diag":
        out = _curv.diag_of(theta, sizes, data, "sum", threads)
    else:
        out = _curv.products_of(op, theta, sizes, data, "sum", V, threads)
    return out.astype(np.float64)


def _block_summary(data):
    """What the client needs of a bound block: (N, total weight, fault, label range, whether X is finite)."""
    finite = bool(np.isfinite(_native.core_X_values(data.X)).all())
    return data.n, data.total_weight, data.fault, data.label_range, finite


def _add(a, b):
    """One node of the reduction tree (float64)."""
    return a[0] + b[0], (None if a[1] is None else a[1] + b[1]), a[2] + b[2]


def _pairwise(parts, add):
    """Sum parts pairwise by index: (0 + 1), (2 + 3), ..., then the sums of those pairs, and so on; the shape
    depends only on len(parts). add(a, b, level, i) makes one node."""
    level = 0
    while len(parts) > 1:
        level += 1
        pairs = [add(parts[i], parts[i + 1], level, i // 2) for i in range(0, len(parts) - 1, 2)]
        parts = pairs + parts[len(parts) - len(parts) % 2:]
    return parts[0] if parts else None


def _block_input_grad(X, y, sample_weight=None, *, params, head, scale, n_threads):
    """dL/dX of one row block, times the client's scale (1, or 1 / total weight for "mean")."""
    weights, biases = params
    data = _bind_block(X, y, sample_weight, head, weights[0].shape[0], weights[-1].shape[1], weights[0].dtype)
    dX = _native.loss_and_grad(list(weights), list(biases), data, "sum", True, True,
                               check_n_threads(_task_threads(n_threads)))[2]
    if scale != 1.0:
        dX *= scale
    return dX


# ------------------------------------------------------------------ the graph (on the client)

def _blocks(arr):
    """The row blocks of a dask array chunked along rows only, as a list of Delayed (or Nones)."""
    if arr is None:
        return None
    return list(arr.to_delayed().ravel())


def _tree(parts, token, add=None):
    """The pairwise tree of Delayed block sums (add(a, b) one node, _add's by default): its root, or None without
    blocks."""
    return _pairwise(parts, lambda a, b, level, i: dask.delayed(add or _add)(
        a, b, dask_key_name=f"mlpgrad-sum-{level}-{i}-{token}"))


def _graph(weights, biases, X, y, sample_weight, head, want_grad, n_threads):
    """Build (the parameters' Delayed, the tree's root Delayed or None without blocks) for checked arguments."""
    params = (tuple(np.array(W, order="C") for W in weights), tuple(np.array(b) for b in biases))  # copies
    # A fresh name per call, so that every call computes: with keys derived from the inputs, a call repeating an
    # earlier one could be handed that one's results while the scheduler still holds them.
    token = uuid.uuid4().hex
    params_d = dask.delayed(params, name=f"mlpgrad-params-{token}", traverse=False)
    xs, ys, ws = _blocks(X), _blocks(y), _blocks(sample_weight)
    ws = ws if ws is not None else [None] * len(xs)
    parts = [dask.delayed(_block_sums)(params_d, xs[i], ys[i], ws[i], head, want_grad, n_threads,
                                       dask_key_name=f"mlpgrad-block-{i}-{token}")
             for i in range(len(xs))]
    return params_d, _tree(parts, token)


def _sums(weights, biases, X, y, sample_weight, head, want_grad, n_threads):
    """Compute the tree: ((summed loss, flat float64 gradient sum or None, total weight), the params' Delayed)."""
    params_d, root = _graph(weights, biases, X, y, sample_weight, head, want_grad, n_threads)
    if root is None:  # no blocks at all
        size = sum(W.size for W in weights) + sum(b.size for b in biases)
        return (0.0, np.zeros(size) if want_grad else None, 0.0), params_d
    with _whole_label_range(y, weights[-1].shape[1]):
        return dask.compute(root)[0], params_d


@contextlib.contextmanager
def _whole_label_range(y, k: int):
    """A label out of range, found in one row block (by its task), is re-raised with the range of all of y's values,
    as in memory: one more pass over y, on this error only."""
    try:
        yield
    except LabelRangeError:
        lo, hi = dask.compute(y.min(), y.max())
        raise LabelRangeError(label_range_message(k, lo, hi)) from None


def _scale(reduction, n, total) -> float:
    check_total_weight(reduction, total, n)
    return 1.0 if reduction == "sum" else 1.0 / total


def _checked_threads(n_threads):
    check_n_threads(n_threads)  # the in-memory API's rule and messages; None stays None (the worker budget)
    return None if n_threads is None else int(n_threads)


def loss_and_grad(weights: Params, biases: Params, X: "da.Array", y: "da.Array", *, head: str,
                  reduction: str = "sum", sample_weight: "Optional[da.Array]" = None, input_grad: bool = False,
                  n_threads: Optional[int] = None) -> Tuple[float, Gradients]:
    """Loss and gradients of the whole data set, X and y (and sample_weight) being dask arrays chunked along rows.

    The same arguments, rules and errors as :func:`mlpgrad.loss_and_grad`, and the same result up to the order
    of the sums (see the module docstring). The computation runs on dask's current scheduler (the active
    ``dask.distributed.Client``, if any) when this function is called; persist X and y first (``dask.persist``)
    when calling it repeatedly on the same data.

    Parameters
    ----------
    weights, biases, head, reduction, input_grad
        As in :func:`mlpgrad.loss_and_grad`.
    X, y, sample_weight : dask.array.Array
        ``X`` (N, d_0), ``y`` (N,) or (N, k) and ``sample_weight`` (N,) (or None), chunked along rows only (one
        chunk across the columns), all with the same row chunks (``X.chunks[0]``).
    n_threads : int or None, default=None
        Threads of each block's native call; None gives each call its share of the worker's thread budget: 1
        thread per task on a dask.distributed worker, whose nthreads task slots then use at most its nthreads
        cores (module docstring).

    Returns
    -------
    loss : float
        On the client, as in memory.
    grads : Gradients
        ``weights[l]`` / ``biases[l]`` NumPy arrays shaped and typed like the parameters. ``input`` is None unless
        ``input_grad=True``; then it is dL/dX as a lazy dask array (N, d_0) with X's row chunks and the
        parameters' dtype, never gathered on the client: computing it evaluates every block once more on the
        workers.

    Raises
    ------
    TypeError
        As in memory, and for X, y or sample_weight that are not dask arrays.
    ValueError
        As in memory, and for arrays not chunked along rows only or with other row chunks than X's, naming the
        argument. Element-wise errors (a label out of range, a negative weight) are raised by the block's task
        and re-raised here, with the in-memory message; a label out of range quotes the whole array's range of
        labels, as in memory (found by one more pass over y).

    Examples
    --------
    >>> import numpy as np, dask.array as da, mlpgrad.dask
    >>> X = da.from_array(np.ones((4, 3)), chunks=(2, 3))
    >>> y = da.from_array(np.array([0, 1, 1, 1]), chunks=2)
    >>> loss, grads = mlpgrad.dask.loss_and_grad([np.zeros((3, 2))], [np.zeros(2)], X, y, head="softmax")
    >>> grads.biases[0]
    array([ 1., -1.])
    """
    head, reduction, Ws, bs, dtype, X, y, w = check_dask_problem(weights, biases, X, y, head, reduction,
                                                                 sample_weight)
    input_grad = check_flag(input_grad, "input_grad")
    n_threads = _checked_threads(n_threads)
    (value, grad, total), params_d = _sums(Ws, bs, X, y, w, head, True, n_threads)
    scale = _scale(reduction, X.shape[0], total)
    if scale != 1.0:
        value *= scale
        grad *= scale
    dWs, dbs = unpack(grad.astype(dtype), [Ws[0].shape[0]] + [W.shape[1] for W in Ws])
    dX = None
    if input_grad:  # blockwise: the row blocks of X, y and sample_weight side by side; X's chunks exactly
        arrays = [X, "ij", y, "i" if y.ndim == 1 else "ik"] + ([] if w is None else [w, "i"])
        dX = da.blockwise(_block_input_grad, "ij", *arrays, params=params_d, head=head, scale=scale,
                          n_threads=n_threads, name=f"mlpgrad-input-grad-{tokenize(params_d.key, scale)}",
                          dtype=dtype, meta=np.empty((0, 0), dtype=dtype), concatenate=True)
    return float(value), Gradients(dWs, dbs, dX)


def loss(weights: Params, biases: Params, X: "da.Array", y: "da.Array", *, head: str, reduction: str = "sum",
         sample_weight: "Optional[da.Array]" = None, n_threads: Optional[int] = None) -> float:
    """The loss as a Python float (see :func:`loss_and_grad`; forward passes only).

    Parameters
    ----------
    weights, biases, X, y, head, reduction, sample_weight, n_threads
        As in :func:`loss_and_grad`.

    Returns
    -------
    float
        L, on the client.

    Raises
    ------
    TypeError, ValueError
        As :func:`loss_and_grad`.

    Examples
    --------
    >>> import numpy as np, dask.array as da, mlpgrad.dask
    >>> X = da.from_array(np.ones((4, 3)), chunks=(2, 3))
    >>> y = da.from_array(np.array([0, 1, 1, 1]), chunks=2)
    >>> round(mlpgrad.dask.loss([np.zeros((3, 2))], [np.zeros(2)], X, y, head="softmax", reduction="mean"), 6)
    0.693147
    """
    head, reduction, Ws, bs, dtype, X, y, w = check_dask_problem(weights, biases, X, y, head, reduction,
                                                                 sample_weight, func="loss")
    (value, _, total), _ = _sums(Ws, bs, X, y, w, head, False, _checked_threads(n_threads))
    return float(value * _scale(reduction, X.shape[0], total))


class Objective(_FlatObjective):
    """:class:`mlpgrad.Objective` over dask arrays chunked along rows: the loss of the data set as a function of
    the flat parameters theta (P,), for scipy.optimize and other loops that evaluate it many times.

    The same arguments, rules, result and methods as the in-memory Objective, with X, y and sample_weight as in
    :func:`loss_and_grad`. When it is made, every row block is converted and scanned (labels, targets, weights)
    once on the workers and kept there, bound (persisted on dask's current scheduler; released with the
    Objective); a rule broken anywhere raises here, a label out of range with the whole array's range of
    labels. Each evaluation then sends theta to the blocks, runs one native call per block and adds the blocks'
    sums by the fixed pairwise tree (float64): bit-identical from run to run for the same row chunks.

    Parameters
    ----------
    layer_sizes, head, reduction, alpha, dtype, n_threads
        As in :class:`mlpgrad.Objective` (n_threads: as in :func:`loss_and_grad`).
    X, y, sample_weight : dask.array.Array
        As in :func:`loss_and_grad`.

    Raises
    ------
    TypeError, ValueError
        As :class:`mlpgrad.Objective` and :func:`loss_and_grad`; a label out of range with the whole array's
        range of labels.

    Examples
    --------
    >>> import numpy as np, dask.array as da, mlpgrad.dask
    >>> X = da.from_array(np.ones((4, 1)), chunks=(2, 1))
    >>> y = da.from_array(np.array([0, 1, 1, 1]), chunks=2)
    >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
    >>> obj.loss_and_grad(np.zeros(obj.n_params))[1]
    array([ 1., -1.,  1., -1.])
    """

    def __init__(self, layer_sizes: Sequence[int], X: "da.Array", y: "da.Array", *, head: str,
                 reduction: str = "sum", sample_weight: "Optional[da.Array]" = None, alpha: float = 0.0,
                 dtype: npt.DTypeLike = None, n_threads: Optional[int] = None) -> None:
        self._set_common(layer_sizes, X, head, reduction, alpha, dtype)
        self.n_threads = _checked_threads(n_threads)
        sizes = self.layer_sizes
        X, y, w = check_dask_data(X, y, sample_weight, self.head, sizes[0], sizes[-1], func="Objective")
        with _whole_label_range(y, sizes[-1]):
            self._blocks = self._bind(X, y, w)
            self._summarize(dask.compute(*[dask.delayed(_block_summary)(b) for b in self._blocks]))
        check_total_weight(self.reduction, self.total_weight, self.n_samples)

    def _bind(self, X, y, w):
        """Every row block bound on the workers (persisted), as a list of Delayed."""
        token = uuid.uuid4().hex
        xs, ys, ws = _blocks(X), _blocks(y), _blocks(w)
        ws = ws if ws is not None else [None] * len(xs)
        bound = [dask.delayed(_bind_block)(xs[i], ys[i], ws[i], self.head, self._sizes[0], self._sizes[-1],
                                           self.dtype, False, True, dask_key_name=f"mlpgrad-data-{i}-{token}")
                 for i in range(len(xs))]
        return list(dask.persist(*bound))

    def _summarize(self, summaries):
        """N, the total weight (the evaluation tree's order) and the first broken rule, from the blocks' scans (a
        label out of range first, as the in-memory scan; __init__ quotes the whole array's range)."""
        self.n_samples = sum(s[0] for s in summaries)
        self.total_weight = _pairwise([s[1] for s in summaries], lambda a, b, level, i: a + b) or 0.0
        self._x_finite = all(s[4] for s in summaries)
        faults = sorted((s for s in summaries if s[2] != _native.FAULT_NONE),
                        key=lambda s: s[2] != _native.FAULT_LABEL_RANGE)
        if faults:
            raise _native.fault_error(faults[0][2], self.head, self._sizes[-1], faults[0][3])

    def __repr__(self) -> str:
        return (f"mlpgrad.dask.Objective({list(self.layer_sizes)}, N={self.n_samples}, blocks={len(self._blocks)}, "
                f"head={self.head!r}, reduction={self.reduction!r}, alpha={self.alpha}, dtype={self.dtype.name})")

    def _reduce(self, task, theta, *args, add=None):
        """task(theta, sizes, block, *args, n_threads) on every bound block, the results added by the fixed pairwise
        tree (add: _tree's): the root's value, or None without blocks. theta and args enter the graph once."""
        token = uuid.uuid4().hex
        theta_d = dask.delayed(theta.copy(), name=f"mlpgrad-theta-{token}", traverse=False)
        args_d = [dask.delayed(a, name=f"mlpgrad-arg{j}-{token}", traverse=False) if isinstance(a, np.ndarray) else a
                  for j, a in enumerate(args)]
        parts = [dask.delayed(task)(theta_d, self._sizes, b, *args_d, self.n_threads,
                                    dask_key_name=f"mlpgrad-block-{i}-{token}")
                 for i, b in enumerate(self._blocks)]
        root = _tree(parts, token, add)
        return None if root is None else dask.compute(root)[0]

    def _evaluate(self, theta, want_grad):
        """(loss, float64 gradient or None) of the data, with the reduction's scale, without the penalty."""
        sums = self._reduce(_bound_block_sums, theta, want_grad)
        if sums is None:
            return 0.0, (np.zeros(self.n_params) if want_grad else None)
        value, grad, _ = sums
        scale = _scale(self.reduction, self.n_samples, self.total_weight)
        return value * scale, (grad * scale if want_grad and scale != 1.0 else grad)

    def _curvature(self, op, theta, V2):
        """The data term's H V2 or G V2 (P, m), or diag(G) (P,) (op "ggn_diag", V2 None), with the reduction's scale
        and the penalty's curvature, in the Objective's dtype: the blocks' float64 results added by the tree."""
        out = self._reduce(_bound_block_curvature, theta, op, V2, add=np.add)
        if out is None:
            out = np.zeros((self.n_params,) if V2 is None else V2.shape)
        scale = _scale(self.reduction, self.n_samples, self.total_weight)
        out = (out * scale if scale != 1.0 else out).astype(self.dtype)
        _curv.add_penalty(out, V2, self.alpha, self._n_weights)
        return out

    def loss(self, theta: ArrayLike) -> float:
        """L(theta) as a Python float.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        float
            L(theta), the penalty included.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, dask.array as da, mlpgrad.dask
        >>> X, y = da.from_array(np.ones((2, 1)), chunks=1), da.from_array(np.array([0, 1]), chunks=1)
        >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
        >>> round(obj.loss(np.zeros(obj.n_params)), 6)
        1.386294
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return float(self._evaluate(theta, False)[0]) + (self._penalty(theta) if self.alpha else 0.0)

    def loss_and_grad(self, theta: ArrayLike, out: Optional[FloatArray] = None) -> Tuple[float, FloatArray]:
        """``(L(theta), dL/dtheta)`` as in memory: the gradient (P,) in the Objective's dtype, written into ``out``
        when given.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        out : ndarray or None, default=None
            A writeable C-contiguous (P,) array of the Objective's dtype.

        Returns
        -------
        loss : float
            L(theta).
        grad : ndarray
            (P,), ``out`` when given.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). An out of the wrong dtype, shape or layout.

        Examples
        --------
        >>> import numpy as np, dask.array as da, mlpgrad.dask
        >>> X, y = da.from_array(np.ones((2, 1)), chunks=1), da.from_array(np.array([0, 1]), chunks=1)
        >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
        >>> obj.loss_and_grad(np.zeros(obj.n_params))[1]
        array([0., 0., 0., 0.])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        value, grad = self._evaluate(theta, True)
        value = self._add_penalty(value, grad, theta)
        if out is None:
            return float(value), grad.astype(self.dtype)
        _check_out(out, self.n_params, self.dtype)
        out[...] = grad
        return float(value), out

    # -- curvature (mlpgrad.Objective's: the penalty's curvature added) -------------------------------------------

    def hvp(self, theta: ArrayLike, V: ArrayLike) -> FloatArray:
        """``H V`` (P,) or (P, m) of L(theta), the penalty included: the blocks' products added as their gradients
        are (see :meth:`mlpgrad.Objective.hvp`).

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        V : array_like
            (P,) or (P, m), pack order, finite.

        Returns
        -------
        ndarray
            (P,) or (P, m).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). A V of the wrong shape or not finite.

        Examples
        --------
        >>> import numpy as np, dask.array as da, mlpgrad.dask
        >>> X, y = da.from_array(np.ones((2, 1)), chunks=1), da.from_array(np.array([0, 1]), chunks=1)
        >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
        >>> obj.hvp(np.zeros(obj.n_params), np.eye(obj.n_params)[2])
        array([ 0.5, -0.5,  0.5, -0.5])
        """
        return self._product("hvp", theta, V)

    def ggn_vp(self, theta: ArrayLike, V: ArrayLike) -> FloatArray:
        """``(G + alpha I_W) V`` (P,) or (P, m): see :meth:`mlpgrad.Objective.ggn_vp`.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        V : array_like
            (P,) or (P, m), pack order, finite.

        Returns
        -------
        ndarray
            (P,) or (P, m).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). A V of the wrong shape or not finite.

        Examples
        --------
        >>> import numpy as np, dask.array as da, mlpgrad.dask
        >>> X, y = da.from_array(np.ones((2, 1)), chunks=1), da.from_array(np.array([0, 1]), chunks=1)
        >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
        >>> obj.ggn_vp(np.zeros(obj.n_params), np.eye(obj.n_params)[2])
        array([ 0.5, -0.5,  0.5, -0.5])
        """
        return self._product("ggn_vp", theta, V)

    def _product(self, op, theta, V):
        theta = as_theta(theta, self.n_params, self.dtype)
        V2, one_d = check_vectors(V, self.n_params, self.dtype)
        out = self._curvature(op, theta, V2)
        return out[:, 0] if one_d else out

    def ggn_diag(self, theta: ArrayLike) -> FloatArray:
        """``diag(G) + alpha`` on the weights (P,): see :meth:`mlpgrad.Objective.ggn_diag`.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        ndarray
            (P,), pack order.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, dask.array as da, mlpgrad.dask
        >>> X, y = da.from_array(np.ones((2, 1)), chunks=1), da.from_array(np.array([0, 1]), chunks=1)
        >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
        >>> obj.ggn_diag(np.zeros(obj.n_params))
        array([0.5, 0.5, 0.5, 0.5])
        """
        return self._curvature("ggn_diag", as_theta(theta, self.n_params, self.dtype), None)

    def hessian_operator(self, theta: ArrayLike) -> "LinearOperator":
        """H at theta as a ``scipy.sparse.linalg.LinearOperator`` (see :meth:`mlpgrad.Objective.hessian_operator`).

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            (P, P).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, dask.array as da, mlpgrad.dask
        >>> X, y = da.from_array(np.ones((2, 1)), chunks=1), da.from_array(np.array([0, 1]), chunks=1)
        >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
        >>> obj.hessian_operator(np.zeros(obj.n_params)).shape
        (4, 4)
        """
        return _operator(self, self.hvp, theta)

    def ggn_operator(self, theta: ArrayLike) -> "LinearOperator":
        """``G + alpha I_W`` at theta as a ``scipy.sparse.linalg.LinearOperator`` (see
        :meth:`mlpgrad.Objective.ggn_operator`).

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            (P, P).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, dask.array as da, mlpgrad.dask
        >>> X, y = da.from_array(np.ones((2, 1)), chunks=1), da.from_array(np.array([0, 1]), chunks=1)
        >>> obj = mlpgrad.dask.Objective([1, 2], X, y, head="softmax")
        >>> obj.ggn_operator(np.zeros(obj.n_params)).shape
        (4, 4)
        """
        return _operator(self, self.ggn_vp, theta)
