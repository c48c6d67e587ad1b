"""The native API on lists of parameters: check the arguments (``_checks``), bind the batch once and call the
core through ``_native``."""

from __future__ import annotations

from . import _native
from ._checks import (check_flag, check_head, check_n_threads, check_network, check_reduction, check_total_weight,
                      check_X)
from ._flat import views
from ._types import Gradients

__all__ = ["forward", "loss", "loss_and_grad"]


def forward(weights, biases, X, *, head, n_threads=None):
    """Output probabilities (N, k): ``sigmoid(z_L)`` (sigmoid head) or ``softmax(z_L)`` (softmax head).

    ``n_threads``: None follows OpenMP's settings (``OMP_NUM_THREADS``); an int >= 1 caps this call.
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


def loss(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, n_threads=None):
    """The loss as a Python float (see ``loss_and_grad``)."""
    weights, biases, data, reduction = _checked(weights, biases, X, y, head, reduction, sample_weight)
    return _native.loss_and_grad(weights, biases, data, reduction, False, False, check_n_threads(n_threads))[0]


def loss_and_grad(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, input_grad=False,
                  n_threads=None):
    """Loss and its gradients for the whole batch in one native call.

    Returns ``(loss, Gradients(weights, biases, input))``: ``weights[l]`` / ``biases[l]`` have the
    parameters' shapes and dtype (views of one flat gradient in ``mlpgrad.pack`` order); ``input`` is
    dL/dX (N, d_0) if ``input_grad`` else None.
    """
    weights, biases, data, reduction = _checked(weights, biases, X, y, head, reduction, sample_weight)
    input_grad = check_flag(input_grad, "input_grad")
    value, grad, dX = _native.loss_and_grad(weights, biases, data, reduction, True, input_grad,
                                            check_n_threads(n_threads))
    dWs, dbs = views(grad, (weights[0].shape[0],) + tuple(W.shape[1] for W in weights))
    return value, Gradients(dWs, dbs, dX)
