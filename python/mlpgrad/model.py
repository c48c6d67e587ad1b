"""A small convenience object: a network's parameters with the API's functions as methods."""

from __future__ import annotations

import numpy as np

from . import api
from ._checks import check_dtype, check_head, check_layer_sizes


class MLP:
    """A sigmoid MLP with layer sizes ``d_0 .. d_L`` and an output head.

    Weights are drawn from N(0, 1/d_in) (seeded by ``seed``), biases start at zero. ``weights[l]`` has
    shape ``(d_l, d_{l+1})`` and ``biases[l]`` ``(d_{l+1},)``; both lists may be read and assigned.
    """

    def __init__(self, layer_sizes, *, head, dtype=np.float32, seed=None):
        sizes = check_layer_sizes(layer_sizes)
        dtype = check_dtype(dtype)
        self.head = check_head(head)
        self.layer_sizes = tuple(sizes)
        self.dtype = dtype
        rng = np.random.default_rng(seed)
        self.weights = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
        self.biases = [np.zeros(b, dtype=dtype) for b in sizes[1:]]

    def __repr__(self):
        return f"MLP({list(self.layer_sizes)}, head={self.head!r}, dtype={self.dtype.name})"

    def forward(self, X, *, n_threads=None):
        return api.forward(self.weights, self.biases, X, head=self.head, n_threads=n_threads)

    def loss(self, X, y, *, reduction="sum", sample_weight=None, n_threads=None):
        return api.loss(self.weights, self.biases, X, y, head=self.head, reduction=reduction,
                        sample_weight=sample_weight, n_threads=n_threads)

    def loss_and_grad(self, X, y, *, reduction="sum", sample_weight=None, input_grad=False, n_threads=None):
        return api.loss_and_grad(self.weights, self.biases, X, y, head=self.head, reduction=reduction,
                                 sample_weight=sample_weight, input_grad=input_grad, n_threads=n_threads)
