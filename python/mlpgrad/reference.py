"""The specification: losses and gradients of a sigmoid MLP in plain NumPy.

Read beside ``docs/derivation.md``; the names match the C++ core.  Row-vector
convention, a batch of N rows at a time:

    h_0 = X                                  (N, d_0)
    z_l = h_{l-1} @ W_l + b_l                (N, d_l)      W_l: (d_{l-1}, d_l), b_l: (d_l,)
    h_l = sigmoid(z_l)          for l < L
    z_L are the logits                       (N, k), k = d_L

Per-sample losses from the logits (finite for every finite input):

    sigmoid head:  l_i = sum_j softplus(z_ij) - y_ij z_ij          (binary cross-entropy)
                       = sum_j y_ij softplus(-z_ij) + (1 - y_ij) softplus(z_ij)
    softmax head:  l_i = sum_j y_ij (logsumexp(z_i) - z_ij)          (cross-entropy)

    L = sum_i w_i l_i  ("sum")   or   sum_i w_i l_i / sum_i w_i  ("mean")

Backward, with c_i = w_i (or w_i / sum w for "mean") and delta_l = dL/dz_l (N, d_l):

    delta_L = c * (p - y)           sigmoid head (p = sigmoid(z_L))
    delta_L = c * (p * sum_j y - y) softmax head (p = softmax(z_L)); = c * (p - y) when rows of y sum to 1
    dW_l = h_{l-1}^T @ delta_l      (d_{l-1}, d_l) = (d_{l-1}, N) @ (N, d_l)
    db_l = sum over rows of delta_l (d_l,)
    dh_{l-1} = delta_l @ W_l^T      (N, d_{l-1}) = (N, d_l) @ (d_l, d_{l-1})
    delta_{l-1} = dh_{l-1} * h_{l-1} * (1 - h_{l-1})
    dX = dh_0
"""

from __future__ import annotations

import numpy as np

from ._checks import check_flag, check_head, check_network, check_problem, check_X
from ._types import Gradients

__all__ = ["forward", "loss", "loss_and_grad"]


# -- layers --------------------------------------------------------------------------------------

def matmul(a, b):
    """a @ b, with NumPy's floating-point warnings off for the product alone: OpenBLAS's kernels can raise
    spurious 'invalid value' (or overflow, divide) flags on finite inputs whose result is finite
    (numpy/numpy#24067, #28967). Seen here once in CI, at random, on a (1, 5) @ (5, 3) float32 product."""
    with np.errstate(all="ignore"):
        return a @ b


def linear_forward(h, W, b):
    """z (N, d_out) = h (N, d_in) @ W (d_in, d_out) + b (d_out,)"""
    return matmul(h, W) + b


def linear_backward(delta, h, W, need_dh=True):
    """Given delta = dL/dz (N, d_out): dW (d_in, d_out), db (d_out,), dh (N, d_in) or None."""
    dW = matmul(h.T, delta)
    db = delta.sum(axis=0)
    dh = matmul(delta, W.T) if need_dh else None
    return dW, db, dh


def sigmoid_forward(z):
    """sigmoid(z) = 1 / (1 + exp(-z)), evaluated without overflow for any z."""
    e = np.exp(-np.abs(z))  # in (0, 1]
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(dh, h):
    """dL/dz = dL/dh * h (1 - h), from the saved output h = sigmoid(z)."""
    return dh * h * (1 - h)


# -- heads: loss and output delta from the logits ---------------------------------------------------

def softplus(z):
    """log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|))"""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def sigmoid_xent_forward(z, t):
    """Per-sample binary cross-entropy summed over units: (N,). t: (N, k) in [0, 1].

    -[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))] = t softplus(-z) + (1 - t) softplus(z)
    (= softplus(z) - t z, written so that a confident right answer keeps its small loss's precision).
    """
    return (t * softplus(-z) + (1 - t) * softplus(z)).sum(axis=1)


