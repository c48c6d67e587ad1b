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


def per_sample_grad_norms(weights, biases, X, y, *, head, per_layer=False, n_threads=None):
    """``||g_i||`` (N,), or with ``per_layer=True`` ``||g_{i,l}||`` (N, L), layer l's W_l and b_l together.

    Cost: the forward pass and the deltas of every layer (no weight-gradient products), O(N sum_l d_l) memory.
    """
    b = _Bound(weights, biases, X, y, head)
    per_layer = check_flag(per_layer, "per_layer")
    _, _, norms, layer_norms = _native.per_sample(b.theta, b.sizes, b.data, "sum", "norms", check_n_threads(n_threads),
                                                  norms=not per_layer, layer_norms=per_layer)
    return layer_norms if per_layer else norms


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
    per_layer = isinstance(clip, tuple)
    loss, grad, norms, layer_norms = _native.per_sample(
        b.theta, b.sizes, b.data, b.reduction, "clipped", check_n_threads(n_threads),
        max_norm=clip if per_layer else (clip,), norms=not per_layer, layer_norms=per_layer)
    return loss, b.gradients(grad), layer_norms if per_layer else norms


def per_sample_grads(weights, biases, X, y, *, head, out=None, n_threads=None):
    """(N, P): row i is g_i in ``mlpgrad.pack`` order. Needs N * P * itemsize bytes for the result (written into
    ``out``, a writeable C-contiguous (N, P) array of the parameters' dtype, when given). Memory-bound: prefer the
    functions below when a norm, a dot product or a sum is what is wanted."""
    b = _Bound(weights, biases, X, y, head)
    P = len(b.theta)
    if out is not None:
        check_rows_out(out, b.data.n, P, b.dtype)
    return _native.per_sample(b.theta, b.sizes, b.data, "sum", "grads", check_n_threads(n_threads), out=out)[1]


# V's columns per native pass: each pass redoes the forward and the deltas, and its scratch grows with the columns.
_DOT_COLUMNS = 64


def grad_dot(weights, biases, X, y, V, *, head, n_threads=None):
    """``g_i . V`` (N,) for V (P,), or (N, m) for V (P, m): one product of every layer's input with V's block per
    layer, about the cost of one gradient per vector (passes of at most 64 vectors)."""
    b = _Bound(weights, biases, X, y, head)
    V2, one_d = check_vectors(V, len(b.theta), b.dtype)
    threads = check_n_threads(n_threads)
    blocks = [_native.per_sample(b.theta, b.sizes, b.data, "sum", "dot", threads,
                                 V=V2[:, j:j + _DOT_COLUMNS].copy() if V2.shape[1] > _DOT_COLUMNS else V2)[1]
              for j in range(0, V2.shape[1], _DOT_COLUMNS)]
    D = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    return D[:, 0] if one_d else D


def grad_gram(weights, biases, X, y, X2=None, y2=None, *, head, n_threads=None):
    """(N, N2): entry (i, j) = ``g_i . g'_j``, g' the per-sample gradients of (X2, y2) (default: X, y). Computed as
    ``sum_l (h_{l-1,i} . h'_{l-1,j} + 1) (delta_{l,i} . delta'_{l,j})``: 2 N N2 sum_l (d_{l-1} + d_l) flops and
    O((N + N2) sum_l d_l) memory besides the result, never the gradients."""
    b = _Bound(weights, biases, X, y, head)
    data2 = None
    if check_second_set(X2, y2):
        with renamed_arguments({"X": "X2", "y": "y2"}):
            data2 = _native.bind_data(X2, y2, None, b.head, b.sizes[0], b.sizes[-1], b.dtype)
    return _native.grad_gram(b.theta, b.sizes, b.data, data2, check_n_threads(n_threads))


def sum_squared_grads(weights, biases, X, y, *, head, sample_weight=None, n_threads=None):
    """``Gradients(weights, biases, None)`` holding ``sum_i w_i g_i * g_i`` element-wise (w_i = 1 without
    sample_weight): the diagonal of the empirical Fisher, up to the normalization. About one gradient's cost: the
    weight products on squared inputs and deltas."""
    b = _Bound(weights, biases, X, y, head, "sum", sample_weight)
    grad = _native.per_sample(b.theta, b.sizes, b.data, "sum", "sumsq", check_n_threads(n_threads))[1]
    return b.gradients(grad)
