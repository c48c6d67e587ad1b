"""Per-sample gradients and what is computed from them, each in one native pass that never forms the (N, P)
matrix of per-sample gradients unless asked to (``per_sample_grads``).

``g_i`` is the gradient of sample i's own loss ``l_i`` (no sample weight, no reduction) with respect to the flat
parameters in ``mlpgrad.pack`` order. For layer l, with ``h_{l-1,i}`` its input row (``h_0 = X``) and
``delta_{l,i} = dl_i/dz_{l,i}``, the W_l part of g_i is the outer product ``h_{l-1,i} delta_{l,i}^T`` and the b_l
part is ``delta_{l,i}``, so ``||g_{i,l}||^2 = (||h_{l-1,i}||^2 + 1) ||delta_{l,i}||^2``: norms cost the forward
pass and the deltas, not N P. ``mlpgrad.reference`` holds the same functions in plain NumPy (the specification).
"""

from __future__ import annotations

import numpy as np

from . import _native
from ._checks import (check_flag, check_head, check_max_norm, check_n_threads, check_network, check_reduction,
                      check_rows_out, check_second_set, check_total_weight, check_vectors, renamed_arguments)
from ._flat import pack, views
from ._types import Gradients

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


def per_sample_grad_norms(weights, biases, X, y, *, head, per_layer=False, n_threads=None):
    """``||g_i||`` (N,), or with ``per_layer=True`` ``||g_{i,l}||`` (N, L), layer l's W_l and b_l together.

    Cost: the forward pass and the deltas of every layer (no weight-gradient products), O(N sum_l d_l) memory.
    """
    b = _Bound(weights, biases, X, y, head)
    return norms_of(b.theta, b.sizes, b.data, check_flag(per_layer, "per_layer"), check_n_threads(n_threads))


def clipped_grad(weights, biases, X, y, *, head, max_norm, reduction="sum", sample_weight=None, n_threads=None):
    """``(loss, Gradients(weights, biases, None), norms)``: the gradient of ``sum_i c_i f_i l_i`` with the clip
    factors f held fixed, c_i as in ``reduction`` (w_i, or w_i / sum_j w_j for "mean").

    ``max_norm`` a number (> 0, inf allowed): whole-gradient clipping, ``f_i = min(1, max_norm / ||g_i||)`` (1 when
    ``||g_i|| = 0``), norms (N,) = ``||g_i||``. A sequence of L numbers: per-layer clipping, layer l's part of every
    g_i clipped to ``max_norm[l]``, norms (N, L). ``loss`` is the unclipped loss ``sum_i c_i l_i``.
    Cost: about one gradient (the weight products run on delta rows scaled by c_i f_i).
    """
    b = _Bound(weights, biases, X, y, head, reduction, sample_weight)
    clip = check_max_norm(max_norm, len(b.sizes) - 1)
    loss, grad, norms = clipped_of(b.theta, b.sizes, b.data, b.reduction, clip, check_n_threads(n_threads))
    return loss, b.gradients(grad), norms


def per_sample_grads(weights, biases, X, y, *, head, out=None, n_threads=None):
    """(N, P): row i is g_i in ``mlpgrad.pack`` order. Needs N * P * itemsize bytes for the result (written into
    ``out``, a writeable C-contiguous (N, P) array of the parameters' dtype, when given) and nothing more of that
    size. Memory-bound: prefer the functions below when a norm, a dot product or a sum is what is wanted."""
    b = _Bound(weights, biases, X, y, head)
    return rows_of(b.theta, b.sizes, b.data, out, check_n_threads(n_threads))


def grad_dot(weights, biases, X, y, V, *, head, n_threads=None):
    """``g_i . V`` (N,) for V (P,), or (N, m) for V (P, m) (V's values converted to the parameters' dtype): one
    product of every layer's input with V's block per layer, about the cost of one gradient per vector (in passes
    of at most 64 vectors)."""
    b = _Bound(weights, biases, X, y, head)
    return dot_of(b.theta, b.sizes, b.data, V, check_n_threads(n_threads))


def grad_gram(weights, biases, X, y, X2=None, y2=None, *, head, n_threads=None):
    """(N, N2): entry (i, j) = ``g_i . g'_j``, g' the per-sample gradients of (X2, y2) (default: X, y; both or
    neither). Computed as ``sum_l (h_{l-1,i} . h'_{l-1,j} + 1) (delta_{l,i} . delta'_{l,j})``: 2 N N2 sum_l
    (d_{l-1} + d_l) flops and O((N + N2) sum_l d_l) memory besides the result, never the gradients."""
    b = _Bound(weights, biases, X, y, head)
    return gram_of(b.theta, b.sizes, b.data, b.head, X2, y2, check_n_threads(n_threads))


def sum_squared_grads(weights, biases, X, y, *, head, sample_weight=None, n_threads=None):
    """``Gradients(weights, biases, None)`` holding ``sum_i w_i g_i * g_i`` element-wise (w_i = 1 without
    sample_weight): the diagonal of the empirical Fisher, up to its normalization. About one gradient's cost: the
    weight products on squared inputs and deltas."""
    b = _Bound(weights, biases, X, y, head, "sum", sample_weight)
    return b.gradients(sumsq_of(b.theta, b.sizes, b.data, check_n_threads(n_threads)))
