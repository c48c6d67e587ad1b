"""The specification: losses and gradients of a sigmoid MLP in plain NumPy.

Read beside ``docs/derivation.md``; the names match the C++ core.  Row-vector
convention, a batch of N rows at a time.  X may be sparse (scipy.sparse, checked into CSR): its products
X @ W, X^T delta and X @ V_W are scipy's, with dense results, and the per-sample rows densify it.

    h_0 = X                                  (N, d_0)
    z_l = h_{l-1} @ W_l + b_l                (N, d_l)      W_l: (d_{l-1}, d_l), b_l: (d_l,)
    h_l = sigmoid(z_l)          for l < L
    z_L are the logits                       (N, k), k = d_L

Per-sample losses from the logits (finite for every finite input):

    sigmoid head:  l_i = sum_j softplus(z_ij) - y_ij z_ij          (binary cross-entropy)
                       = sum_j y_ij softplus(-z_ij) + (1 - y_ij) softplus(z_ij)
    softmax head:  l_i = sum_j y_ij (logsumexp(z_i) - z_ij)          (cross-entropy)
    identity head: l_i = 1/2 sum_j (z_ij - y_ij)^2                     (squared error; the output is z itself)

    L = sum_i w_i l_i  ("sum")   or   sum_i w_i l_i / sum_i w_i  ("mean")

Backward, with c_i = w_i (or w_i / sum w for "mean") and delta_l = dL/dz_l (N, d_l):

    delta_L = c * (p - y)           sigmoid head (p = sigmoid(z_L))
    delta_L = c * (p * sum_j y - y) softmax head (p = softmax(z_L)); = c * (p - y) when rows of y sum to 1
    delta_L = c * (z_L - y)         identity head
    dW_l = h_{l-1}^T @ delta_l      (d_{l-1}, d_l) = (d_{l-1}, N) @ (N, d_l)
    db_l = sum over rows of delta_l (d_l,)
    dh_{l-1} = delta_l @ W_l^T      (N, d_{l-1}) = (N, d_l) @ (d_l, d_{l-1})
    delta_{l-1} = dh_{l-1} * h_{l-1} * (1 - h_{l-1})
    dX = dh_0

Per-sample gradients (issue 12).  g_i (P,) is the gradient of sample i's own loss l_i (no weight, no reduction:
the backward above with c = 1) with respect to theta = (W_1.ravel(), ..., W_L.ravel(), b_1, ..., b_L), the
``mlpgrad.pack`` order.  With delta_{l,i} (d_l,) row i of the unit-scale delta_l and h_{l-1,i} (d_{l-1},) row i
of h_{l-1}, its layer-l part g_{i,l} is

    dW_l of sample i = outer(h_{l-1,i}, delta_{l,i})      (d_{l-1}, d_l)
    db_l of sample i = delta_{l,i}                         (d_l,)
    ||g_{i,l}||^2 = (||h_{l-1,i}||^2 + 1) ||delta_{l,i}||^2,     ||g_i||^2 = sum_l ||g_{i,l}||^2

and the gradient of L is sum_i c_i g_i.  From the (N, P) matrix G of the rows g_i:

    per_sample_grad_norms   ||g_i||  (N,), or ||g_{i,l}||  (N, L)
    clipped_grad            sum_i c_i f_i g_i, f_i = min(1, max_norm / ||g_i||) (1 when ||g_i|| = 0), or per
                            layer sum_i c_i f_{i,l} g_{i,l} with f_{i,l} = min(1, max_norm[l] / ||g_{i,l}||):
                            the gradient of sum_i c_i f_i l_i with the factors held fixed
    per_sample_grads        G  (N, P)
    grad_dot                G @ V  (N,) for V (P,), (N, m) for V (P, m)
    grad_gram               G @ G2^T  (N, N2), G2 the rows of a second set (X2, y2), by default G itself
    sum_squared_grads       sum_i w_i g_i * g_i element-wise (P,), as Gradients

These build G explicitly (O(N P) memory): the native functions do not, except per_sample_grads.

Curvature (issue 13), for V (P,) or (P, m) in pack order, one column v at a time; c_i as in loss_and_grad, and
Hhead_i = d^2 l_i / d z_L^2 = diag(p_i (1 - p_i)) (sigmoid), s_i (diag(p_i) - p_i p_i^T) (softmax, s_i the row sum
of the target, 1 for labels) or I (identity); G here is the Gauss-Newton matrix (P, P), not the per-sample rows above:

    hvp         H V, H = d^2 L / d theta^2 exactly: Pearlmutter's R-operator, R{q} = d/de q(theta + e v).
                R-forward (R{h_0} = 0):  R{z_l} = R{h_{l-1}} W_l + h_{l-1} V_{W_l} + V_{b_l}
                                         R{h_l} = h_l (1 - h_l) R{z_l}
                R-backward:  R{delta_L} = c * Hhead R{z_L} (by rows)
                             R{dW_l} = R{h_{l-1}}^T delta_l + h_{l-1}^T R{delta_l}
                             R{db_l} = sum over rows of R{delta_l}
                             R{dh_{l-1}} = R{delta_l} W_l^T + delta_l V_{W_l}^T
                             R{delta_{l-1}} = R{dh_{l-1}} h (1 - h) + dh_{l-1} (1 - 2 h) R{h_{l-1}}   (h = h_{l-1})
    ggn_vp      G V, G = sum_i c_i J_i^T Hhead_i J_i, J_i = d z_{L,i} / d theta: R{z_L} = J v from the R-forward,
                times c Hhead by rows, then the ordinary backward above (no second derivative of a hidden layer)
    ggn_diag    diag(G) (P,) = sum_i c_i sum_j (J_i^T S_i e_j)^2 with S_i S_i^T = Hhead_i (head_hessian_factor):
                k backward passes of the columns of S_i, each squared per sample (O(N P) memory)
"""

