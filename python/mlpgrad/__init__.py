"""mlpgrad: exact batched losses and gradients of sigmoid MLPs, computed by a C++ core.

    import mlpgrad
    loss, grads = mlpgrad.loss_and_grad(weights, biases, X, y, head="softmax")

``mlpgrad.reference`` holds the same functions in plain NumPy (the specification).
"""

from __future__ import annotations

from ._types import Gradients
from .api import forward, loss, loss_and_grad
from .model import MLP
from . import reference
from ._build import build_info

__version__ = build_info()["version"]

__all__ = ["Gradients", "forward", "loss", "loss_and_grad", "MLP", "reference", "build_info", "__version__"]
