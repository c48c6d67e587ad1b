"""``mlpgrad.dask``: the loss and its gradients over dask arrays chunked along rows, computed on a Dask cluster.

    import dask
    import dask.array as da
    from dask.distributed import Client
    import mlpgrad.dask

    client = Client(...)                      # a cluster (without one: dask's local scheduler)
    X, y = dask.persist(X, y)                 # (N, d_0) and (N,) or (N, k), the same row chunks
    loss, grads = mlpgrad.dask.loss_and_grad(weights, biases, X, y, head="softmax", reduction="mean")

The arguments and their rules are those of :func:`mlpgrad.loss_and_grad` (README, "Input rules"), except that
``X``, ``y`` and ``sample_weight`` are dask arrays chunked along rows only, with the same row chunks.

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

import math
import multiprocessing
import threading
import uuid

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by tests/test_dask.py
    raise ImportError(f'mlpgrad.dask needs dask[array,distributed] ({exc}): pip install "mlpgrad[dask]"') from exc

from . import api
from ._checks import check_flag, check_head, check_n_threads, check_network, check_problem, check_reduction
from ._types import Gradients

__all__ = ["loss", "loss_and_grad"]


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


def check_dask_problem(weights, biases, X, y, head, reduction, sample_weight, func="loss_and_grad"):
    """The rules of ``mlpgrad._checks.check_problem`` that need no data (types, shapes, dtypes), plus the
    chunking rules; returns (weights, biases, dtype, X, y, sample_weight). The element-wise checks (label
    range, target values, sample weights) are made on the workers, block by block, by the same code as the
    in-memory API, with the same messages."""
    hint = (f"for arrays in memory use mlpgrad.{func}, or wrap it: "
            "dask.array.from_array({name}, chunks=(rows_per_block, -1))")
    head = check_head(head)
    reduction = check_reduction(reduction)
    Ws, bs, dtype = check_network(weights, biases)
    d0, k = Ws[0].shape[0], Ws[-1].shape[1]

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
    if head == "sigmoid" and y.ndim == 1 and k != 1:
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

    if reduction == "mean" and n == 0:
        raise ValueError("reduction='mean' needs a positive total weight: X has no rows (N = 0)")
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


def _problem(params, X, y, sample_weight, head):
    """One block's checked and converted arguments, by the in-memory API's code (reduction "sum")."""
    weights, biases = params  # unpickled on the worker: the core compares dtypes by value
    return check_problem(list(weights), list(biases), X, y, head, "sum", sample_weight, values=False)


def _block_sums(params, X, y, sample_weight, head, want_grad, n_threads):
    """One row block: (summed loss, summed gradients as one flat float64 vector or None, total weight)."""
    p = _problem(params, X, y, sample_weight, head)
    value, dWs, dbs, _ = api._run(p, want_grad, False, _task_threads(n_threads))
    total = float(p.X.shape[0]) if p.sample_weight is None else float(np.sum(p.sample_weight, dtype=np.float64))
    grad = np.concatenate([g.ravel() for g in dWs] + list(dbs), dtype=np.float64) if want_grad else None
    return float(value), grad, total


def _add(a, b):
    """One node of the reduction tree (float64)."""
    return a[0] + b[0], (None if a[1] is None else a[1] + b[1]), a[2] + b[2]


def _block_input_grad(X, y, sample_weight=None, *, params, head, scale, n_threads):
    """dL/dX of one row block, times the client's scale (1, or 1 / total weight for "mean")."""
    p = _problem(params, X, y, sample_weight, head)
    dX = api._run(p, True, True, _task_threads(n_threads))[3]
    if scale != 1.0:
        dX *= scale
    return dX


# ------------------------------------------------------------------ the graph (on the client)

def _blocks(arr):
    """The row blocks of a dask array chunked along rows only, as a list of Delayed (or Nones)."""
    if arr is None:
        return None
    return list(arr.to_delayed().ravel())


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
    level = 0
    while len(parts) > 1:  # pairwise, by block index: the tree's shape depends only on the number of blocks
        level += 1
        pairs = [dask.delayed(_add)(parts[i], parts[i + 1], dask_key_name=f"mlpgrad-sum-{level}-{i // 2}-{token}")
                 for i in range(0, len(parts) - 1, 2)]
        parts = pairs + parts[len(parts) - len(parts) % 2:]
    return params_d, (parts[0] if parts else None)