from __future__ import annotations

import numpy as np

from ._checks import (check_flag, check_head, check_max_norm, check_network, check_problem, check_rows_out,
                      check_second_set, check_vectors, check_X, is_sparse, renamed_arguments)
from ._types import Gradients

__all__ = ["forward", "loss", "loss_and_grad", "per_sample_grad_norms", "clipped_grad", "per_sample_grads",
           "grad_dot", "grad_gram", "sum_squared_grads", "hvp", "ggn_vp", "ggn_diag"]


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


def identity_forward(z, t):
    """Per-sample squared error summed over units: (N,) = 1/2 sum_j (z_ij - t_ij)^2. t: (N, k) finite."""
    return 0.5 * np.square(z - t).sum(axis=1)


def identity_backward(z, t, c):
    """dL/dz = c (z - t)."""
    return c[:, None] * (z - t)


def head_output(head, z):
    """The network's output from z_L: sigmoid(z), softmax(z), or z itself (identity)."""
    if head == "sigmoid":
        return sigmoid_forward(z)
    return softmax_forward(z) if head == "softmax" else z


def head_forward(head, z, t):
    """Per-sample losses l_i (N,) of the head."""
    if head == "sigmoid":
        return sigmoid_xent_forward(z, t)
    return softmax_xent_forward(z, t) if head == "softmax" else identity_forward(z, t)


def head_backward(head, z, t, c):
    """delta_L = dL/dz_L (N, k) of the head, rows scaled by c (N,)."""
    if head == "sigmoid":
        return sigmoid_xent_backward(z, t, c)
    return softmax_xent_backward(z, t, c) if head == "softmax" else identity_backward(z, t, c)


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
    """Outputs (N, k): probabilities sigmoid(z_L) or softmax(z_L), or z_L itself for the identity head."""
    head = check_head(head)
    weights, biases, dtype = check_network(weights, biases)
    X = check_X(X, weights[0].shape[0], dtype)
    _, z = _forward_pass(weights, biases, X)
    return head_output(head, z)


def loss(weights, biases, X, y, *, head, reduction="sum", sample_weight=None):
    return loss_and_grad(weights, biases, X, y, head=head, reduction=reduction,
                         sample_weight=sample_weight)[0]


def loss_and_grad(weights, biases, X, y, *, head, reduction="sum", sample_weight=None, input_grad=False):
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight)
    input_grad = check_flag(input_grad, "input_grad")
    t = _dense_targets(p)
    c = _sample_scale(p)
    hs, z = _forward_pass(p.weights, p.biases, p.X)

    per_sample, delta = head_forward(p.head, z, t), head_backward(p.head, z, t, c)
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


# -- per-sample gradients ---------------------------------------------------------------------------

