"""``mlpgrad.Objective``: the loss of a fixed data set as a function of one flat parameter vector.

    obj = mlpgrad.Objective([784, 256, 10], X, y, head="softmax", reduction="mean", alpha=1e-4)
    res = scipy.optimize.minimize(obj.loss_and_grad, theta0, jac=True, method="L-BFGS-B")

The data are checked, converted and scanned once, when the Objective is made; each evaluation then goes
straight to the core with the parameters ``theta`` (P,) in ``mlpgrad.pack`` order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from . import _native
from ._checks import (_describe, check_dtype, check_head, check_layer_sizes, check_n_threads, check_nonnegative,
                      check_reduction, check_total_weight, float_dtype)
from ._flat import n_params, n_weights, unpack
from . import curvature as _curv
from . import per_sample as _ps
from ._checks import check_flag, check_max_norm
from ._types import ArrayLike, FloatArray, MaxNorm, XLike

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator

__all__ = ["Objective"]


def data_dtype(dtype, X) -> np.dtype:
    """The computation's dtype: ``dtype``, or with None X's own when it is float32, else float64."""
    if dtype is not None:
        return check_dtype(dtype)
    X_dtype = getattr(X, "dtype", None)
    native = float_dtype(X_dtype) if isinstance(X_dtype, np.dtype) else None
    return native if native == np.float32 else np.dtype(np.float64)


def as_theta(theta, P: int, dtype, name: str = "theta") -> np.ndarray:
    """theta as a C-ordered (P,) array of dtype: the caller's array when it already is one, else a converted copy."""
    if type(theta) is np.ndarray and theta.dtype == dtype and theta.shape == (P,) and theta.flags.c_contiguous:
        return theta
    arr = np.asarray(theta) if not isinstance(theta, (str, bytes, dict, set)) and theta is not None else None
    if arr is None or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real array of shape ({P},), got {_describe(theta)}")
    if arr.shape != (P,):
        raise ValueError(f"{name} must have shape ({P},) (the number of parameters), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


class _FlatObjective:
    """What the in-memory Objective and mlpgrad.dask.Objective share: the rules of their common arguments, the
    penalty alpha / 2 * sum_l ||W_l||^2 (the weights come first in theta) and unpack."""

    def _set_common(self, layer_sizes, X, head, reduction, alpha, dtype) -> None:
        self.layer_sizes = check_layer_sizes(layer_sizes)
        self.head = check_head(head)
        self.reduction = check_reduction(reduction)
        self.alpha = check_nonnegative(alpha, "alpha")
        self.dtype = data_dtype(dtype, X)
        self.n_params = n_params(self.layer_sizes)
        self._n_weights = n_weights(self.layer_sizes)
        self._sizes = list(self.layer_sizes)

    def unpack(self, theta: FloatArray) -> Tuple[List[FloatArray], List[FloatArray]]:
        """Views (weights, biases) of theta (..., P): see :func:`mlpgrad.unpack`.

        Parameters
        ----------
        theta : ndarray
            (..., P), float32 or float64, pack order.

        Returns
        -------
        weights, biases : list of ndarray
            Views of theta for the Objective's layer sizes.

        Raises
        ------
        TypeError, ValueError
            As :func:`mlpgrad.unpack`.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([2, 3], np.zeros((1, 2)), np.array([0]), head="softmax")
        >>> [W.shape for W in obj.unpack(np.zeros(obj.n_params))[0]]
        [(2, 3)]
        """
        return unpack(theta, self.layer_sizes)

    def _penalty(self, theta) -> float:
        w = theta[:self._n_weights].astype(np.float64, copy=False)
        return 0.5 * self.alpha * float(np.dot(w, w))

    def _add_penalty(self, value: float, grad, theta) -> float:
        """The data loss plus the penalty; its gradient alpha W is added to grad in place."""
        if not self.alpha:
            return value
        grad[:self._n_weights] += self.alpha * theta[:self._n_weights]
        return value + self._penalty(theta)


class Objective(_FlatObjective):
    """The loss of the data (X, y) for layer sizes d_0 .. d_L, as a function of the flat parameters theta.

    ``L(theta) = sum_i c_i l_i(theta) + alpha / 2 * sum_l ||W_l||^2`` with ``c_i = w_i`` (reduction "sum") or
    ``w_i / sum_j w_j`` ("mean"), ``w`` the sample weights (ones by default); the biases are not penalized.
    scikit-learn's ``MLPClassifier(alpha=a)`` minimizes the "mean" objective with ``alpha = a / sum_j w_j``
    (its penalty is divided by the number of samples, or their total weight).

    The data are checked, converted and scanned (labels, targets, weights, total weight) once, here; each
    call then does no validation of them. Labels, targets and weights are copied; X is referenced when it
    already has the dtype and C order (``np.ascontiguousarray(X, dtype)``), a sparse X's values when it already is
    a canonical CSR matrix (sorted indices, no duplicates) of the dtype: do not modify it while the Objective is in
    use.

    Parameters
    ----------
    layer_sizes : sequence of int
        d_0 .. d_L.
    X, y, head, reduction, sample_weight
        As in :func:`mlpgrad.loss_and_grad` (their rules and messages; X may be a scipy.sparse matrix).
    alpha : float, default=0.0
        The penalty's factor, finite and >= 0.
    dtype : float32, float64 or None, default=None
        The dtype of the computation and of the gradients; None takes X's when X is float32, else float64.
    n_threads : int or None, default=None
        Threads of each evaluation (None: OpenMP's setting).

    Attributes
    ----------
    n_params : int
        P, the length of theta.
    layer_sizes : tuple of int
        d_0 .. d_L.
    dtype : numpy.dtype
        float32 or float64.

    Raises
    ------
    TypeError, ValueError
        As :func:`mlpgrad.loss_and_grad` for the data; for layer sizes, alpha or dtype that break their rules.

    Examples
    --------
    >>> import numpy as np, scipy.optimize, mlpgrad
    >>> X, y = np.array([[0.0], [1.0]]), np.array([0, 1])
    >>> obj = mlpgrad.Objective([1, 2], X, y, head="softmax", reduction="mean", alpha=1e-2)
    >>> res = scipy.optimize.minimize(obj.loss_and_grad, np.zeros(obj.n_params), jac=True, method="L-BFGS-B")
    >>> bool(res.fun < obj.loss(np.zeros(obj.n_params)))
    True
    """

    def __init__(self, layer_sizes: Sequence[int], X: XLike, y: ArrayLike, *, head: str, reduction: str = "sum",
                 sample_weight: Optional[ArrayLike] = None, alpha: float = 0.0, dtype: npt.DTypeLike = None,
                 n_threads: Optional[int] = None) -> None:
        self._set_common(layer_sizes, X, head, reduction, alpha, dtype)
        self._threads = check_n_threads(n_threads)
        self.n_threads = n_threads
        sizes = self.layer_sizes
        self._data = _native.bind_data(X, y, sample_weight, self.head, sizes[0], sizes[-1], self.dtype, own=True)
        check_total_weight(self.reduction, self._data.total_weight, self._data.n)

    def __repr__(self) -> str:
        return (f"Objective({list(self.layer_sizes)}, N={self.n_samples}, head={self.head!r}, "
                f"reduction={self.reduction!r}, alpha={self.alpha}, dtype={self.dtype.name})")

    @property
    def n_samples(self) -> int:
        """N, the number of rows of X."""
        return self._data.n

    @property
    def total_weight(self) -> float:
        """sum_i w_i (N without sample weights)."""
        return self._data.total_weight

    def loss(self, theta: ArrayLike) -> float:
        """L(theta) as a Python float.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        float
            L(theta), the penalty included.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> round(obj.loss(np.zeros(obj.n_params)), 6)
        1.386294
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        value = _native.loss_and_grad_flat(theta, self._sizes, self._data, self.reduction, False, False,
                                           self._threads)[0]
        return value + self._penalty(theta) if self.alpha else value

    def loss_and_grad(self, theta: ArrayLike, out: Optional[FloatArray] = None) -> Tuple[float, FloatArray]:
        """``(L(theta), dL/dtheta)``: the gradient (P,) in the Objective's dtype, pack order, written into ``out``
        when given (a writeable C-contiguous (P,) array of that dtype), else into a new array.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        out : ndarray or None, default=None
            Where to write the gradient.

        Returns
        -------
        loss : float
            L(theta).
        grad : ndarray
            (P,), ``out`` when given.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). An out of the wrong dtype, shape or layout.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.loss_and_grad(np.zeros(obj.n_params))[1]
        array([0., 0., 0., 0.])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        if out is not None:
            check_out(out, self.n_params, self.dtype)
        value, grad, _ = _native.loss_and_grad_flat(theta, self._sizes, self._data, self.reduction, True, False,
                                                    self._threads, out)
        return self._add_penalty(value, grad, theta), grad

    # -- per-sample quantities (mlpgrad.per_sample_grad_norms and the rest, on the Objective's data) ---------------

    def per_sample_grad_norms(self, theta: ArrayLike, per_layer: bool = False) -> FloatArray:
        """||g_i|| (N,), or per layer (N, L): see :func:`mlpgrad.per_sample_grad_norms` (the data term's samples).

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        per_layer : bool, default=False
            One norm per sample and layer.

        Returns
        -------
        ndarray
            (N,) or (N, L).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). per_layer not a bool.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.per_sample_grad_norms(np.zeros(obj.n_params))
        array([1., 1.])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return _ps.norms_of(theta, self._sizes, self._data, check_flag(per_layer, "per_layer"), self._threads)

    def clipped_grad(self, theta: ArrayLike, max_norm: MaxNorm) -> Tuple[float, FloatArray, FloatArray]:
        """``(loss, grad (P,), norms)``: :func:`mlpgrad.clipped_grad` with the Objective's reduction and sample
        weights; the penalty (alpha) is added to the loss and its gradient unclipped.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        max_norm : float or sequence of float
            As in :func:`mlpgrad.clipped_grad`.

        Returns
        -------
        loss : float
            The unclipped L(theta).
        grad : ndarray
            (P,), pack order.
        norms : ndarray
            (N,) or (N, L).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). A max_norm that breaks its rule.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.clipped_grad(np.zeros(obj.n_params), 0.5)[2]
        array([1., 1.])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        clip = check_max_norm(max_norm, len(self.layer_sizes) - 1)
        value, grad, norms = _ps.clipped_of(theta, self._sizes, self._data, self.reduction, clip, self._threads)
        return self._add_penalty(value, grad, theta), grad, norms

    def per_sample_grads(self, theta: ArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
        """(N, P): row i = g_i (see :func:`mlpgrad.per_sample_grads`; N * P values, into ``out`` when given).

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        out : ndarray or None, default=None
            A writeable C-contiguous (N, P) array of the Objective's dtype.

        Returns
        -------
        ndarray
            (N, P).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). An out of the wrong dtype, shape or layout.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.per_sample_grads(np.zeros(obj.n_params)).shape
        (2, 4)
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return _ps.rows_of(theta, self._sizes, self._data, out, self._threads)

    def grad_dot(self, theta: ArrayLike, V: ArrayLike) -> FloatArray:
        """g_i . V (N,) or (N, m): see :func:`mlpgrad.grad_dot`.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        V : array_like
            (P,) or (P, m), finite.

        Returns
        -------
        ndarray
            (N,) or (N, m).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). A V of the wrong shape or not finite.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.grad_dot(np.zeros(obj.n_params), np.ones(obj.n_params))
        array([0., 0.])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return _ps.dot_of(theta, self._sizes, self._data, V, self._threads)

    def grad_gram(self, theta: ArrayLike, X2: Optional[XLike] = None, y2: Optional[ArrayLike] = None) -> FloatArray:
        """(N, N2) dot products of the per-sample gradients with those of (X2, y2) (default: the Objective's data):
        see :func:`mlpgrad.grad_gram`.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        X2, y2 : array_like or None, default=None
            A second set, both or neither; X2 dense or sparse, as X.

        Returns
        -------
        ndarray
            (N, N2).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). X2 or y2 alone, or breaking the rules of X and y.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.grad_gram(np.zeros(obj.n_params))
        array([[ 1., -1.],
               [-1.,  1.]])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return _ps.gram_of(theta, self._sizes, self._data, self.head, X2, y2, self._threads)

    def sum_squared_grads(self, theta: ArrayLike) -> FloatArray:
        """sum_i w_i g_i * g_i (P,), w the Objective's sample weights (ones without): see
        :func:`mlpgrad.sum_squared_grads`.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        ndarray
            (P,), pack order.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.sum_squared_grads(np.zeros(obj.n_params))
        array([0.5, 0.5, 0.5, 0.5])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return _ps.sumsq_of(theta, self._sizes, self._data, self._threads)

    # -- curvature (mlpgrad.hvp, ggn_vp, ggn_diag on the Objective's data, the penalty's curvature added) -------

    def hvp(self, theta: ArrayLike, V: ArrayLike) -> FloatArray:
        """``H V`` (P,) or (P, m) of L(theta), the penalty included: see :func:`mlpgrad.hvp`.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        V : array_like
            (P,) or (P, m), pack order, finite.

        Returns
        -------
        ndarray
            (P,) or (P, m).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). A V of the wrong shape or not finite.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.hvp(np.zeros(obj.n_params), np.eye(obj.n_params)[2])
        array([ 0.5, -0.5,  0.5, -0.5])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return _curv.products_of("hvp", theta, self._sizes, self._data, self.reduction, V, self._threads,
                                 self.alpha, self._n_weights)

    def ggn_vp(self, theta: ArrayLike, V: ArrayLike) -> FloatArray:
        """``(G + alpha I_W) V`` (P,) or (P, m): the data term's Gauss-Newton matrix (:func:`mlpgrad.ggn_vp`) plus
        the penalty's Hessian (alpha on the weights, 0 on the biases), so still positive semi-definite.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.
        V : array_like
            (P,) or (P, m), pack order, finite.

        Returns
        -------
        ndarray
            (P,) or (P, m).

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,). A V of the wrong shape or not finite.

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.ggn_vp(np.zeros(obj.n_params), np.eye(obj.n_params)[2])
        array([ 0.5, -0.5,  0.5, -0.5])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        return _curv.products_of("ggn_vp", theta, self._sizes, self._data, self.reduction, V, self._threads,
                                 self.alpha, self._n_weights)

    def ggn_diag(self, theta: ArrayLike) -> FloatArray:
        """``diag(G) + alpha`` on the weights (P,): see :func:`mlpgrad.ggn_diag` and :meth:`ggn_vp`.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        ndarray
            (P,), pack order.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.ggn_diag(np.zeros(obj.n_params))
        array([0.5, 0.5, 0.5, 0.5])
        """
        theta = as_theta(theta, self.n_params, self.dtype)
        out = _curv.diag_of(theta, self._sizes, self._data, self.reduction, self._threads)
        _curv.add_penalty(out, None, self.alpha, self._n_weights)
        return out

    def hessian_operator(self, theta: ArrayLike) -> LinearOperator:
        """H at theta as a ``scipy.sparse.linalg.LinearOperator`` (P x P, symmetric; ``matmat`` runs the columns in
        native blocks). theta is copied: later changes to the caller's array do not change the operator.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            (P, P), the Objective's dtype; needs scipy.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.hessian_operator(np.zeros(obj.n_params)).shape
        (4, 4)
        """
        return _operator(self, self.hvp, theta)

    def ggn_operator(self, theta: ArrayLike) -> LinearOperator:
        """``G + alpha I_W`` at theta as a ``scipy.sparse.linalg.LinearOperator`` (P x P, symmetric positive
        semi-definite): what ``scipy.sparse.linalg.cg`` takes. theta is copied.

        Parameters
        ----------
        theta : array_like
            (P,) in pack order, converted to the Objective's dtype.

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            (P, P), the Objective's dtype; needs scipy.

        Raises
        ------
        TypeError, ValueError
            theta not a real array of shape (P,).

        Examples
        --------
        >>> import numpy as np, mlpgrad
        >>> obj = mlpgrad.Objective([1, 2], np.ones((2, 1)), np.array([0, 1]), head="softmax")
        >>> obj.ggn_operator(np.zeros(obj.n_params)).shape
        (4, 4)
        """
        return _operator(self, self.ggn_vp, theta)


def _operator(obj, product, theta):
    """A symmetric LinearOperator of product(theta, V) at a copy of theta."""
    from scipy.sparse.linalg import LinearOperator

    theta = np.array(as_theta(theta, obj.n_params, obj.dtype), copy=True)
    P = obj.n_params
    return LinearOperator((P, P), matvec=lambda v: product(theta, np.reshape(v, -1)),
                          rmatvec=lambda v: product(theta, np.reshape(v, -1)),
                          matmat=lambda V: product(theta, V), rmatmat=lambda V: product(theta, V), dtype=obj.dtype)


def check_out(out, P: int, dtype) -> None:
    """out= of a gradient: a writeable C-contiguous (P,) array of the dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array of shape ({P},) and dtype {dtype}, got {_describe(out)}")
    if out.dtype != dtype:
        raise TypeError(f"out must have the Objective's dtype {dtype}, got {out.dtype}")
    if out.shape != (P,) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writeable C-contiguous array of shape ({P},), got shape {out.shape}"
                         + ("" if out.flags.writeable else " (read-only)")
                         + ("" if out.flags.c_contiguous else " (not C-contiguous)"))
