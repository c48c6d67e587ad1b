"""A user's script on mlpgrad's public API, checked by ``mypy --strict`` (tests/test_typing.py); it also runs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import mlpgrad
from mlpgrad import Gradients, MLPClassifier, MLPRegressor, Objective

rng = np.random.default_rng(0)
X: npt.NDArray[np.float64] = rng.standard_normal((20, 4))
y: npt.NDArray[np.int64] = rng.integers(0, 3, 20)
net = mlpgrad.MLP([4, 5, 3], head="softmax", dtype=np.float64, seed=0)
weights, biases = net.weights, net.biases

probs: npt.NDArray[np.floating[npt.NBitBase]] = mlpgrad.forward(weights, biases, X, head="softmax")
value: float = mlpgrad.loss(weights, biases, X, y, head="softmax", reduction="mean")
value, grads = mlpgrad.loss_and_grad(weights, biases, X, y, head="softmax", input_grad=True, n_threads=1)
first_layer: npt.NDArray[np.floating[npt.NBitBase]] = grads.weights[0]
assert isinstance(grads, Gradients) and grads.input is not None

theta = mlpgrad.pack(weights, biases)
ws, bs = mlpgrad.unpack(theta, [4, 5, 3])
norms = mlpgrad.per_sample_grad_norms(weights, biases, X, y, head="softmax", per_layer=True)
clip_loss, clipped, clip_norms = mlpgrad.clipped_grad(weights, biases, X, y, head="softmax", max_norm=1.0)
rows = mlpgrad.per_sample_grads(weights, biases, X, y, head="softmax")
dots = mlpgrad.grad_dot(weights, biases, X, y, theta, head="softmax")
gram = mlpgrad.grad_gram(weights, biases, X, y, X[:5], y[:5], head="softmax")
fisher: Gradients = mlpgrad.sum_squared_grads(weights, biases, X, y, head="softmax")
Hv = mlpgrad.hvp(weights, biases, X, y, theta, head="softmax")
Gv = mlpgrad.ggn_vp(weights, biases, X, y, theta, head="softmax", reduction="mean")
diag = mlpgrad.ggn_diag(weights, biases, X, y, head="softmax")
info: dict[str, object] = mlpgrad.build_info()
version: str = mlpgrad.__version__

objective = Objective([4, 5, 3], X, y, head="softmax", reduction="mean", alpha=1e-3)
for _ in range(10):
    step_loss, step_grad = objective.loss_and_grad(theta)
    theta = theta - 0.1 * step_grad
fitted_loss: float = objective.loss(theta)
diag_G = objective.ggn_diag(theta)
n: int = objective.n_samples

clf = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=50, random_state=0).fit(X, y)
labels: npt.NDArray[np.int64] = clf.predict(X)
proba = clf.predict_proba(X)
dX = clf.input_gradient(X, y)

t: npt.NDArray[np.float64] = X[:, :2] @ np.array([[1.0, -0.5], [0.5, 2.0]]) + 0.1
reg = MLPRegressor(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=50, random_state=0).fit(X, t)
values: npt.NDArray[np.floating[npt.NBitBase]] = reg.predict(X)
r2: float = reg.score(X, t, sample_weight=np.ones(20))
reg = MLPRegressor(hidden_layer_sizes=(5,), random_state=0).partial_fit(X, t[:, 0])
dX_reg = reg.input_gradient(X, t[:, 0])