def _per_sample_backward(p):
    """(hs, deltas) of checked problem p: hs[l] (N, d_in) the input of layer l (hs[0] = X) and deltas[l]
    (N, d_out) = dl_i/dz_l by rows, each sample's own loss unweighted (unit sample scale)."""
    hs, z = _forward_pass(p.weights, p.biases, p.X)
    t, unit = _dense_targets(p), np.ones(p.X.shape[0], dtype=p.dtype)
    delta = head_backward(p.head, z, t, unit)
    deltas = [None] * len(p.weights)
    for l in reversed(range(len(p.weights))):  # the forward, reversed
        deltas[l] = delta
        if l > 0:
            delta = sigmoid_backward(matmul(delta, p.weights[l].T), hs[l])
    return hs, deltas


def _dense(h):
    """h as an ndarray: a sparse X densified (for the outer products of the per-sample rows)."""
    return h.toarray() if is_sparse(h) else h


def _per_sample_rows(hs, deltas):
    """(N, P): row i the pack-order gradient of the pairs (h_{l-1,i}, delta_{l,i}): the outer products
    h_{l-1,i} delta_{l,i}^T raveled row-major, layer by layer, then the deltas (the biases' parts)."""
    n = hs[0].shape[0]
    weight_parts = [np.einsum("ni,nj->nij", _dense(h), d).reshape(n, h.shape[1] * d.shape[1])
                    for h, d in zip(hs, deltas)]
    return np.concatenate(weight_parts + list(deltas), axis=1)


def _per_sample_grads(p):
    """G (N, P): row i = g_i in pack order, the rows of each sample's own (unit-scale) deltas."""
    return _per_sample_rows(*_per_sample_backward(p))


def _param_layers(p):
    """(P,) the layer of each parameter, in pack order."""
    return np.concatenate([np.full(W.size, l) for l, W in enumerate(p.weights)]
                          + [np.full(b.size, l) for l, b in enumerate(p.biases)])


def _norms(G, p, per_layer):
    """||g_i|| (N,), or per_layer ||g_{i,l}|| (N, L): W_l and b_l together."""
    squares = np.square(G, dtype=np.float64)  # float32 sums of 10^5 squares lose digits the native code keeps
    if not per_layer:
        return np.sqrt(squares.sum(axis=1)).astype(p.dtype)
    layers = _param_layers(p)
    return np.sqrt(np.stack([squares[:, layers == l].sum(axis=1) for l in range(len(p.weights))], axis=1)).astype(p.dtype)


def _as_gradients(flat, p):
    """A flat (P,) vector in pack order as Gradients(weights, biases, None) of the parameters' shapes."""
    shapes = [W.shape for W in p.weights] + [b.shape for b in p.biases]
    stops = np.cumsum([int(np.prod(s)) for s in shapes])
    parts = [a.reshape(s) for a, s in zip(np.split(flat, stops[:-1]), shapes)]
    L = len(p.weights)
    return Gradients(parts[:L], parts[L:], None)


def per_sample_grad_norms(weights, biases, X, y, *, head, per_layer=False):
    """||g_i|| (N,), or with per_layer=True ||g_{i,l}|| (N, L), column l for W_l and b_l together."""
    p = check_problem(weights, biases, X, y, head, "sum", None)
    per_layer = check_flag(per_layer, "per_layer")
    return _norms(_per_sample_grads(p), p, per_layer)


def clipped_grad(weights, biases, X, y, *, head, max_norm, reduction="sum", sample_weight=None):
    """(loss, Gradients(weights, biases, None), norms): the gradient sum_i c_i f_i g_i with the clip factors
    f_i = min(1, max_norm / ||g_i||) (max_norm a number) or, per layer, f_{i,l} = min(1, max_norm[l] / ||g_{i,l}||)
    (max_norm a sequence of L numbers); f = 1 where the norm is 0. c_i as in loss_and_grad. loss is the unclipped
    loss; norms as per_sample_grad_norms: (N,), or (N, L) with per-layer clipping."""
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight)
    max_norm = check_max_norm(max_norm, len(p.weights))
    per_layer = isinstance(max_norm, tuple)
    G = _per_sample_grads(p)
    norms = _norms(G, p, per_layer)
    limit = np.asarray(max_norm, dtype=np.float64)  # broadcasts over (N,) or (N, L)
    with np.errstate(divide="ignore", invalid="ignore"):  # the quotients where the norm is 0 are not taken
        factor = np.where(norms > limit, limit / norms, 1.0).astype(p.dtype)
    column_factor = factor[:, _param_layers(p)] if per_layer else factor[:, None]  # (N, P) or (N, 1)
    flat = (_sample_scale(p)[:, None] * column_factor * G).sum(axis=0)
    value = loss(weights, biases, X, y, head=head, reduction=reduction, sample_weight=sample_weight)
    return value, _as_gradients(flat, p), norms


