"""Result types shared by the native API and the reference."""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import numpy as np


class Gradients(NamedTuple):
    """Gradients of the loss: ``weights[l]`` and ``biases[l]`` are shaped like the parameters;
    ``input`` is dL/dX of shape (N, d_0) when ``input_grad=True``, else None."""
    weights: List[np.ndarray]
    biases: List[np.ndarray]
    input: Optional[np.ndarray]
