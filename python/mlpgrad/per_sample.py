"""Per-sample gradients and what is computed from them, each in one native pass that never forms the (N, P)
matrix of per-sample gradients unless asked to (``per_sample_grads``).

``g_i`` is the gradient of sample i's own loss ``l_i`` (no sample weight, no reduction) with respect to the flat
parameters in ``mlpgrad.pack`` order. For layer l, with ``h_{l-1,i}`` its input row (``h_0 = X``) and
``delta_{l,i} = dl_i/dz_{l,i}``, the W_l part of g_i is the outer product ``h_{l-1,i} delta_{l,i}^T`` and the b_l
part is ``delta_{l,i}``, so ``||g_{i,l}||^2 = (||h_{l-1,i}||^2 + 1) ||delta_{l,i}||^2``: norms cost the forward
pass and the deltas, not N P. ``mlpgrad.reference`` holds the same functions in plain NumPy (the specification).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _native
from ._checks import (check_flag, check_head, check_max_norm, check_n_threads, check_network, check_reduction,
                      check_rows_out, check_second_set, check_total_weight, check_vectors, renamed_arguments)
from ._flat import pack, views
from ._types import ArrayLike, FloatArray, Gradients, MaxNorm, Params, XLike

__all__ = ["per_sample_grad_norms", "clipped_grad", "per_sample_grads", "grad_dot", "grad_gram",
           "sum_squared_grads"]


class _Bound:
    """One call's checked arguments: theta (the parameters packed), the layer sizes and the bound batch."""

    def __init__(self, weights, biases, X, y, head, reduction="sum", sample_weight=None):
        self.head, self.reduction = check_head(head), check_reduction(reduction)
        weights, biases, self.dtype = check_network(weights, biases)
        self.sizes = (weights[0].shape[0],) + tuple(W.shape[1] for W in weights)
        self.data = _native.bind_data(X, y, sample_weight, self.head, self.sizes[0], self.sizes[-1], self.dtype)
        if self.reduction == "mean":
            check_total_weight(self.reduction, self.data.total_weight, self.data.n)
        self.theta = pack(weights, biases)

    def gradients(self, flat) -> Gradients:
        dWs, dbs = views(flat, self.sizes)
        return Gradients(dWs, dbs, None)


# The computations on checked arguments: theta (P,), the layer sizes as a tuple, a bound batch. The functions
# below and mlpgrad.Objective's methods call them.

def norms_of(theta, sizes, data, per_layer: bool, threads: int):
    _, _, norms, layer_norms = _native.per_sample(theta, sizes, data, "sum", "norms", threads, norms=not per_layer,
                                                  layer_norms=per_layer)
    return layer_norms if per_layer else norms


def clipped_of(theta, sizes, data, reduction: str, max_norm, threads: int):
    """(loss, flat gradient (P,), norms) for max_norm as check_max_norm returns it."""
    per_layer = isinstance(max_norm, tuple)
    loss, grad, norms, layer_norms = _native.per_sample(theta, sizes, data, reduction, "clipped", threads,
                                                        max_norm=max_norm if per_layer else (max_norm,),
                                                        norms=not per_layer, layer_norms=per_layer)
    return loss, grad, layer_norms if per_layer else norms


def rows_of(theta, sizes, data, out, threads: int):
    if out is not None:
        check_rows_out(out, data.n, len(theta), theta.dtype)
    return _native.per_sample(theta, sizes, data, "sum", "grads", threads, out=out)[1]


# V's columns per native pass: each pass redoes the forward and the deltas, and its scratch grows with the columns.
_DOT_COLUMNS = 64


def dot_of(theta, sizes, data, V, threads: int):
    V2, one_d = check_vectors(V, len(theta), theta.dtype)
    blocks = [_native.per_sample(theta, sizes, data, "sum", "dot", threads,
                                 V=V2[:, j:j + _DOT_COLUMNS].copy() if V2.shape[1] > _DOT_COLUMNS else V2)[1]
              for j in range(0, V2.shape[1], _DOT_COLUMNS)]
    D = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    return D[:, 0] if one_d else D


def gram_of(theta, sizes, data, head: str, X2, y2, threads: int):
    data2 = None
    if check_second_set(X2, y2):
        with renamed_arguments({"X": "X2", "y": "y2"}):
            data2 = _native.bind_data(X2, y2, None, head, sizes[0], sizes[-1], theta.dtype)
    return _native.grad_gram(theta, sizes, data, data2, threads)