def per_sample_grads(weights, biases, X, y, *, head, out=None):
    """G (N, P): row i is g_i in pack order (mlpgrad.pack). out: a writeable C-contiguous (N, P) array of the
    parameters' dtype, written and returned. Memory: N * P * itemsize bytes for G."""
    p = check_problem(weights, biases, X, y, head, "sum", None)
    if out is None:
        return _per_sample_grads(p)
    check_rows_out(out, p.X.shape[0], sum(W.size + b.size for W, b in zip(p.weights, p.biases)), p.dtype)
    out[...] = _per_sample_grads(p)
    return out


def grad_dot(weights, biases, X, y, V, *, head):
    """g_i . V: (N,) for V of shape (P,), (N, m) for V (P, m)."""
    p = check_problem(weights, biases, X, y, head, "sum", None)
    V2, one_d = check_vectors(V, sum(W.size + b.size for W, b in zip(p.weights, p.biases)), p.dtype)
    D = matmul(_per_sample_grads(p), V2)  # (N, m)
    return D[:, 0] if one_d else D


def grad_gram(weights, biases, X, y, X2=None, y2=None, *, head):
    """(N, N2): entry (i, j) = g_i . g'_j, g'_j the per-sample gradient of sample j of (X2, y2); X2 and y2 default
    to X and y (both or neither)."""
    p = check_problem(weights, biases, X, y, head, "sum", None)
    G = _per_sample_grads(p)
    if not check_second_set(X2, y2):
        return matmul(G, G.T)
    with renamed_arguments({"X": "X2", "y": "y2"}):
        p2 = check_problem(weights, biases, X2, y2, head, "sum", None)
    return matmul(G, _per_sample_grads(p2).T)


def sum_squared_grads(weights, biases, X, y, *, head, sample_weight=None):
    """Gradients(weights, biases, None) holding sum_i w_i g_i * g_i element-wise (w_i = 1 without sample_weight)."""
    p = check_problem(weights, biases, X, y, head, "sum", sample_weight)
    G = _per_sample_grads(p)
    w = np.ones(p.X.shape[0], dtype=p.dtype) if p.sample_weight is None else p.sample_weight
    return _as_gradients(matmul(w, G * G), p)


# -- curvature products (issue 13) ------------------------------------------------------------------
#
# A direction v in pack order has the parts V_{W_l} (d_{l-1}, d_l) and V_{b_l} (d_l,). R{q} = d/de q(theta + e v) at
# e = 0 (Pearlmutter's R-operator); below, python index l is the layer whose input is hs[l] and whose weights are
# weights[l], deltas[l] = dL/dz of that layer.

def _direction_parts(v, p):
    """A flat direction v (P,) in pack order as (V_Ws, V_bs), the parameters' shapes."""
    parts = _as_gradients(v, p)
    return parts.weights, parts.biases


def _flatten(dWs, dbs):
    """Per-layer parts (W_l, then b_l) as one (P,) vector in pack order."""
    return np.concatenate([dW.ravel() for dW in dWs] + list(dbs))


def _target_sums(p):
    """s_i (N,): the row sums of the targets (1 for labels), the factor of the softmax head's Hessian
    s_i (diag p_i - p_i p_i^T)."""
    return _dense_targets(p).sum(axis=1)


def _head_probabilities(p, z):
    return head_output(p.head, z)


def head_hessian_vp(head, probs, target_sums, R_z):
    """Row i: (d^2 l_i / d z^2) R_z[i] (N, k), the unscaled head Hessian of each sample times its row of R_z.

    sigmoid: diag(p_i (1 - p_i)) r = p (1 - p) * r
    softmax: s_i (diag(p_i) - p_i p_i^T) r = s_i (p * r - p (p . r))
    identity: I r = r (probs are z and unused)
    """
    if head == "identity":
        return R_z.copy()
    if head == "sigmoid":
        return probs * (1 - probs) * R_z
    p_dot_r = (probs * R_z).sum(axis=1, keepdims=True)
    return target_sums[:, None] * (probs * R_z - probs * p_dot_r)


