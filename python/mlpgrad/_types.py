"""Result types shared by the native API and the reference, and the type aliases of the annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # scipy stays optional: its sparse types are named for type checkers only
    from scipy.sparse import sparray, spmatrix

ArrayLike = npt.ArrayLike
XLike = Union[npt.ArrayLike, "spmatrix", "sparray"]  # X: an array, or a scipy.sparse matrix or array
FloatArray = npt.NDArray[np.floating[Any]]  # float32 or float64: the parameters' dtype
Params = Sequence[ArrayLike]  # weights or biases: one array per layer
MaxNorm = Union[float, Sequence[float]]


class Gradients(NamedTuple):
    """Gradients of the loss, shaped like the parameters.

    Attributes
    ----------
    weights : list of ndarray
        ``weights[l]`` is dL/dW_l, of W_l's shape (d_l, d_{l+1}) and the parameters' dtype.
    biases : list of ndarray
        ``biases[l]`` is dL/db_l, of shape (d_{l+1},).
    input : ndarray or None
        dL/dX of shape (N, d_0) when ``input_grad=True`` (dense, for a sparse X too), else None.

    Examples
    --------
    >>> import numpy as np, mlpgrad
    >>> net = mlpgrad.MLP([3, 4, 2], head="softmax", dtype=np.float64, seed=0)
    >>> loss, grads = net.loss_and_grad(np.ones((5, 3)), np.array([0, 1, 1, 0, 1]))
    >>> [g.shape for g in grads.weights], grads.input is None
    ([(3, 4), (4, 2)], True)
    """
    weights: List[FloatArray]
    biases: List[FloatArray]
    input: Optional[FloatArray]