def _sums(weights, biases, X, y, sample_weight, head, want_grad, n_threads):
    """Compute the tree: ((summed loss, flat float64 gradient sum or None, total weight), the params' Delayed)."""
    params_d, root = _graph(weights, biases, X, y, sample_weight, head, want_grad, n_threads)
    if root is None:  # no blocks at all
        size = sum(W.size for W in weights) + sum(b.size for b in biases)
        return (0.0, np.zeros(size) if want_grad else None, 0.0), params_d
    return dask.compute(root)[0], params_d


def _scale(reduction, n, total) -> float:
    if reduction == "sum":
        return 1.0
    if not total > 0:
        raise ValueError("reduction='mean' needs a positive total weight: "
                         + ("X has no rows (N = 0)" if n == 0 else "sample_weight sums to 0"))
    return 1.0 / total


def _checked_threads(n_threads):
    check_n_threads(n_threads)  # the in-memory API's rule and messages; None stays None (the worker budget)
    return None if n_threads is None else int(n_threads)


def loss_and_grad(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, input_grad=False,
                  n_threads=None):
    """Loss and gradients of the whole data set, X and y (and sample_weight) being dask arrays chunked along rows.

    The same arguments, rules and errors as :func:`mlpgrad.loss_and_grad`, and the same result up to the order
    of the sums (see the module docstring), except:

    * ``X`` (N, d_0), ``y`` (N,) or (N, k) and ``sample_weight`` (N,) are ``dask.array.Array`` objects chunked
      along rows only (one chunk across the columns), all with the same row chunks (``X.chunks[0]``), else
      ``ValueError`` naming the argument. Element-wise errors (a label out of range, a negative weight) are
      raised by the block's task and re-raised here, with the in-memory message (the label range it quotes is
      that block's).
    * ``n_threads``: threads of each block's native call; None gives each call its share of the worker's
      thread budget: 1 thread per task on a dask.distributed worker, whose nthreads task slots then use at most
      its nthreads cores (module docstring).

    Returns ``(loss, Gradients(weights, biases, input))`` on the client, as in memory: ``loss`` a Python float,
    ``weights[l]`` / ``biases[l]`` NumPy arrays shaped and typed like the parameters. ``input`` is None unless
    ``input_grad=True``; then it is dL/dX as a lazy dask array (N, d_0) with X's row chunks and the parameters'
    dtype, never gathered on the client: computing it evaluates every block once more on the workers.

    The computation runs on dask's current scheduler (the active ``dask.distributed.Client``, if any) when this
    function is called; persist X and y first (``dask.persist``) when calling it repeatedly on the same data.
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
    dWs, dbs, pos = [], [], 0
    for arr, out in [(W, dWs) for W in Ws] + [(b, dbs) for b in bs]:
        out.append(grad[pos:pos + arr.size].reshape(arr.shape).astype(dtype))
        pos += arr.size
    dX = None
    if input_grad:  # blockwise: the row blocks of X, y and sample_weight side by side; X's chunks exactly
        arrays = [X, "ij", y, "i" if y.ndim == 1 else "ik"] + ([] if w is None else [w, "i"])
        dX = da.blockwise(_block_input_grad, "ij", *arrays, params=params_d, head=head, scale=scale,
                          n_threads=n_threads, name=f"mlpgrad-input-grad-{tokenize(params_d.key, scale)}",
                          dtype=dtype, meta=np.empty((0, 0), dtype=dtype), concatenate=True)
    return float(value), Gradients(dWs, dbs, dX)


def loss(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, n_threads=None):
    """The loss as a Python float (see :func:`loss_and_grad`; forward passes only)."""
    head, reduction, Ws, bs, dtype, X, y, w = check_dask_problem(weights, biases, X, y, head, reduction,
                                                                 sample_weight, func="loss")
    (value, _, total), _ = _sums(Ws, bs, X, y, w, head, False, _checked_threads(n_threads))
    return float(value * _scale(reduction, X.shape[0], total))

