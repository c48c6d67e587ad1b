"""mlpgrad: exact batched losses and gradients of sigmoid MLPs, computed by a C++ core.

    import mlpgrad
    loss, grads = mlpgrad.loss_and_grad(weights, biases, X, y, head="softmax")

``mlpgrad.reference`` holds the same functions in plain NumPy (the specification).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._types import Gradients
from ._flat import pack, unpack
from .api import forward, loss, loss_and_grad
from .model import MLP
from .objective import Objective
from .curvature import ggn_diag, ggn_vp, hvp
from .per_sample import (clipped_grad, grad_dot, grad_gram, per_sample_grad_norms, per_sample_grads,
                         sum_squared_grads)
from . import reference
from ._build import build_info

__version__: str = build_info()["version"]

if TYPE_CHECKING:  # loaded on first use at run time (__getattr__ below); visible to type checkers
    from .estimator import MLPClassifier as MLPClassifier
    from .estimator import MLPRegressor as MLPRegressor
    from ._plot import plot_loss_curve as plot_loss_curve

__all__ = ["Gradients", "forward", "loss", "loss_and_grad", "pack", "unpack", "Objective", "per_sample_grad_norms",
           "clipped_grad", "per_sample_grads", "grad_dot", "grad_gram", "sum_squared_grads", "hvp", "ggn_vp", "ggn_diag", "MLP", "reference",
           "build_info", "__version__"]


def __getattr__(name: str) -> Any:
    """``mlpgrad.MLPClassifier``, ``mlpgrad.MLPRegressor`` and ``mlpgrad.plot_loss_curve`` load on first use: they
    need the optional dependencies of the "sklearn" extra (scikit-learn, scipy; matplotlib for the plot)."""
    if name in ("MLPClassifier", "MLPRegressor"):
        try:
            from . import estimator
        except ImportError as exc:
            raise ImportError(f"mlpgrad.{name} needs scikit-learn and scipy ({exc}): "
                              'pip install "mlpgrad[sklearn]"') from exc
        return getattr(estimator, name)
    if name == "plot_loss_curve":
        from ._plot import plot_loss_curve
        return plot_loss_curve
    raise AttributeError(f"module 'mlpgrad' has no attribute {name!r}")
