"""Argument checking shared by the native API and the NumPy reference.

The native functions run their arguments through :func:`check_network` and :func:`check_data` (shapes, dtypes,
conversions), and the native scan (``mlpgrad._native.bind_data``) checks the values; the reference runs them
through :func:`check_problem`, which checks the values with NumPy. The messages of the value rules are defined
once, here, for both. Nothing here modifies the caller's arrays: conversions make new arrays and the originals
are only read.

Rules (documented in the README, "Input rules"):

* ``weights``: a non-empty list/tuple of 2-D arrays ``W_l`` of shape
  ``(d_{l-1}, d_l)``, all float32 or all float64 (the computation dtype).
* ``biases``: a list/tuple of the same length, ``b_l`` of shape ``(d_l,)`` and
  the same dtype as the weights.
* ``X``: 2-D ``(N, d_0)``, real (integer or floating); converted once to the
  weights' dtype.  ``N = 0`` is allowed (see ``reduction``).  Or a scipy.sparse matrix or array of any
  format, with the same rules: converted once to a canonical CSR matrix (sorted indices, duplicates summed;
  int64 indices), the caller's left as it is (:func:`check_X`).
* Byte order: every array argument may be in either byte order (``np.dtype('>f4')`` on a little-endian
  machine): it is converted once, as NumPy would, to the machine's order (:func:`native_order`); a
  ``dtype=`` argument of the other order names its native twin. ``out=`` buffers, written by the core,
  must be native.
* ``y``: sigmoid head: ``(N,)`` when ``k == 1`` or ``(N, k)``, values in
  ``[0, 1]``.  Softmax head: integer labels ``(N,)`` in ``[0, k)`` (integral
  floats are accepted as labels), or ``(N, k)`` non-negative float targets.  Identity head: ``(N,)`` when
  ``k == 1`` or ``(N, k)``, any finite real values.
* ``sample_weight``: ``None`` or ``(N,)`` finite and ``>= 0``.
* ``reduction``: ``"sum"`` or ``"mean"``; ``"mean"`` needs a positive total
  weight (``N > 0`` and, with sample weights, a positive sum).

The per-sample functions' arguments (issue 12):

* ``max_norm``: a real number > 0, possibly ``+inf`` (whole-gradient clipping), or a sequence of one such number
  per layer (per-layer clipping); not NaN, not a bool.
* ``V``: real (integer or floating), shape ``(P,)`` or ``(P, m)`` with ``m >= 1``, finite after conversion to the
  parameters' dtype.
* ``X2``, ``y2``: both or neither; the rules of ``X`` and ``y``, their messages naming ``X2`` and ``y2``.
* ``out`` of ``per_sample_grads``: a writeable C-contiguous ``(N, P)`` array of the parameters' dtype.
"""

from __future__ import annotations

import contextlib
import operator
import re
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

HEADS = ("sigmoid", "softmax", "identity")
REDUCTIONS = ("sum", "mean")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MAX_THREADS = 4096  # n_threads above this is surely a mistake (the core also never starts more threads than work units)

# The messages of the value rules, shared by the NumPy checks below and by mlpgrad._native, which turns the
# native scan's findings into them.
TARGET_MESSAGE = {"sigmoid": "y must hold values in [0, 1] for the sigmoid head",
                  "softmax": "y as 2-D softmax targets must be finite and >= 0",
                  "identity": "y must be finite for the identity head"}
SAMPLE_WEIGHT_MESSAGE = "sample_weight must be finite and >= 0"


def label_range_message(k: int, lo, hi) -> str:
    return f"y labels must lie in [0, {k}), got values in [{lo}, {hi}]"


class LabelRangeError(ValueError):
    """A label outside [0, k) (label_range_message): a ValueError of its own type, so that mlpgrad.dask can tell it
    from the other errors of a row block and quote the whole array's range instead of the block's."""


def _describe(obj) -> str:
    if isinstance(obj, np.ndarray):
        return f"array of shape {obj.shape} and dtype {obj.dtype}"
    return f"{type(obj).__name__}"


