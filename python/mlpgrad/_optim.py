"""Optimizer steps on a flat parameter buffer: the native ones (``_core.adam_step`` / ``_core.sgd_step``,
cpp/src/optim.cpp) with a NumPy fallback of the same arithmetic (for a core built before they existed).

The buffer holds every weight first (``n_reg`` entries: the L2 penalty applies to those) and then every
bias, scikit-learn's ``_pack`` order. Each step adds ``l2 * p`` to the gradient of the first ``n_reg``
entries, updates the parameters and the optimizer state in place and returns the sum of squares of the
updated weights (the penalty of the next step's loss).
"""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["adam_step", "sgd_step", "NATIVE"]

NATIVE = hasattr(_core, "adam_step") and hasattr(_core, "sgd_step")


def _adam_step_numpy(params, grads, m, v, n_reg, l2, lr, beta1, beta2, eps):
    g = grads.copy()
    g[:n_reg] += l2 * params[:n_reg]
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    params -= lr * m / (np.sqrt(v) + eps)
    w = params[:n_reg]
    return float(np.dot(w, w))


def _sgd_step_numpy(params, grads, velocity, n_reg, l2, lr, momentum, nesterov):
    g = grads.copy()
    g[:n_reg] += l2 * params[:n_reg]
    velocity *= momentum
    velocity -= lr * g
    if nesterov:
        params += momentum * velocity - lr * g
    else:
        params += velocity
    w = params[:n_reg]
    return float(np.dot(w, w))


if NATIVE:
    def adam_step(params, grads, m, v, n_reg, l2, lr, beta1, beta2, eps):
        return _core.adam_step(params, grads, m, v, n_reg, l2, lr, beta1, beta2, eps)

    def sgd_step(params, grads, velocity, n_reg, l2, lr, momentum, nesterov):
        return _core.sgd_step(params, grads, velocity, n_reg, l2, lr, momentum, bool(nesterov))
else:  # pragma: no cover - only with an old build of the core
    adam_step = _adam_step_numpy
    sgd_step = _sgd_step_numpy