def head_hessian_factor(head, probs, target_sums):
    """S (N, k, k) with S_i S_i^T = d^2 l_i / d z^2, column j of S_i being S[i, :, j]:

    sigmoid: S_i = diag(sqrt(p_i (1 - p_i)))
    softmax: column j = sqrt(s_i p_ij) (e_j - p_i), since sum_j p_j (e_j - p)(e_j - p)^T = diag(p) - p p^T
             when sum_j p_j = 1 (in matrix form S_i = sqrt(s_i) (diag(sqrt p_i) - p_i sqrt(p_i)^T)).
    identity: S_i = I
    """
    n, k = probs.shape
    if head == "identity":
        return np.broadcast_to(np.eye(k, dtype=probs.dtype), (n, k, k)).copy()
    if head == "sigmoid":
        S = np.zeros((n, k, k), dtype=probs.dtype)
        S[:, np.arange(k), np.arange(k)] = np.sqrt(probs * (1 - probs))
        return S
    e_minus_p = np.eye(k, dtype=probs.dtype)[None, :, :] - probs[:, :, None]   # [i, :, j] = e_j - p_i
    return e_minus_p * np.sqrt(target_sums[:, None] * probs)[:, None, :]


def r_forward(weights, hs, V_Ws, V_bs):
    """The directional derivatives of the forward pass: (R_hs, R_z) with R_hs[l] = R{h} of layer l's input
    (R_hs[0] = 0: X gets no direction) and R_z = R{z_L} (N, k), the Jacobian-vector product J v.

    R{z_l} = R{h_{l-1}} W_l + h_{l-1} V_{W_l} + V_{b_l}        R{h_l} = h_l (1 - h_l) * R{z_l}
    """
    R_hs = [np.zeros(hs[0].shape, dtype=hs[0].dtype)]
    for l, W in enumerate(weights):
        R_z = matmul(R_hs[l], W) + matmul(hs[l], V_Ws[l]) + V_bs[l]
        if l + 1 < len(weights):
            h = hs[l + 1]
            R_hs.append(h * (1 - h) * R_z)
    return R_hs, R_z


def _output_backward(weights, hs, delta_L):
    """deltas[l] (N, d_out of layer l): the ordinary backward of the output rows delta_L, every layer kept."""
    deltas = [None] * len(weights)
    delta = delta_L
    for l in reversed(range(len(weights))):
        deltas[l] = delta
        if l > 0:
            delta = sigmoid_backward(matmul(delta, weights[l].T), hs[l])
    return deltas


def r_backward(weights, hs, deltas, R_hs, R_delta_L, V_Ws):
    """(R{dW_l}, R{db_l}) for every layer: the directional derivative of the backward pass, i.e. H v by layers.

    R{dW_l} = R{h_{l-1}}^T delta_l + h_{l-1}^T R{delta_l}         R{db_l} = column sums of R{delta_l}
    R{dh_{l-1}} = R{delta_l} W_l^T + delta_l V_{W_l}^T              (dh_{l-1} = delta_l W_l^T)
    R{delta_{l-1}} = R{dh_{l-1}} * h (1 - h) + dh_{l-1} * (1 - 2h) * R{h}     (h = h_{l-1})
    """
    L = len(weights)
    R_dWs, R_dbs = [None] * L, [None] * L
    R_delta = R_delta_L
    for l in reversed(range(L)):
        h, R_h, delta = hs[l], R_hs[l], deltas[l]
        R_dWs[l] = matmul(R_h.T, delta) + matmul(h.T, R_delta)
        R_dbs[l] = R_delta.sum(axis=0)
        if l > 0:
            dh = matmul(delta, weights[l].T)
            R_dh = matmul(R_delta, weights[l].T) + matmul(delta, V_Ws[l].T)
            R_delta = R_dh * h * (1 - h) + dh * (1 - 2 * h) * R_h
    return R_dWs, R_dbs


