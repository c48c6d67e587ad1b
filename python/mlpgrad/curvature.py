"""Curvature of the loss: Hessian- and Gauss-Newton-vector products and the Gauss-Newton diagonal, each from
one native pass over the batch that never forms a (P, P) matrix.

``H = d^2 L / d theta^2`` (exact: the sigmoid layers' second derivatives included) and the generalized
Gauss-Newton matrix ``G = sum_i c_i J_i^T (d^2 l_i / d z_L^2) J_i``, ``J_i = d z_{L,i} / d theta``, for the loss
``L = sum_i c_i l_i`` of ``mlpgrad.loss_and_grad`` (c_i = w_i for reduction "sum", w_i / sum_j w_j for "mean").
G is symmetric positive semi-definite; for these heads it equals the Fisher information. Vectors and results are
in ``mlpgrad.pack`` order. ``mlpgrad.reference`` holds the same functions in plain NumPy (the specification;
``docs/derivation.md`` §2.8 the algebra).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _native
from ._checks import check_n_threads, check_vectors
from ._types import ArrayLike, FloatArray, Params, XLike
from .per_sample import _Bound

__all__ = ["hvp", "ggn_vp", "ggn_diag"]

# V's columns per native pass: the pass keeps one gradient-sized buffer per column and group of chunks.
_COLUMNS = 16


def products_of(op: str, theta, sizes, data, reduction: str, V, threads: int, alpha: float = 0.0,
                n_weights: int = 0):
    """H V or G V (op "hvp" / "ggn_vp") for V as check_vectors takes it: (P,) or (P, m) of theta's dtype; plus
    alpha V on the first n_weights rows (an Objective's penalty alpha / 2 ||W||^2 has Hessian alpha I there)."""
    V2, one_d = check_vectors(V, len(theta), theta.dtype)
    blocks = [_native.curvature(theta, sizes, data, reduction, op, threads,
                                V=V2[:, j:j + _COLUMNS].copy() if V2.shape[1] > _COLUMNS else V2)
              for j in range(0, V2.shape[1], _COLUMNS)]
    out = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    add_penalty(out, V2, alpha, n_weights)
    return out[:, 0] if one_d else out


def add_penalty(out, V2, alpha: float, n_weights: int) -> None:
    """The curvature of an Objective's penalty alpha / 2 ||W||^2 (alpha I on the first n_weights rows, the
    weights), added in place: alpha V2 to a product out (P, m), or alpha to a diagonal out (P,) when V2 is None."""
    if alpha:
        out[:n_weights] += out.dtype.type(alpha) * (1 if V2 is None else V2[:n_weights])


def diag_of(theta, sizes, data, reduction: str, threads: int):
    """diag(G) (P,)."""
    return _native.curvature(theta, sizes, data, reduction, "ggn_diag", threads)


def hvp(weights: Params, biases: Params, X: XLike, y: ArrayLike, V: ArrayLike, *, head: str,
        reduction: str = "sum", sample_weight: Optional[ArrayLike] = None,
        n_threads: Optional[int] = None) -> FloatArray:
    """``H V``, H the exact Hessian of :func:`mlpgrad.loss_and_grad`'s L (the sigmoid layers' second derivatives
    included), pack order.

    Pearlmutter's R-operator: the directional derivatives of the forward pass and of the backward pass, beside
    them, in one pass per 16 columns of V. About 2.3x the flops of one gradient per vector (the forward and the
    ordinary backward are shared by the columns).

    Parameters
    ----------
    weights, biases, X, y, head, reduction, sample_weight, n_threads
        As in :func:`mlpgrad.loss_and_grad`.
    V : array_like
        (P,) or (P, m), pack order; its values are converted to the parameters' dtype and must be finite.

    Returns
    -------
    ndarray
        (P,) for V (P,), (P, m) for V (P, m), the parameters' dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`; for a V of the wrong dtype or shape, or not finite.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((1, 2))], [np.zeros(2)]
    >>> mlpgrad.hvp(W, b, np.ones((1, 1)), np.array([0]), np.array([0., 0., 1., 0.]), head="softmax")
    array([ 0.25, -0.25,  0.25, -0.25])
    """
    b = _Bound(weights, biases, X, y, head, reduction, sample_weight)
    return products_of("hvp", b.theta, b.sizes, b.data, b.reduction, V, check_n_threads(n_threads))


def ggn_vp(weights: Params, biases: Params, X: XLike, y: ArrayLike, V: ArrayLike, *, head: str,
           reduction: str = "sum", sample_weight: Optional[ArrayLike] = None,
           n_threads: Optional[int] = None) -> FloatArray:
    """``G V``, G the generalized Gauss-Newton matrix of L (module docstring), pack order.

    ``J V`` by the R-forward, the head's Hessian, then the ordinary backward of the result (no second derivative
    of a hidden layer). About 1.6x the flops of one gradient per vector.

    Parameters
    ----------
    weights, biases, X, y, head, reduction, sample_weight, n_threads
        As in :func:`mlpgrad.loss_and_grad`.
    V : array_like
        (P,) or (P, m), pack order; its values are converted to the parameters' dtype and must be finite.

    Returns
    -------
    ndarray
        (P,) for V (P,), (P, m) for V (P, m), the parameters' dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`; for a V of the wrong dtype or shape, or not finite.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((1, 2))], [np.zeros(2)]
    >>> mlpgrad.ggn_vp(W, b, np.ones((1, 1)), np.array([0]), np.array([0., 0., 1., 0.]), head="softmax")
    array([ 0.25, -0.25,  0.25, -0.25])
    """
    b = _Bound(weights, biases, X, y, head, reduction, sample_weight)
    return products_of("ggn_vp", b.theta, b.sizes, b.data, b.reduction, V, check_n_threads(n_threads))


def ggn_diag(weights: Params, biases: Params, X: XLike, y: ArrayLike, *, head: str, reduction: str = "sum",
             sample_weight: Optional[ArrayLike] = None, n_threads: Optional[int] = None) -> FloatArray:
    """``diag(G)`` (P,), pack order.

    With ``S_i S_i^T = c_i d^2 l_i / d z_L^2`` (k columns), it is ``sum_i sum_j (J_i^T S_i e_j)^2``: k backward
    passes of the columns of S, each followed by the per-sample squares' products of
    ``mlpgrad.sum_squared_grads``: about k times the cost of a gradient, no (N, P) memory.

    Parameters
    ----------
    weights, biases, X, y, head, reduction, sample_weight, n_threads
        As in :func:`mlpgrad.loss_and_grad`.

    Returns
    -------
    ndarray
        (P,), the parameters' dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad`.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((1, 2))], [np.zeros(2)]
    >>> mlpgrad.ggn_diag(W, b, np.ones((1, 1)), np.array([0]), head="softmax")
    array([0.25, 0.25, 0.25, 0.25])
    """
    b = _Bound(weights, biases, X, y, head, reduction, sample_weight)
    return diag_of(b.theta, b.sizes, b.data, b.reduction, check_n_threads(n_threads))