def native_order(arr: np.ndarray) -> np.ndarray:
    """arr in the machine's byte order: arr itself, or a converted copy of an array in the other order (the
    core reads native numbers only; NumPy converts such arrays wherever it computes on them)."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def float_dtype(dt) -> Optional[np.dtype]:
    """float32 or float64 (the canonical objects) for a dtype of either byte order that is one of them, else
    None."""
    dt = np.dtype(dt)
    for f in FLOAT_DTYPES:
        if dt.kind == f.kind and dt.itemsize == f.itemsize:
            return f
    return None


def _as_array(obj, name: str) -> np.ndarray:
    """np.asarray with a clear TypeError for things that are not numeric arrays."""
    if type(obj) is np.ndarray and obj.dtype.kind in "biuf":  # the common case, fast
        return obj
    if obj is None or isinstance(obj, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be an array, got {_describe(obj)}")
    try:
        arr = np.asarray(obj)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array, got {_describe(obj)} ({exc})") from None
    if arr.dtype == object or arr.dtype.kind in "USVMm":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


def _cast(arr: np.ndarray, dtype) -> np.ndarray:
    """A converted copy (or arr itself if it already has dtype). Values beyond the range of dtype become
    +-inf without a warning: targets and weights are then rejected as non-finite; X carries them
    (documented: inf and NaN in X are not screened)."""
    if arr.dtype is dtype:
        return arr
    with np.errstate(over="ignore"):
        return arr.astype(dtype, copy=False)


def _check_ndim(arr: np.ndarray, ndim: int, name: str, what: str) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {what}, got {arr.ndim}-D array of shape {arr.shape}")


def check_head(head) -> str:
    if not isinstance(head, str):
        raise TypeError(f"head must be one of {HEADS}, got {_describe(head)}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return head


def check_reduction(reduction) -> str:
    if not isinstance(reduction, str):
        raise TypeError(f"reduction must be one of {REDUCTIONS}, got {_describe(reduction)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _network_is_plain(weights, biases) -> bool:
    """The common case, tested cheaply: ndarrays of one float dtype whose shapes chain."""
    if type(weights) not in (list, tuple) or type(biases) not in (list, tuple):
        return False
    if not weights or len(weights) != len(biases):
        return False
    dtype = getattr(weights[0], "dtype", None)
    if dtype is not FLOAT_DTYPES[0] and dtype is not FLOAT_DTYPES[1]:
        return False
    prev = None
    for W, b in zip(weights, biases):
        if type(W) is not np.ndarray or type(b) is not np.ndarray or W.dtype is not dtype or b.dtype is not dtype:
            return False
        if W.ndim != 2 or b.ndim != 1:
            return False
        rows, cols = W.shape
        if rows == 0 or cols == 0 or b.shape[0] != cols or (prev is not None and rows != prev):
            return False
        prev = cols
    return True


def check_network(weights, biases):
    """Return (weights, biases, dtype) as lists of arrays of one float dtype."""
    if _network_is_plain(weights, biases):
        return list(weights), list(biases), weights[0].dtype
    for name, seq in (("weights", weights), ("biases", biases)):
        if isinstance(seq, np.ndarray) or not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple of arrays, got {_describe(seq)}")
    if len(weights) == 0:
        raise ValueError("weights must hold at least one layer, got an empty sequence")
    if len(biases) != len(weights):
        raise ValueError(f"biases must have one entry per layer: expected {len(weights)}, got {len(biases)}")

    Ws = [native_order(_as_array(W, f"weights[{i}]")) for i, W in enumerate(weights)]
    dtype = Ws[0].dtype
    for i, W in enumerate(Ws):
        if W.dtype not in FLOAT_DTYPES:
            raise TypeError(f"weights[{i}] must have dtype float32 or float64, got {W.dtype}")
        if W.dtype != dtype:
            raise TypeError(f"weights must share one dtype: weights[0] is {dtype}, weights[{i}] is {W.dtype}")
        _check_ndim(W, 2, f"weights[{i}]", "(d_in, d_out)")
        if 0 in W.shape:
            raise ValueError(f"weights[{i}] has a zero width: shape {W.shape}; every layer width must be >= 1")
        if i > 0 and W.shape[0] != Ws[i - 1].shape[1]:
            raise ValueError(
                f"weights[{i}] must have {Ws[i - 1].shape[1]} rows to follow weights[{i - 1}] of shape "
                f"{Ws[i - 1].shape}, got shape {W.shape}")

    bs = []
    for i, b in enumerate(biases):
        b = native_order(_as_array(b, f"biases[{i}]"))
        if b.dtype != dtype:
            raise TypeError(f"biases[{i}] must have the weights' dtype {dtype}, got {b.dtype}")
        _check_ndim(b, 1, f"biases[{i}]", "(d_out,)")
        if b.shape[0] != Ws[i].shape[1]:
            raise ValueError(f"biases[{i}] must have shape ({Ws[i].shape[1]},) to match weights[{i}] of shape "
                             f"{Ws[i].shape}, got {b.shape}")
        bs.append(b)
    return Ws, bs, dtype


def is_sparse(X) -> bool:
    """Whether X is a scipy.sparse matrix or array. Asked of scipy only when scipy.sparse is loaded: a sparse X
    cannot exist otherwise, and users without sparse input never import scipy."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def _check_X_shape(X, d0: int) -> None:
    """X's dtype kind, ndim and columns: the rules of a dense X and a sparse one alike."""
    if X.dtype.kind not in "iuf":
        raise TypeError(f"X must be a real array (integer or floating), got dtype {X.dtype}")
    _check_ndim(X, 2, "X", "(N, d_0)")
    if X.shape[1] != d0:
        raise ValueError(f"X must have {d0} columns to match weights[0] of shape ({d0}, ...), got shape {X.shape}")


