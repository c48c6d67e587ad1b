"""The native API on lists of parameters: check the arguments (``_checks``), bind the batch once and call the
core through ``_native``."""

from __future__ import annotations

from typing import Optional, Tuple

from . import _native
from ._checks import (check_flag, check_head, check_n_threads, check_network, check_reduction, check_total_weight,
                      check_X)
from ._flat import views
from ._types import ArrayLike, FloatArray, Gradients, Params, XLike

__all__ = ["forward", "loss", "loss_and_grad"]


def forward(weights: Params, biases: Params, X: XLike, *, head: str,
            n_threads: Optional[int] = None) -> FloatArray:
    """Output probabilities (N, k): ``sigmoid(z_L)`` (sigmoid head) or ``softmax(z_L)`` (softmax head).

    Parameters
    ----------
    weights : sequence of array_like
        ``W_l`` of shape (d_{l-1}, d_l), one per layer, all float32 or all float64: the dtype of the computation.
    biases : sequence of array_like
        ``b_l`` of shape (d_l,), the weights' dtype.
    X : array_like or scipy.sparse matrix
        (N, d_0), any real dtype, converted once to the weights' dtype; sparse input (any format, matrix or array)
        is converted once to CSR.
    head : {"sigmoid", "softmax", "identity"}
        The output layer.
    n_threads : int or None, default=None
        None follows OpenMP's settings (``OMP_NUM_THREADS``); an int >= 1 caps this call.

    Returns
    -------
    ndarray
        (N, k) probabilities in the weights' dtype, k = d_L (z_L itself for the identity head).

    Raises
    ------
    TypeError
        An argument of the wrong kind or dtype (README, "Input rules").
    ValueError
        An argument of the wrong shape or value, e.g. X with the wrong number of columns.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((3, 2))], [np.zeros(2)]
    >>> mlpgrad.forward(W, b, np.ones((4, 3)), head="softmax")[0]
    array([0.5, 0.5])
    """
    head = check_head(head)
    weights, biases, dtype = check_network(weights, biases)
    X = check_X(X, weights[0].shape[0], dtype)
    return _native.forward(weights, biases, X, head, check_n_threads(n_threads))


def _checked(weights, biases, X, y, head, reduction, sample_weight):
    """(weights, biases, the bound batch, reduction) for a call on one batch."""
    head, reduction = check_head(head), check_reduction(reduction)
    weights, biases, dtype = check_network(weights, biases)
    data = _native.bind_data(X, y, sample_weight, head, weights[0].shape[0], weights[-1].shape[1], dtype)
    if reduction == "mean":
        check_total_weight(reduction, data.total_weight, data.n)
    return weights, biases, data, reduction


def loss(weights: Params, biases: Params, X: XLike, y: ArrayLike, *, head: str, reduction: str = "sum",
         sample_weight: Optional[ArrayLike] = None, n_threads: Optional[int] = None) -> float:
    """The loss as a Python float (see ``loss_and_grad``).

    Parameters
    ----------
    weights, biases, X, head, n_threads
        As in :func:`loss_and_grad`.
    y : array_like
        Targets, as in :func:`loss_and_grad`.
    reduction : {"sum", "mean"}, default="sum"
        ``sum_i w_i l_i``, or that divided by ``sum_i w_i``.
    sample_weight : array_like or None, default=None
        (N,) finite weights >= 0 (ones when None).

    Returns
    -------
    float
        L, computed in the weights' dtype.

    Raises
    ------
    TypeError
        An argument of the wrong kind or dtype.
    ValueError
        An argument of the wrong shape or value (labels out of range, negative weights, "mean" with total weight 0).

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((3, 2))], [np.zeros(2)]
    >>> round(mlpgrad.loss(W, b, np.ones((4, 3)), np.array([0, 1, 1, 0]), head="softmax", reduction="mean"), 6)
    0.693147
    """
    weights, biases, data, reduction = _checked(weights, biases, X, y, head, reduction, sample_weight)
    return _native.loss_and_grad(weights, biases, data, reduction, False, False, check_n_threads(n_threads))[0]


def loss_and_grad(weights: Params, biases: Params, X: XLike, y: ArrayLike, *, head: str, reduction: str = "sum",
                  sample_weight: Optional[ArrayLike] = None, input_grad: bool = False,
                  n_threads: Optional[int] = None) -> Tuple[float, Gradients]:
    """Loss and its gradients for the whole batch in one native call.

    ``L = sum_i c_i l_i`` with ``c_i = w_i`` (reduction "sum") or ``w_i / sum_j w_j`` ("mean"), ``l_i`` the
    binary cross-entropy summed over the outputs (sigmoid head) or the cross-entropy of the softmax.

    Parameters
    ----------
    weights : sequence of array_like
        ``W_l`` of shape (d_{l-1}, d_l), one per layer, all float32 or all float64: the dtype of the computation
        and of every gradient.
    biases : sequence of array_like
        ``b_l`` of shape (d_l,), the weights' dtype.
    X : array_like or scipy.sparse matrix
        (N, d_0), any real dtype, converted once to the weights' dtype. N = 0 is allowed. Sparse input (any
        format, matrix or array) is converted once to CSR (sorted indices, duplicates summed; the caller's matrix
        is not modified); dL/dX is returned dense.
    y : array_like
        Sigmoid head: (N,) when k == 1, or (N, k), values in [0, 1]. Softmax head: integer labels (N,) in [0, k)
        (integral floats accepted), or (N, k) non-negative float targets. Identity head: (N,) when k == 1, or
        (N, k), any finite values.
    head : {"sigmoid", "softmax", "identity"}
        The output layer and its loss.
    reduction : {"sum", "mean"}, default="sum"
        "mean" needs a positive total weight.
    sample_weight : array_like or None, default=None
        (N,) finite weights >= 0 (ones when None).
    input_grad : bool, default=False
        Also return dL/dX (dense (N, d_0), for a sparse X too).
    n_threads : int or None, default=None
        None follows OpenMP's settings (``OMP_NUM_THREADS``); an int >= 1 caps this call.

    Returns
    -------
    loss : float
        L.
    grads : Gradients
        ``Gradients(weights, biases, input)``: ``weights[l]`` / ``biases[l]`` have the parameters' shapes and
        dtype (views of one flat gradient in ``mlpgrad.pack`` order); ``input`` is dL/dX (N, d_0) if
        ``input_grad`` else None.

    Raises
    ------
    TypeError
        An argument of the wrong kind or dtype (README, "Input rules").
    ValueError
        An argument of the wrong shape or value: labels out of range, targets outside their range, negative or
        non-finite sample weights, "mean" with a total weight of 0.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> W, b = [np.zeros((3, 2))], [np.zeros(2)]
    >>> loss, grads = mlpgrad.loss_and_grad(W, b, np.ones((4, 3)), np.array([0, 1, 1, 1]), head="softmax")
    >>> grads.biases[0]
    array([ 1., -1.])
    """
    weights, biases, data, reduction = _checked(weights, biases, X, y, head, reduction, sample_weight)
    input_grad = check_flag(input_grad, "input_grad")
    value, grad, dX = _native.loss_and_grad(weights, biases, data, reduction, True, input_grad,
                                            check_n_threads(n_threads))
    dWs, dbs = views(grad, (weights[0].shape[0],) + tuple(W.shape[1] for W in weights))
    return value, Gradients(dWs, dbs, dX)
