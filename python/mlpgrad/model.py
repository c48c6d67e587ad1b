"""A small convenience object: a network's parameters with the API's functions as methods."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from . import api
from ._checks import check_dtype, check_head, check_layer_sizes
from ._types import ArrayLike, FloatArray, Gradients, XLike


class MLP:
    """A sigmoid MLP with layer sizes ``d_0 .. d_L`` and an output head.

    Weights are drawn from N(0, 1/d_in) (seeded by ``seed``), biases start at zero. ``weights[l]`` has
    shape ``(d_l, d_{l+1})`` and ``biases[l]`` ``(d_{l+1},)``; both lists may be read and assigned.

    Parameters
    ----------
    layer_sizes : sequence of int
        d_0 .. d_L, at least two, each >= 1.
    head : {"sigmoid", "softmax", "identity"}
        The output layer.
    dtype : float32 or float64, default=float32
        The parameters' dtype, that of every computation.
    seed : int or None, default=None
        Seed of ``np.random.default_rng`` for the weights.

    Raises
    ------
    TypeError
        layer_sizes not a sequence of ints, head not a string, or a dtype other than float32 / float64.
    ValueError
        Fewer than two sizes, a size < 1, or an unknown head.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> net = mlpgrad.MLP([4, 8, 3], head="softmax", seed=0)
    >>> net
    MLP([4, 8, 3], head='softmax', dtype=float32)
    >>> net.forward(np.ones((2, 4))).shape
    (2, 3)
    """

    def __init__(self, layer_sizes: Sequence[int], *, head: str, dtype: npt.DTypeLike = np.float32,
                 seed: Optional[int] = None) -> None:
        sizes = check_layer_sizes(layer_sizes)
        dtype = check_dtype(dtype)
        self.head = check_head(head)
        self.layer_sizes = tuple(sizes)
        self.dtype = dtype
        rng = np.random.default_rng(seed)
        self.weights = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
        self.biases = [np.zeros(b, dtype=dtype) for b in sizes[1:]]

    def __repr__(self) -> str:
        return f"MLP({list(self.layer_sizes)}, head={self.head!r}, dtype={self.dtype.name})"

    def forward(self, X: XLike, *, n_threads: Optional[int] = None) -> FloatArray:
        """Output probabilities (N, k): :func:`mlpgrad.forward` with this network's parameters and head.

        Parameters
        ----------
        X, n_threads
            As in :func:`mlpgrad.forward`.

        Returns
        -------
        ndarray
            (N, k) probabilities in the network's dtype.

        Raises
        ------
        TypeError, ValueError
            As :func:`mlpgrad.forward` (X of the wrong kind or shape; weights assigned with a wrong shape).

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> mlpgrad.MLP([2, 1], head="sigmoid", seed=0).forward(np.zeros((3, 2))).ravel()
        array([0.5, 0.5, 0.5], dtype=float32)
        """
        return api.forward(self.weights, self.biases, X, head=self.head, n_threads=n_threads)

    def loss(self, X: XLike, y: ArrayLike, *, reduction: str = "sum", sample_weight: Optional[ArrayLike] = None,
             n_threads: Optional[int] = None) -> float:
        """The loss as a Python float: :func:`mlpgrad.loss` with this network's parameters and head.

        Parameters
        ----------
        X, y, reduction, sample_weight, n_threads
            As in :func:`mlpgrad.loss_and_grad`.

        Returns
        -------
        float
            L.

        Raises
        ------
        TypeError, ValueError
            As :func:`mlpgrad.loss_and_grad`.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> round(mlpgrad.MLP([2, 1], head="sigmoid", seed=0).loss(np.zeros((3, 2)), np.ones(3)), 4)
        2.0794
        """
        return api.loss(self.weights, self.biases, X, y, head=self.head, reduction=reduction,
                        sample_weight=sample_weight, n_threads=n_threads)

    def loss_and_grad(self, X: XLike, y: ArrayLike, *, reduction: str = "sum",
                      sample_weight: Optional[ArrayLike] = None, input_grad: bool = False,
                      n_threads: Optional[int] = None) -> Tuple[float, Gradients]:
        """``(loss, Gradients)``: :func:`mlpgrad.loss_and_grad` with this network's parameters and head.

        Parameters
        ----------
        X, y, reduction, sample_weight, input_grad, n_threads
            As in :func:`mlpgrad.loss_and_grad`.

        Returns
        -------
        loss : float
            L.
        grads : Gradients
            Shaped like ``weights`` and ``biases``; ``grads.input`` dL/dX when ``input_grad``.

        Raises
        ------
        TypeError, ValueError
            As :func:`mlpgrad.loss_and_grad`.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> net = mlpgrad.MLP([2, 1], head="sigmoid", seed=0)
        >>> loss, grads = net.loss_and_grad(np.zeros((3, 2)), np.ones(3))
        >>> grads.biases[0]
        array([-1.5], dtype=float32)
        """
        return api.loss_and_grad(self.weights, self.biases, X, y, head=self.head, reduction=reduction,
                                 sample_weight=sample_weight, input_grad=input_grad, n_threads=n_threads)