def check_X(X, d0: int, dtype):
    """X (N, d_0) as the computations take it: an ndarray of dtype (X itself when it is one), or for a scipy.sparse
    X a canonical ``scipy.sparse.csr_matrix`` (:func:`_canonical_csr`)."""
    if type(X) is not np.ndarray and is_sparse(X):
        _check_X_shape(X, d0)
        return _canonical_csr(X, dtype)
    X = _as_array(X, "X")
    _check_X_shape(X, d0)
    return _cast(X, dtype)


def _csr_of(data, indices, indptr, shape):
    """A csr_matrix on exactly these arrays (scipy's constructor would narrow int64 indices to int32)."""
    import scipy.sparse

    m = scipy.sparse.csr_matrix(shape, dtype=data.dtype)
    m.data, m.indices, m.indptr = data, indices, indptr
    return m


def _canonical_csr(X, dtype):
    """A sparse X of any format as a canonical CSR matrix: values of dtype (C-contiguous, native byte order),
    int64 indices strictly increasing within each row (duplicates summed, in X's own dtype as scipy sums them),
    int64 indptr. Arrays of X are shared where they already are so; the canonical form is made on copies: X itself
    (its arrays and its cached flags) is never written."""
    csr = X.tocsr()  # X itself when it is CSR, else a new matrix
    indptr = csr.indptr.astype(np.int64, copy=False)
    nnz = int(indptr[-1])
    m = _csr_of(native_order(csr.data[:nnz]), csr.indices[:nnz].astype(np.int64, copy=False), indptr, csr.shape)
    if not m.has_canonical_format:
        m = _csr_of(m.data.copy(), m.indices.copy(), m.indptr.copy(), m.shape)
        m.sum_duplicates()  # in place, on the copies: sorts each row, adds duplicates, prunes
    m = _csr_of(np.ascontiguousarray(_cast(m.data, dtype)), np.ascontiguousarray(m.indices), m.indptr, m.shape)
    m.has_canonical_format = True
    return m


@dataclass
class Problem:
    """Checked and converted arguments: what both implementations compute on."""
    weights: list
    biases: list
    X: object                  # (N, d_0), dtype: an ndarray, or a canonical scipy.sparse.csr_matrix
    labels: Optional[np.ndarray]   # (N,) int64, softmax labels
    targets: Optional[np.ndarray]  # (N, k) dtype: sigmoid targets or softmax distributions
    sample_weight: Optional[np.ndarray]  # (N,) dtype
    head: str
    reduction: str
    dtype: np.dtype

    @property
    def scale(self) -> float:
        """Factor applied to the summed loss: 1 for "sum", 1/total weight for "mean"."""
        if self.reduction == "sum":
            return 1.0
        n = self.X.shape[0]
        total = float(n) if self.sample_weight is None else float(np.sum(self.sample_weight, dtype=np.float64))
        return 1.0 / total


