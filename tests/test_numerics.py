"""Numerics of the heads: losses from the logits keep their precision at the extremes.

Checked on a one-layer network whose logits are set exactly (W = identity, b = 0), so the expected
values are known in closed form; native and reference, float32 and float64.
"""

import math

import numpy as np
import pytest

import mlpgrad

IMPLS = [pytest.param(mlpgrad, id="native"), pytest.param(mlpgrad.reference, id="reference")]
DTYPES = [np.float32, np.float64]


def identity_net(k, dtype):
    return [np.eye(k, dtype=dtype)], [np.zeros(k, dtype=dtype)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("z", [5.0, 20.0, 40.0, 80.0])
def test_sigmoid_confident_right_keeps_precision(impl, dtype, z):
    # l = -log sigmoid(z) = log1p(exp(-z)): tiny, and softplus(z) - z would cancel it to 0.
    Ws, bs = identity_net(1, dtype)
    X = np.array([[z], [-z]], dtype=dtype)
    y = np.array([1.0, 0.0], dtype=dtype)
    expected = 2 * math.log1p(math.exp(-z))
    got = impl.loss(Ws, bs, X, y, head="sigmoid")
    print(f"z={z}: loss {got!r}, expected {expected!r}")
    assert got > 0
    assert abs(got - expected) <= 1e-5 * expected


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gap", [5.0, 20.0, 40.0, 80.0])
def test_softmax_confident_right_keeps_precision(impl, dtype, gap):
    # l = log(1 + 2 exp(-gap)) for logits (gap, 0, 0) and label 0.
    Ws, bs = identity_net(3, dtype)
    X = np.array([[gap, 0.0, 0.0]], dtype=dtype)
    expected = math.log1p(2 * math.exp(-gap))
    got = impl.loss(Ws, bs, X, np.array([0]), head="softmax")
    assert got > 0
    assert abs(got - expected) <= 1e-5 * expected


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
def test_wrong_and_saturated_logits_are_finite(impl, dtype, scale):
    # Confidently wrong: loss = |z| exactly (to rounding), gradient p - y = -+1 exactly.
    Ws, bs = identity_net(2, dtype)
    X = np.array([[scale, -scale]], dtype=dtype)
    L, g = impl.loss_and_grad(Ws, bs, X, np.array([1]), head="softmax", input_grad=True)
    assert math.isfinite(L) and abs(L - 2 * scale) <= 1e-6 * 2 * scale
    np.testing.assert_array_equal(g.input, np.array([[1.0, -1.0]], dtype=dtype))
    L, g = impl.loss_and_grad(Ws, bs, X, np.array([[0.0, 1.0]], dtype=dtype), head="sigmoid", input_grad=True)
    assert math.isfinite(L) and abs(L - 2 * scale) <= 1e-6 * 2 * scale
    np.testing.assert_array_equal(g.input, np.array([[1.0, -1.0]], dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_probabilities_over_the_whole_range(dtype):
    # The native vectorized exp/sigmoid against the reference on a dense sweep of logits:
    # within 4 ulp wherever the result is a normal number, and 0 <= p <= 1 everywhere.
    z = np.linspace(-120, 120, 20001).astype(dtype)[:, None]
    Ws, bs = identity_net(1, dtype)
    p = mlpgrad.forward(Ws, bs, z, head="sigmoid")
    r = mlpgrad.reference.forward([W.astype(np.float64) for W in Ws], [b.astype(np.float64) for b in bs],
                                  z.astype(np.float64), head="sigmoid")
    assert np.all((p >= 0) & (p <= 1))
    normal = r > np.finfo(dtype).tiny
    ulps = np.max(np.abs(p[normal] - r[normal]) / r[normal]) / np.finfo(dtype).eps
    print(f"{np.dtype(dtype).name}: largest error {ulps:.2f} ulp")
    assert ulps <= 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("simd", mlpgrad.build_info()["simd_available"])
def test_per_row_losses_over_a_dense_sweep(dtype, simd):
    # Per-row sigmoid loss for y = 1 is log1p(exp(-z)) (z >= 0) and -z + log1p(exp(z)) (z < 0):
    # each row checked, via sample weights that isolate it, against math.log1p in float64.
    previous = mlpgrad.build_info()["simd"]
    mlpgrad._native.set_simd(simd)
    try:
        z = np.concatenate([np.linspace(-30, 30, 301), [0.0, 1e-8, 1e-3, 0.5]]).astype(dtype)
        Ws, bs = identity_net(1, dtype)
        X = z[:, None]
        y = np.ones(len(z), dtype=dtype)
        worst = 0.0
        for i in range(0, len(z), 7):
            w = np.zeros(len(z))
            w[i] = 1.0
            got = mlpgrad.loss(Ws, bs, X, y, head="sigmoid", sample_weight=w)
            zi = float(z[i])
            expected = math.log1p(math.exp(-zi)) if zi >= 0 else -zi + math.log1p(math.exp(zi))
            worst = max(worst, abs(got - expected) / expected)
        eps = np.finfo(dtype).eps
        print(f"{simd} {np.dtype(dtype).name}: largest relative error {worst / eps:.2f} ulp")
        assert worst <= 8 * eps
    finally:
        mlpgrad._native.set_simd(previous)