def sumsq_of(theta, sizes, data, threads: int):
    return _native.per_sample(theta, sizes, data, "sum", "sumsq", threads)[1]


def per_sample_grad_norms(weights: Params, biases: Params, X: XLike, y: ArrayLike, *, head: str,
                          per_layer: bool = False, n_threads: Optional[int] = None) -> FloatArray:
    """``||g_i||`` (N,), or with ``per_layer=True`` ``||g_{i,l}||`` (N, L), layer l's W_l and b_l together.

    ``g_i`` is the gradient of sample i's own loss ``l_i`` (no sample weight, no reduction), in pack order.
    Cost: the forward pass and the deltas of every layer (no weight-gradient products), O(N sum_l d_l) memory.

    Parameters
    ----------
    weights, biases, X, y, head, n_threads
        As in :func:`mlpgrad.loss_and_grad`.
    per_layer : bool, default=False
        One norm per sample and layer instead of one per sample.

    Returns
    -------
    ndarray
        (N,) or (N, L), the parameters' dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`; TypeError for a per_layer that is not a bool.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((3, 2))], [np.zeros(2)]
    >>> mlpgrad.per_sample_grad_norms(W, b, np.zeros((2, 3)), np.array([0, 1]), head="softmax")
    array([0.70710678, 0.70710678])
    """
    b = _Bound(weights, biases, X, y, head)
    return norms_of(b.theta, b.sizes, b.data, check_flag(per_layer, "per_layer"), check_n_threads(n_threads))


def clipped_grad(weights: Params, biases: Params, X: XLike, y: ArrayLike, *, head: str, max_norm: MaxNorm,
                 reduction: str = "sum", sample_weight: Optional[ArrayLike] = None,
                 n_threads: Optional[int] = None) -> Tuple[float, Gradients, FloatArray]:
    """``(loss, Gradients(weights, biases, None), norms)``: the gradient of ``sum_i c_i f_i l_i`` with the clip
    factors f held fixed, c_i as in ``reduction`` (w_i, or w_i / sum_j w_j for "mean").

    Cost: about one gradient (the weight products run on delta rows scaled by c_i f_i).

    Parameters
    ----------
    weights, biases, X, y, head, reduction, sample_weight, n_threads
        As in :func:`mlpgrad.loss_and_grad`.
    max_norm : float or sequence of float
        A number (> 0, inf allowed): whole-gradient clipping, ``f_i = min(1, max_norm / ||g_i||)`` (1 when
        ``||g_i|| = 0``). A sequence of L numbers: per-layer clipping, layer l's part of every g_i clipped to
        ``max_norm[l]``.

    Returns
    -------
    loss : float
        The unclipped loss ``sum_i c_i l_i``.
    grads : Gradients
        The clipped gradient, shaped like the parameters (``input`` is None).
    norms : ndarray
        (N,) ``||g_i||`` for whole-gradient clipping, (N, L) the layers' norms for per-layer clipping.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`; for a max_norm that is not a number > 0 or a sequence of L of them.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((3, 2))], [np.zeros(2)]
    >>> loss, grads, norms = mlpgrad.clipped_grad(W, b, np.zeros((2, 3)), np.array([0, 1]), head="softmax",
    ...                                           max_norm=0.5)
    >>> grads.biases[0], norms
    (array([0., 0.]), array([0.70710678, 0.70710678]))
    """
    b = _Bound(weights, biases, X, y, head, reduction, sample_weight)
    clip = check_max_norm(max_norm, len(b.sizes) - 1)
    loss, grad, norms = clipped_of(b.theta, b.sizes, b.data, b.reduction, clip, check_n_threads(n_threads))
    return loss, b.gradients(grad), norms


def per_sample_grads(weights: Params, biases: Params, X: XLike, y: ArrayLike, *, head: str,
                     out: Optional[FloatArray] = None, n_threads: Optional[int] = None) -> FloatArray:
    """(N, P): row i is g_i in ``mlpgrad.pack`` order.

    Needs N * P * itemsize bytes for the result and nothing more of that size. Memory-bound: prefer the other
    per-sample functions when a norm, a dot product or a sum is what is wanted.

    Parameters
    ----------
    weights, biases, X, y, head, n_threads
        As in :func:`mlpgrad.loss_and_grad`.
    out : ndarray or None, default=None
        A writeable C-contiguous (N, P) array of the parameters' dtype (native byte order) to write into.

    Returns
    -------
    ndarray
        (N, P) in the parameters' dtype: ``out`` when given.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`; for an out of the wrong type, dtype, shape or layout.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((1, 2))], [np.zeros(2)]
    >>> mlpgrad.per_sample_grads(W, b, np.ones((1, 1)), np.array([0]), head="softmax")
    array([[-0.5,  0.5, -0.5,  0.5]])
    """
    b = _Bound(weights, biases, X, y, head)
    return rows_of(b.theta, b.sizes, b.data, out, check_n_threads(n_threads))