def _check_y(y, head: str, n: int, k: int, dtype, values: bool):
    """Return (labels, targets): exactly one is not None. values=False leaves the element-wise checks
    (range of integer labels, range of targets) to the native binding, which makes them in one pass."""
    y = _as_array(y, "y")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must be a real array, got dtype {y.dtype}")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D (N,) or 2-D (N, {k}), got {y.ndim}-D array of shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"y must have {n} rows to match X, got shape {y.shape}")
    if y.ndim == 2 and y.shape[1] != k:
        raise ValueError(f"y must have shape ({n}, {k}) to match the {k} outputs, got {y.shape}")

    if head in ("sigmoid", "identity"):
        if y.ndim == 1 and k != 1:
            raise ValueError(f"y of shape ({n},) needs one output unit; the network has {k}: pass y of shape ({n}, {k})")
        t = _cast(y, dtype).reshape(n, k)
        ok = (lambda t: (t >= 0) & (t <= 1)) if head == "sigmoid" else np.isfinite  # both reject NaN
        if values and not np.all(ok(t)):
            raise ValueError(TARGET_MESSAGE[head])
        return None, t

    # softmax
    if y.ndim == 1:
        if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
            raise ValueError("y as 1-D labels must hold integers; got non-integral or non-finite floats")
        # floats and uint64 are range-checked here, before the cast, so nothing wraps
        if (values or y.dtype.kind == "f" or y.dtype == np.uint64) and n and (y.min() < 0 or y.max() >= k):
            raise LabelRangeError(label_range_message(k, y.min(), y.max()))
        labels = y.astype(np.int64, copy=False)
        return labels, None
    t = _cast(y, dtype)
    if values and not np.all((t >= 0) & np.isfinite(t)):
        raise ValueError(TARGET_MESSAGE["softmax"])
    return None, t


def check_sample_weight(sample_weight, n: int, dtype, values: bool = True):
    if sample_weight is None:
        return None
    w = _as_array(sample_weight, "sample_weight")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be a real array, got dtype {w.dtype}")
    _check_ndim(w, 1, "sample_weight", f"({n},)")
    if w.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},) to match X, got {w.shape}")
    w = _cast(w, dtype)
    if values and not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError(SAMPLE_WEIGHT_MESSAGE)
    return w


def check_problem(weights, biases, X, y, head, reduction, sample_weight) -> Problem:
    """Every rule, the element-wise ones in NumPy (the reference's checks)."""
    head = check_head(head)
    reduction = check_reduction(reduction)
    Ws, bs, dtype = check_network(weights, biases)
    X = check_X(X, Ws[0].shape[0], dtype)
    n, k = X.shape[0], Ws[-1].shape[1]
    labels, targets = _check_y(y, head, n, k, dtype, True)
    w = check_sample_weight(sample_weight, n, dtype, True)
    p = Problem(Ws, bs, X, labels, targets, w, head, reduction, dtype)
    check_total_weight(reduction, n if w is None else float(np.sum(w, dtype=np.float64)), n)
    return p


def check_data(X, y, sample_weight, head: str, d0: int, k: int, dtype):
    """The shape and dtype rules of X, y and sample_weight, with their conversions: (X, labels, targets,
    sample_weight). The element-wise rules are left to the native scan (mlpgrad._native.bind_data)."""
    X = check_X(X, d0, dtype)
    n = X.shape[0]
    labels, targets = _check_y(y, head, n, k, dtype, values=False)
    return X, labels, targets, check_sample_weight(sample_weight, n, dtype, values=False)


def check_total_weight(reduction: str, total: float, n: int) -> None:
    """reduction="mean" divides by the total weight, which must be positive."""
    if reduction == "mean" and not total > 0:
        raise ValueError("reduction='mean' needs a positive total weight: "
                         + ("X has no rows (N = 0)" if n == 0 else "sample_weight sums to 0"))