def sigmoid_xent_backward(z, t, c):
    """dL/dz = c (p - t), p = sigmoid(z); c: (N,) per-sample scale."""
    return c[:, None] * (sigmoid_forward(z) - t)


def log_softmax(z):
    """z - logsumexp(z) by rows. With m the row maximum (at column j*), logsumexp(z) = m + log1p(s),
    s = sum over j != j* of exp(z_j - m): every exponent <= 0, and log1p keeps tiny s exact."""
    rows, jmax = np.arange(z.shape[0]), z.argmax(axis=1)
    m = z[rows, jmax][:, None]
    e = np.exp(z - m)
    e[rows, jmax] = 0
    return (z - m) - np.log1p(e.sum(axis=1, keepdims=True))


def softmax_forward(z):
    return np.exp(log_softmax(z))


def softmax_xent_forward(z, t):
    """Per-sample cross-entropy (N,) = -sum_j t_ij log p_ij. t: (N, k) targets."""
    return -(t * log_softmax(z)).sum(axis=1)


def softmax_xent_backward(z, t, c):
    """dL/dz = c (p * sum_j t_j - t); equals c (p - t) when the targets sum to one."""
    p = softmax_forward(z)
    return c[:, None] * (p * t.sum(axis=1, keepdims=True) - t)


# -- the network ------------------------------------------------------------------------------------

def _forward_pass(weights, biases, X):
    """Returns (hs, z_L): hs[l] = h_l for l = 0..L-1 (hs[0] = X), and the logits."""
    hs = [X]
    for W, b in zip(weights[:-1], biases[:-1]):
        hs.append(sigmoid_forward(linear_forward(hs[-1], W, b)))
    return hs, linear_forward(hs[-1], weights[-1], biases[-1])


def _dense_targets(p):
    """Targets as an (N, k) array: labels become one-hot rows."""
    if p.labels is None:
        return p.targets
    n, k = p.X.shape[0], p.weights[-1].shape[1]
    t = np.zeros((n, k), dtype=p.dtype)
    t[np.arange(n), p.labels] = 1
    return t


def _sample_scale(p):
    """c_i: the factor of sample i's loss in L, shape (N,)."""
    w = np.ones(p.X.shape[0], dtype=p.dtype) if p.sample_weight is None else p.sample_weight
    return w * p.dtype.type(p.scale)


def forward(weights, biases, X, *, head):
    """Output probabilities (N, k): sigmoid(z_L) or softmax(z_L)."""
    head = check_head(head)
    weights, biases, dtype = check_network(weights, biases)
    X = check_X(X, weights[0].shape[0], dtype)
    _, z = _forward_pass(weights, biases, X)
    return sigmoid_forward(z) if head == "sigmoid" else softmax_forward(z)


def loss(weights, biases, X, y, *, head, reduction="sum", sample_weight=None):
    return loss_and_grad(weights, biases, X, y, head=head, reduction=reduction,
                         sample_weight=sample_weight)[0]


def loss_and_grad(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, input_grad=False):
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight)
    input_grad = check_flag(input_grad, "input_grad")
    t = _dense_targets(p)
    c = _sample_scale(p)
    hs, z = _forward_pass(p.weights, p.biases, p.X)

    if p.head == "sigmoid":
        per_sample, delta = sigmoid_xent_forward(z, t), sigmoid_xent_backward(z, t, c)
    else:
        per_sample, delta = softmax_xent_forward(z, t), softmax_xent_backward(z, t, c)
    L = float(np.dot(c.astype(np.float64), per_sample.astype(np.float64)))

    L_layers = len(p.weights)
    dWs, dbs = [None] * L_layers, [None] * L_layers
    dX = None
    for l in reversed(range(L_layers)):  # the forward, reversed
        need_dh = l > 0 or input_grad
        dWs[l], dbs[l], dh = linear_backward(delta, hs[l], p.weights[l], need_dh)
        if l > 0:
            delta = sigmoid_backward(dh, hs[l])
        else:
            dX = dh
    return L, Gradients(dWs, dbs, dX if input_grad else None)
