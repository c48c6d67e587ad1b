"""The seeds' closed-form gradients, written out correctly per sample, against ``loss_and_grad``.

Both implementations are checked: the native ``mlpgrad`` and ``mlpgrad.reference``.

Seed 000 (``/work/shared/seeds/000_*``): a 3-layer sigmoid net with binary cross-entropy, written in
column vectors as h1 = sigma(W1^T x + b1), h2 = sigma(W2^T h1 + b2), f = sigma(W3^T h2 + b3),
L = -sum_i [y_i log f_i + (1 - y_i) log(1 - f_i)].  With W1 (d0, H1), W2 (H1, H2), W3 (H2, 1)
(the package's shapes), the correct per-sample backward pass is

    delta3_i = f_i - y_i                                   scalar  (= dL_i/dz3; sigma' cancels 1/(f(1-f)))
    delta2_i = (W3 delta3_i) * h2_i * (1 - h2_i)           (H2,)
    delta1_i = (W2 delta2_i) * h1_i * (1 - h1_i)           (H1,)
    dL/dW1   = sum_i outer(x_i, delta1_i)                  (d0, H1)

Seed 001 (``/work/shared/seeds/001_*``): row vectors, a = x W1 + b1 (x 1x5, W1 5x3), h = sigma(a),
theta = h W2 + b2 (W2 3x5), yhat = softmax(theta), L = xent(y, yhat).  Correctly,

    dL/dx_i = (((yhat_i - y_i) @ W2^T) * h_i * (1 - h_i)) @ W1^T        (1x5) = (1x5)(5x3) (1x3) (3x5)

Tolerances (max-norm relative error, ``rel_err``): ``_bounds.tol(dtype)``, 1e-12 in float64 and 1e-5 in
float32 (the closed forms are always evaluated in float64 from the same, exactly widened, parameters).

The seeds' literal forms have slips; ``test_seed000_literal_*`` and ``test_seed001_literal_*`` check
them honestly against finite differences of the seeds' own losses (no package code involved):
seed 000's per-sample formula has the wrong sign and ends in ``x_i^T`` (the transpose of dL/dW1's
shape); seed 001's row-vector recast ``((yhat - y) W2^T) o ((h - h o h) W1^T)`` does not conform for
the seed's sizes (1x3 o 1x5) and is wrong where it does conform.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpgrad
from mlpgrad import reference
from _bounds import tol
from _problems import fd_gradient, make_network, rel_err

DTYPES = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]


@pytest.fixture(params=["native", "reference"])
def impl(request):
    """The implementation under test: the package (native core) or its NumPy reference."""
    if request.param == "native":
        pytest.importorskip("mlpgrad._native", reason="the native extension mlpgrad._core is not built")
        return mlpgrad
    return reference


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(theta):
    e = np.exp(theta - theta.max())
    return e / e.sum()


def _problem(sizes, n, dtype, seed):
    """float params/inputs of dtype, and their exact float64 copies for the closed forms."""
    rng = np.random.default_rng(seed)
    Ws, bs = make_network(sizes, dtype, rng)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    wide = ([W.astype(np.float64) for W in Ws], [b.astype(np.float64) for b in bs], X.astype(np.float64))
    return Ws, bs, X, wide, rng


# -- seed 000: 3-layer sigmoid net, binary cross-entropy -------------------------------------------------

def seed000_closed_form(Ws, bs, X, y):
    """Per-sample closed forms, summed: (L, [dW1, dW2, dW3], [db1, db2, db3]); float64."""
    W1, W2, W3 = Ws  # (d0, H1), (H1, H2), (H2, 1)
    b1, b2, b3 = bs  # (H1,), (H2,), (1,)
    L = 0.0
    dW = [np.zeros_like(W) for W in Ws]
    db = [np.zeros_like(b) for b in bs]
    for x_i, y_i in zip(X, y):           # x_i (d0,), y_i scalar
        h1 = _sigmoid(W1.T @ x_i + b1)    # (H1,)  = sigma(W1^T x + b1)
        h2 = _sigmoid(W2.T @ h1 + b2)     # (H2,)
        f = _sigmoid(W3.T @ h2 + b3)[0]   # scalar
        L -= y_i * np.log(f) + (1 - y_i) * np.log(1 - f)
        delta3 = f - y_i                              # scalar: dL_i/dz3
        delta2 = (W3[:, 0] * delta3) * h2 * (1 - h2)  # (H2,) = (W3 delta3) o h2 o (1 - h2)
        delta1 = (W2 @ delta2) * h1 * (1 - h1)        # (H1,) = (W2 delta2) o h1 o (1 - h1)
        dW[0] += np.outer(x_i, delta1)                # (d0, H1)
        dW[1] += np.outer(h1, delta2)                 # (H1, H2)
        dW[2] += np.outer(h2, [delta3])               # (H2, 1)
        db[0] += delta1
        db[1] += delta2
        db[2] += delta3
    return float(L), dW, db


SEED000_CASES = [([4, 6, 5, 1], 3), ([4, 6, 5, 1], 8), ([32, 64, 64, 1], 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,n", SEED000_CASES, ids=[f"{'-'.join(map(str, s))}_N{n}" for s, n in SEED000_CASES])
def test_seed000_dW1_closed_form(impl, sizes, n, dtype):
    Ws, bs, X, (Ws64, bs64, X64), rng = _problem(sizes, n, dtype, seed=sum(sizes) + n)
    y = rng.integers(0, 2, size=n).astype(dtype)  # (N,): one output unit
    L_cf, dW_cf, db_cf = seed000_closed_form(Ws64, bs64, X64, y.astype(np.float64))

    L, g = impl.loss_and_grad(Ws, bs, X, y, head="sigmoid")
    rtol = tol(dtype)
    assert g.weights[0].shape == (sizes[0], sizes[1]) and g.weights[0].dtype == dtype
    err = rel_err(g.weights[0], dW_cf[0])
    print(f"\n[seed000 {impl.__name__} {np.dtype(dtype).name} {sizes} N={n}] rel_err dW1 {err:.2e}")
    assert err <= rtol
    assert L == pytest.approx(L_cf, rel=rtol)
    # the same delta recursion gives the other layers
    for l in range(3):
        assert rel_err(g.weights[l], dW_cf[l]) <= rtol, f"dW{l + 1}"
        assert rel_err(g.biases[l], db_cf[l]) <= rtol, f"db{l + 1}"


# -- seed 001: 5-3-5 sigmoid hidden layer, softmax cross-entropy, dL/dx -----------------------------------

def seed001_closed_form(W1, b1, W2, b2, X, T):
    """Per-sample dL/dx_i (rows), plus L and dW1, dW2; T (N, 5) target rows summing to one; float64."""
    L = 0.0
    dX = np.zeros_like(X)
    dW1, dW2 = np.zeros_like(W1), np.zeros_like(W2)
    for i, (x, y) in enumerate(zip(X, T)):   # x (5,), y (5,)
        a = x @ W1 + b1                       # (3,)  = (1x5)(5x3)
        h = _sigmoid(a)                       # (3,)
        theta = h @ W2 + b2                   # (5,)  = (1x3)(3x5)
        yhat = _softmax(theta)                # (5,)
        L -= float(y @ np.log(yhat))
        d_theta = yhat - y                    # (5,)  dL/dtheta
        d_a = (d_theta @ W2.T) * h * (1 - h)  # (3,)  = (1x5)(5x3) o (1x3)
        dX[i] = d_a @ W1.T                    # (5,)  = (1x3)(3x5)
        dW2 += np.outer(h, d_theta)           # (3, 5)
        dW1 += np.outer(x, d_a)               # (5, 3)
    return L, dX, dW1, dW2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["labels", "soft"])
@pytest.mark.parametrize("n", [1, 4])
def test_seed001_input_gradient_closed_form(impl, n, kind, dtype):
    sizes = [5, 3, 5]  # the seed's sizes
    Ws, bs, X, (Ws64, bs64, X64), rng = _problem(sizes, n, dtype, seed=10 + n)
    if kind == "labels":
        y = rng.integers(0, 5, size=n)  # (N,) integer labels
        T = np.eye(5)[y]                # one-hot rows
    else:
        T = rng.random((n, 5)) + 0.05
        T /= T.sum(axis=1, keepdims=True)
        y = T.astype(dtype)             # (N, 5) target rows of the computation dtype
        T = y.astype(np.float64)
    L_cf, dX_cf, dW1_cf, dW2_cf = seed001_closed_form(Ws64[0], bs64[0], Ws64[1], bs64[1], X64, T)

    L, g = impl.loss_and_grad(Ws, bs, X, y, head="softmax", input_grad=True)
    rtol = tol(dtype)
    assert g.input.shape == (n, 5) and g.input.dtype == dtype
    err = rel_err(g.input, dX_cf)
    print(f"\n[seed001 {impl.__name__} {np.dtype(dtype).name} {kind} N={n}] rel_err dL/dx {err:.2e}")
    assert err <= rtol
    assert L == pytest.approx(L_cf, rel=rtol)
    assert rel_err(g.weights[0], dW1_cf) <= rtol
    assert rel_err(g.weights[1], dW2_cf) <= rtol


# -- the seeds' literal forms ----------------------------------------------------------------------------

def test_seed000_literal_per_sample_formula_has_wrong_sign_and_transposed_shape():
    """Seed 000 writes dL_i/dW1 = (y_i - f) W3^T h2 o (1 - h2) W2^T h1 o (1 - h1) x_i^T.

    Read as a product in the written order (o as a diagonal matrix, the seed's numerator layout), the
    prefix is the row (1, H1); times x_i^T (1, d0) it does not conform.  The only conforming completion,
    the outer product of that row's transpose with x_i^T, is (H1, d0) -- W1^T's shape -- and its sum over
    i is MINUS the transpose of the true gradient: the per-sample formula dropped L's minus sign (the
    seed's summed formula restores it) and ends in x^T instead of the outer product x delta1^T.
    """
    sizes, n = [4, 6, 5, 1], 3
    rng = np.random.default_rng(0)
    (W1, W2, W3), (b1, b2, b3) = make_network(sizes, np.float64, rng)
    X = rng.standard_normal((n, 4))
    y = np.array([0.0, 1.0, 1.0])

    def loss():
        return seed000_closed_form([W1, W2, W3], [b1, b2, b3], X, y)[0]

    fd = fd_gradient(loss, W1, 1e-3)  # (4, 6), the true dL/dW1
    literal_sum = np.zeros((6, 4))
    for x_i, y_i in zip(X, y):
        h1 = _sigmoid(W1.T @ x_i + b1)
        h2 = _sigmoid(W2.T @ h1 + b2)
        f = _sigmoid(W3.T @ h2 + b3)[0]
        row = (y_i - f) * W3.T @ np.diag(h2 * (1 - h2)) @ W2.T @ np.diag(h1 * (1 - h1))  # (1, H1)
        with pytest.raises(ValueError):
            row @ x_i[None, :]  # (1, 6) @ (1, 4): the written product does not conform
        literal_sum += row.T @ x_i[None, :]  # (H1, d0) = (6, 4)
    assert literal_sum.shape != W1.shape
    assert rel_err(-literal_sum.T, fd) <= 1e-9   # the right numbers, up to the sign and the transpose
    assert rel_err(literal_sum.T, fd) > 1.0      # as written (sign), it is the negative gradient


def test_seed001_literal_row_form_does_not_conform_and_is_wrong_where_it_does():
    """Seed 001's recast ((yhat - y) W2^T) o ((h - h o h) W1^T): (1x3) o (1x5) for the seed's sizes.

    With d0 = H (here 3-3-4) the shapes conform but the value is not dL/dx; the correct
    ((yhat - y) W2^T o (h - h o h)) W1^T and the answer's column form W1 (H - H^2) W2 (yhat - y) both are.
    """
    def parts(W1, b1, W2, b2, x, y):
        h = _sigmoid(x @ W1 + b1)
        yhat = _softmax(h @ W2 + b2)
        return h, yhat

    for sizes in ([5, 3, 5], [3, 3, 4]):
        rng = np.random.default_rng(sum(sizes))
        (W1, W2), (b1, b2) = make_network(sizes, np.float64, rng)
        x = rng.standard_normal(sizes[0])
        y = np.eye(sizes[-1])[1]

        def loss():
            h, yhat = parts(W1, b1, W2, b2, x, y)
            return -float(y @ np.log(yhat))

        fd = fd_gradient(loss, x, 1e-3)  # (d0,)
        h, yhat = parts(W1, b1, W2, b2, x, y)
        left = (yhat - y)[None, :] @ W2.T        # (1, H)
        right = (h - h * h)[None, :] @ W1.T      # (1, d0)
        correct = ((left * (h - h * h)) @ W1.T)[0]
        column = (W1 @ np.diag(h - h * h) @ W2 @ (yhat - y)[:, None])[:, 0]
        assert rel_err(correct, fd) <= 1e-9
        assert rel_err(column, fd) <= 1e-9
        if sizes[0] != sizes[1]:
            with pytest.raises(ValueError):
                left * right  # (1, 3) o (1, 5)
        else:
            printed = (left * right)[0]
            assert rel_err(printed, fd) > 0.1
