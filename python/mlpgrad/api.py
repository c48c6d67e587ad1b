"""The native API: check arguments in Python, compute in the C++ core (``mlpgrad._core``)."""

from __future__ import annotations

from . import _core
from ._checks import check_flag, check_head, check_n_threads, check_network, check_problem, check_X
from ._types import Gradients

__all__ = ["forward", "loss", "loss_and_grad"]

_HEAD_CODE = {"sigmoid": 0, "softmax": 1}
_REDUCTION_CODE = {"sum": 0, "mean": 1}


def forward(weights, biases, X, *, head, n_threads=None):
    """Output probabilities (N, k): ``sigmoid(z_L)`` (sigmoid head) or ``softmax(z_L)`` (softmax head).

    ``n_threads``: None follows OpenMP's settings (``OMP_NUM_THREADS``); an int >= 1 caps this call.
    """
    head = check_head(head)
    weights, biases, dtype = check_network(weights, biases)
    X = check_X(X, weights[0].shape[0], dtype)
    return _core.forward(weights, biases, X, _HEAD_CODE[head], check_n_threads(n_threads))


def _run(problem, want_grad, input_grad, n_threads):
    p = problem
    return _core.loss_and_grad(p.weights, p.biases, p.X, p.labels, p.targets, p.sample_weight,
                               _HEAD_CODE[p.head], _REDUCTION_CODE[p.reduction],
                               want_grad, input_grad, check_n_threads(n_threads))


def loss(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, n_threads=None):
    """The loss as a Python float (see ``loss_and_grad``)."""
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight, values=False)
    return _run(p, False, False, n_threads)[0]


def loss_and_grad(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, input_grad=False,
                  n_threads=None):
    """Loss and its gradients for the whole batch in one native call.

    Returns ``(loss, Gradients(weights, biases, input))``: ``weights[l]`` / ``biases[l]`` have the
    parameters' shapes and dtype; ``input`` is dL/dX (N, d_0) if ``input_grad`` else None.
    """
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight, values=False)
    value, dWs, dbs, dX = _run(p, True, check_flag(input_grad, "input_grad"), n_threads)
    return value, Gradients(list(dWs), list(dbs), dX)
