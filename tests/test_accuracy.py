"""float32 accuracy over a large batch: gradients at N = 2^20 against a float64 computation.

The weight and bias gradients are sums over 2^20 rows; the engine sums them in blocks (micro-kernel
registers over KC rows, chunk buffers, then a pairwise sum of group buffers), so their float32 error
stays near the rounding of the per-row terms instead of growing with N. Bound: max-norm relative
error < 1e-6 (``_bounds.tol(float32, "blocked_sum")``) for every gradient (dX included) and the loss.
"""

import numpy as np
import pytest

import mlpgrad
from _bounds import tol
from _problems import make_problem, rel_err

N = 2 ** 20


def errors(sizes, head, n=N):
    Ws, bs, X, y = make_problem(sizes, n, head, "labels", np.float32)
    L32, g32 = mlpgrad.loss_and_grad(Ws, bs, X, y, head=head, input_grad=True)
    W64 = [W.astype(np.float64) for W in Ws]
    b64 = [b.astype(np.float64) for b in bs]
    y64 = y.astype(np.float64) if y.dtype.kind == "f" else y
    L64, g64 = mlpgrad.loss_and_grad(W64, b64, X.astype(np.float64), y64, head=head, input_grad=True)
    errs = {f"dW{i}": rel_err(a, b) for i, (a, b) in enumerate(zip(g32.weights, g64.weights))}
    errs.update({f"db{i}": rel_err(a, b) for i, (a, b) in enumerate(zip(g32.biases, g64.biases))})
    errs["dX"] = rel_err(g32.input, g64.input)
    errs["loss"] = abs(L32 - L64) / abs(L64)
    return errs, (Ws, bs, X, y)


@pytest.mark.slow
@pytest.mark.parametrize("sizes,head", [([32, 64, 64, 1], "sigmoid"), ([5, 3, 5], "softmax")])
def test_float32_gradients_at_2_20_rows(sizes, head):
    errs, _ = errors(sizes, head)
    worst = max(errs, key=errs.get)
    print(f"{sizes} {head}: largest relative error {errs[worst]:.2e} ({worst})")
    assert errs[worst] < tol(np.float32, "blocked_sum"), errs


@pytest.mark.slow
def test_float32_no_less_accurate_than_torch():
    torch = pytest.importorskip("torch")
    sizes, head, n = [32, 64, 64, 1], "sigmoid", 2 ** 18
    errs, (Ws, bs, X, y) = errors(sizes, head, n)
    # The same computation in torch float32 (eager autograd), against the same float64 truth.
    W64 = [W.astype(np.float64) for W in Ws]
    b64 = [b.astype(np.float64) for b in bs]
    _, g64 = mlpgrad.loss_and_grad(W64, b64, X.astype(np.float64), y.astype(np.float64), head=head)
    tW = [torch.from_numpy(W).requires_grad_() for W in Ws]
    tb = [torch.from_numpy(b).requires_grad_() for b in bs]
    h = torch.from_numpy(X)
    for l, (W, b) in enumerate(zip(tW, tb)):
        z = h @ W + b
        h = torch.sigmoid(z) if l < len(tW) - 1 else z
    loss = torch.nn.functional.binary_cross_entropy_with_logits(h[:, 0], torch.from_numpy(y), reduction="sum")
    loss.backward()
    torch_err = max(rel_err(W.grad.numpy(), ref) for W, ref in zip(tW, g64.weights))
    ours = max(v for k, v in errs.items() if k.startswith("dW"))
    print(f"largest dW relative error: mlpgrad {ours:.2e}, torch {torch_err:.2e}")
    assert ours <= 1.5 * torch_err
