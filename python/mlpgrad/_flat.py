"""The flat parameter layout, public as ``mlpgrad.pack`` / ``mlpgrad.unpack``: every W_l row-major, layer by
layer, then every b_l (scikit-learn's ``_pack`` order). The one owner of the layout in Python;
cpp/include/mlpgrad/layout.hpp owns it in C++."""

from __future__ import annotations

import functools
from typing import List, Sequence, Tuple

import numpy as np

from ._checks import _describe, check_layer_sizes, check_network, float_dtype
from ._types import FloatArray, Params

__all__ = ["pack", "unpack", "n_params"]


def n_params(layer_sizes) -> int:
    """P = sum_l d_{l-1} d_l + d_l."""
    sizes = check_layer_sizes(layer_sizes)
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def n_weights(sizes) -> int:
    """The number of weights (the penalized parameters), which come first."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def pack(weights: Params, biases: Params) -> FloatArray:
    """The parameters as one new vector theta (P,) of their dtype: W_1.ravel(), ..., W_L.ravel(), b_1, ..., b_L.

    scikit-learn's ``_pack`` order, the order of every flat vector in mlpgrad (gradients, V, Objective's theta).

    Parameters
    ----------
    weights, biases : sequence of array_like
        As in :func:`mlpgrad.loss_and_grad`: ``W_l`` (d_{l-1}, d_l) and ``b_l`` (d_l,), one float dtype.

    Returns
    -------
    ndarray
        theta (P,), ``P = sum_l d_{l-1} d_l + d_l``, a new array of the parameters' dtype.

    Raises
    ------
    TypeError
        Parameters of the wrong kind or dtype, or of mixed dtypes.
    ValueError
        Shapes that do not chain.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> mlpgrad.pack([np.ones((2, 3))], [np.zeros(3)])
    array([1., 1., 1., 1., 1., 1., 0., 0., 0.])
    """
    Ws, bs, dtype = check_network(weights, biases)
    theta = np.empty(sum(W.size + b.size for W, b in zip(Ws, bs)), dtype=dtype)
    pos = 0
    for a in Ws + bs:
        theta[pos:pos + a.size] = a.ravel()
        pos += a.size
    return theta


def unpack(theta: FloatArray, layer_sizes: Sequence[int]) -> Tuple[List[FloatArray], List[FloatArray]]:
    """Views ``(weights, biases)`` of theta (..., P) for layer sizes d_0 .. d_L: ``weights[l]`` of shape
    (..., d_l, d_{l+1}) and ``biases[l]`` (..., d_{l+1}); never a copy, so writing to a view writes theta.

    Parameters
    ----------
    theta : ndarray
        (..., P) float32 or float64 (either byte order), in :func:`pack` order; leading axes are kept (a batch of
        parameter vectors, e.g. the rows of ``per_sample_grads``).
    layer_sizes : sequence of int
        d_0 .. d_L, at least two, each >= 1.

    Returns
    -------
    weights, biases : list of ndarray
        Views of theta.

    Raises
    ------
    TypeError
        theta not a NumPy array of a float dtype, or layer_sizes not a sequence of ints.
    ValueError
        theta's last axis is not P for these layer sizes, or a size < 1.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> weights, biases = mlpgrad.unpack(np.arange(9.0), [2, 3])
    >>> weights[0].shape, biases[0]
    ((2, 3), array([6., 7., 8.]))
    """
    sizes = check_layer_sizes(layer_sizes)
    if not isinstance(theta, np.ndarray):
        raise TypeError(f"theta must be a NumPy array (unpack returns views of it), got {_describe(theta)}")
    if float_dtype(theta.dtype) is None:  # either byte order: views are of theta as it is
        raise TypeError(f"theta must have dtype float32 or float64, got {theta.dtype}")
    P = n_params(sizes)
    if theta.ndim == 0 or theta.shape[-1] != P:
        raise ValueError(f"theta must have shape (..., {P}) for layer sizes {list(sizes)} (P = {P}), "
                         f"got shape {theta.shape}")
    return views(theta, sizes)


@functools.lru_cache(maxsize=64)
def _offsets(sizes: tuple):
    """((start, stop, d_in, d_out) of every W_l, (start, stop) of every b_l) for layer sizes d_0 .. d_L."""
    weights, biases, pos = [], [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        weights.append((pos, pos + a * b, a, b))
        pos += a * b
    for b in sizes[1:]:
        biases.append((pos, pos + b))
        pos += b
    return tuple(weights), tuple(biases)


def views(theta: np.ndarray, sizes: tuple):
    """unpack for arguments already checked (sizes a tuple of ints): the package's own fast path."""
    w_offsets, b_offsets = _offsets(sizes)
    if theta.ndim == 1:
        return ([theta[s:e].reshape(a, b) for s, e, a, b in w_offsets], [theta[s:e] for s, e in b_offsets])
    lead = theta.shape[:-1]  # splitting the last axis into two: always a view
    return ([theta[..., s:e].reshape(*lead, a, b) for s, e, a, b in w_offsets],
            [theta[..., s:e] for s, e in b_offsets])