class _Curvature:
    """What the curvature products of checked problem p share: the forward pass hs, the probabilities, the
    targets' row sums, the scale c and the ordinary deltas (each row scaled by c_i, as in loss_and_grad)."""

    def __init__(self, p):
        self.p = p
        self.hs, z = _forward_pass(p.weights, p.biases, p.X)
        self.probs = _head_probabilities(p, z)
        self.target_sums = _target_sums(p)
        self.c = _sample_scale(p)
        t = _dense_targets(p)
        delta_L = head_backward(p.head, z, t, self.c)
        self.deltas = _output_backward(p.weights, self.hs, delta_L)

    def scaled_head_hessian_vp(self, R_z):
        """Row i: c_i (d^2 l_i / d z^2) R_z[i]."""
        return self.c[:, None] * head_hessian_vp(self.p.head, self.probs, self.target_sums, R_z)

    def hvp(self, v):
        """H v (P,) for one direction v (P,)."""
        V_Ws, V_bs = _direction_parts(v, self.p)
        R_hs, R_z = r_forward(self.p.weights, self.hs, V_Ws, V_bs)
        R_delta_L = self.scaled_head_hessian_vp(R_z)
        return _flatten(*r_backward(self.p.weights, self.hs, self.deltas, R_hs, R_delta_L, V_Ws))

    def ggn_vp(self, v):
        """G v (P,) = J^T (c Hhead) J v: the R-forward to R{z_L} = J v, the head's Hessian, then the ordinary
        backward (no second derivative of a hidden layer)."""
        V_Ws, V_bs = _direction_parts(v, self.p)
        _, R_z = r_forward(self.p.weights, self.hs, V_Ws, V_bs)
        u = self.scaled_head_hessian_vp(R_z)
        deltas = _output_backward(self.p.weights, self.hs, u)
        grads = [linear_backward(delta, h, W, need_dh=False) for delta, h, W in zip(deltas, self.hs, self.p.weights)]
        return _flatten([dW for dW, _, _ in grads], [db for _, db, _ in grads])


def _columns(p, V, product):
    """product(v) for every column v of V, V checked as (P,) or (P, m): (P,) or (P, m) of the problem's dtype."""
    V2, one_d = check_vectors(V, sum(W.size + b.size for W, b in zip(p.weights, p.biases)), p.dtype)
    out = np.stack([product(V2[:, j]) for j in range(V2.shape[1])], axis=1).astype(p.dtype, copy=False)
    return out[:, 0] if one_d else out


def hvp(weights, biases, X, y, V, *, head, reduction="sum", sample_weight=None):
    """H V: (P,) for V (P,), (P, m) for V (P, m), pack order. H = d^2 L / d theta^2 exactly (the sigmoid layers'
    second derivatives included), L as in loss_and_grad. Pearlmutter's R-operator, one column of V at a time."""
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight)
    return _columns(p, V, _Curvature(p).hvp)


def ggn_vp(weights, biases, X, y, V, *, head, reduction="sum", sample_weight=None):
    """G V: (P,) for V (P,), (P, m) for V (P, m), pack order. G = sum_i c_i J_i^T (d^2 l_i / d z_L^2) J_i,
    J_i = d z_{L,i} / d theta, the generalized Gauss-Newton matrix (symmetric positive semi-definite)."""
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight)
    return _columns(p, V, _Curvature(p).ggn_vp)


def ggn_diag(weights, biases, X, y, *, head, reduction="sum", sample_weight=None):
    """diag(G) (P,). With S_i S_i^T = d^2 l_i / d z_L^2 (head_hessian_factor), G = sum_i sum_j c_i (J_i^T S_i e_j)
    (J_i^T S_i e_j)^T, so diag(G) = sum_i c_i sum_j (J_i^T S_i e_j)^2: for each of the k columns j, backpropagate
    column j of every sample's S_i as its output delta, form the per-sample gradients (N, P) and add their squares
    weighted by c_i. O(k N P) work and O(N P) memory: for small problems."""
    p = check_problem(weights, biases, X, y, head, reduction, sample_weight)
    hs, z = _forward_pass(p.weights, p.biases, p.X)
    S = head_hessian_factor(p.head, _head_probabilities(p, z), _target_sums(p))
    c = _sample_scale(p)
    diag = np.zeros(sum(W.size + b.size for W, b in zip(p.weights, p.biases)), dtype=p.dtype)
    for j in range(S.shape[2]):
        rows = _per_sample_rows(hs, _output_backward(p.weights, hs, S[:, :, j]))
        diag += matmul(c, rows * rows)
    return diag