def grad_dot(weights: Params, biases: Params, X: XLike, y: ArrayLike, V: ArrayLike, *, head: str,
             n_threads: Optional[int] = None) -> FloatArray:
    """``g_i . V`` (N,) for V (P,), or (N, m) for V (P, m).

    One product of every layer's input with V's block per layer, about the cost of one gradient per vector (in
    passes of at most 64 vectors).

    Parameters
    ----------
    weights, biases, X, y, head, n_threads
        As in :func:`mlpgrad.loss_and_grad`.
    V : array_like
        (P,) or (P, m), pack order, real; its values are converted to the parameters' dtype and must be finite.

    Returns
    -------
    ndarray
        (N,) or (N, m), the parameters' dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`; for a V of the wrong dtype or shape, or not finite.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((1, 2))], [np.zeros(2)]
    >>> mlpgrad.grad_dot(W, b, np.ones((1, 1)), np.array([0]), np.ones(4), head="softmax")
    array([0.])
    """
    b = _Bound(weights, biases, X, y, head)
    return dot_of(b.theta, b.sizes, b.data, V, check_n_threads(n_threads))


def grad_gram(weights: Params, biases: Params, X: XLike, y: ArrayLike, X2: Optional[XLike] = None,
              y2: Optional[ArrayLike] = None, *, head: str, n_threads: Optional[int] = None) -> FloatArray:
    """(N, N2): entry (i, j) = ``g_i . g'_j``, g' the per-sample gradients of (X2, y2) (default: X, y).

    Computed as ``sum_l (h_{l-1,i} . h'_{l-1,j} + 1) (delta_{l,i} . delta'_{l,j})``: 2 N N2 sum_l
    (d_{l-1} + d_l) flops and O((N + N2) sum_l d_l) memory besides the result, never the gradients.

    Parameters
    ----------
    weights, biases, X, y, head, n_threads
        As in :func:`mlpgrad.loss_and_grad`.
    X2, y2 : array_like or None, default=None
        A second set, both or neither, with the rules of X and y (X2 dense or sparse, whatever X is).

    Returns
    -------
    ndarray
        (N, N2), the parameters' dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad` (the messages of the second set name X2 and y2); ValueError for X2
        without y2 or y2 without X2.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((1, 2))], [np.zeros(2)]
    >>> mlpgrad.grad_gram(W, b, np.ones((2, 1)), np.array([0, 1]), head="softmax")
    array([[ 1., -1.],
           [-1.,  1.]])
    """
    b = _Bound(weights, biases, X, y, head)
    return gram_of(b.theta, b.sizes, b.data, b.head, X2, y2, check_n_threads(n_threads))


def sum_squared_grads(weights: Params, biases: Params, X: XLike, y: ArrayLike, *, head: str,
                      sample_weight: Optional[ArrayLike] = None, n_threads: Optional[int] = None) -> Gradients:
    """``Gradients(weights, biases, None)`` holding ``sum_i w_i g_i * g_i`` element-wise (w_i = 1 without
    sample_weight): the diagonal of the empirical Fisher, up to its normalization.

    About one gradient's cost: the weight products on squared inputs and deltas.

    Parameters
    ----------
    weights, biases, X, y, head, sample_weight, n_threads
        As in :func:`mlpgrad.loss_and_grad`.

    Returns
    -------
    Gradients
        Shaped like the parameters (``input`` is None).

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((1, 2))], [np.zeros(2)]
    >>> mlpgrad.sum_squared_grads(W, b, np.ones((2, 1)), np.array([0, 1]), head="softmax").biases[0]
    array([0.5, 0.5])
    """
    b = _Bound(weights, biases, X, y, head, "sum", sample_weight)
    return b.gradients(sumsq_of(b.theta, b.sizes, b.data, check_n_threads(n_threads)))