def check_layer_sizes(layer_sizes) -> tuple:
    """d_0 .. d_L as a tuple of ints, at least two, each >= 1."""
    if isinstance(layer_sizes, (str, bytes, np.ndarray)) and not (isinstance(layer_sizes, np.ndarray)
                                                                  and layer_sizes.ndim == 1):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {_describe(layer_sizes)}")
    try:
        sizes = tuple(operator.index(s) for s in layer_sizes)
    except TypeError:
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes must hold at least 2 sizes (d_0 and d_L), got {list(sizes)}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"layer_sizes must all be >= 1, got {list(sizes)}")
    return sizes


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    """float32 or float64 (either byte order names the native one)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    native = float_dtype(dt)
    if native is None:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return native


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0, as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return bool(value)


def check_n_threads(n_threads) -> int:
    if n_threads is None:
        return 0
    try:
        value = operator.index(n_threads)
    except TypeError:
        raise TypeError(f"n_threads must be None or an int in [1, {MAX_THREADS}], got {_describe(n_threads)}") from None
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(f"n_threads must be None or an int in [1, {MAX_THREADS}], got {value}")
    return value


# -- the per-sample functions' arguments (issue 12) --------------------------------------------------------

def _is_real_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def check_max_norm(max_norm, n_layers: int):
    """A float (whole-gradient clipping: > 0, +inf allowed) or a tuple of ``n_layers`` floats (per-layer clipping:
    each > 0, +inf allowed). A 0-d array counts as a number, a 1-D array as a sequence."""
    expected = (f"a real number > 0 (whole-gradient clipping) or a sequence of {n_layers} real numbers > 0 "
                f"(per-layer clipping, one per layer)")
    if isinstance(max_norm, np.ndarray) and max_norm.ndim == 0:
        max_norm = max_norm[()]
    if _is_real_number(max_norm):
        value = float(max_norm)
        if not value > 0:  # also NaN
            raise ValueError(f"max_norm must be {expected}, got {value}")
        return value
    if isinstance(max_norm, (str, bytes)) or not isinstance(max_norm, (list, tuple, np.ndarray)):
        raise TypeError(f"max_norm must be {expected}, got {_describe(max_norm)}")
    if isinstance(max_norm, np.ndarray) and max_norm.ndim != 1:
        raise ValueError(f"max_norm must be {expected}, got an array of shape {max_norm.shape}")
    if len(max_norm) != n_layers:
        raise ValueError(f"max_norm must be {expected}, got a sequence of length {len(max_norm)}")
    values = []
    for l, v in enumerate(max_norm):
        if not _is_real_number(v):
            raise TypeError(f"max_norm must be {expected}, got {_describe(v)} at position {l}")
        v = float(v)
        if not v > 0:
            raise ValueError(f"max_norm must be {expected}, got {v} at position {l}")
        values.append(v)
    return tuple(values)


def check_vectors(V, P: int, dtype):
    """(V2, one_d): V as a C-contiguous (P, m) array of dtype (V itself when it already is one, else a converted
    copy; never written), and whether V was given as one vector (P,)."""
    V = _as_array(V, "V")
    if V.dtype.kind not in "iuf":
        raise TypeError(f"V must be a real array (integer or floating), got dtype {V.dtype}")
    if not (V.shape == (P,) or (V.ndim == 2 and V.shape[0] == P and V.shape[1] >= 1)):
        raise ValueError(f"V must have shape ({P},) or ({P}, m) with m >= 1 (P = the number of parameters), "
                         f"got shape {V.shape}")
    one_d = V.ndim == 1
    V2 = np.ascontiguousarray(_cast(V, dtype)).reshape(P, -1)
    if not np.all(np.isfinite(V2)):
        raise ValueError(f"V must be finite (after conversion to {np.dtype(dtype)}), got NaN or inf")
    return V2, one_d


def check_second_set(X2, y2) -> bool:
    """grad_gram's optional second data set: True when both are given, False when neither is."""
    if X2 is not None and y2 is None:
        raise ValueError("y2 must be given with X2 (the targets of the second set), got None")
    if y2 is not None and X2 is None:
        raise ValueError("X2 must be given with y2 (the inputs of the second set), got None")
    return X2 is not None


@contextlib.contextmanager
def renamed_arguments(names: dict):
    """Inside, a TypeError or ValueError names ``names[a]`` wherever it named argument ``a``: the rules of X and y
    applied to X2 and y2 (``renamed_arguments({"X": "X2", "y": "y2"})``), with their own messages. Every message
    above names its argument as a whole word."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise type(exc)(pattern.sub(lambda m: names[m.group(1)], str(exc))) from None


def check_rows_out(out, n: int, P: int, dtype) -> None:
    """out= of per_sample_grads: a writeable C-contiguous (N, P) array of the parameters' dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array of shape ({n}, {P}) and dtype {dtype}, got {_describe(out)}")
    if out.dtype != dtype:
        raise TypeError(f"out must have the parameters' dtype {dtype}, got {out.dtype}")
    if out.shape != (n, P) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writeable C-contiguous array of shape ({n}, {P}), got shape {out.shape}"
                         + ("" if out.flags.writeable else " (read-only)")
                         + ("" if out.flags.c_contiguous else " (not C-contiguous)"))
