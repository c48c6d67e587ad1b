"""Types of the extension module ``mlpgrad._core`` (cpp/bindings/module.cpp), kept by hand and checked against the
built module by tests/test_typing.py: every name in both, the same parameters (count, and names where pybind11 gives
them; the others are positional-only here, ``/``) and matching types. Its only user is ``mlpgrad._native``."""

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

_Array = NDArray[np.float32] | NDArray[np.float64]
# X as the core takes it: a 2-D array, or a canonical CSR matrix's (values, indices, indptr, n_cols)
_SparseX = tuple[_Array, NDArray[np.int64], NDArray[np.int64], int]

class _Enum:
    """What every pybind11 enum has."""
    __members__: ClassVar[dict[str, "_Enum"]]
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Head(_Enum):
    sigmoid: ClassVar[Head]
    softmax: ClassVar[Head]
    identity: ClassVar[Head]

class Reduction(_Enum):
    sum: ClassVar[Reduction]
    mean: ClassVar[Reduction]

class Solver(_Enum):
    adam: ClassVar[Solver]
    sgd: ClassVar[Solver]

class Schedule(_Enum):
    automatic: ClassVar[Schedule]
    chunked: ClassVar[Schedule]
    layered: ClassVar[Schedule]

class Fault(_Enum):
    none: ClassVar[Fault]
    label_range: ClassVar[Fault]
    target_range: ClassVar[Fault]
    sample_weight: ClassVar[Fault]

class PerSampleOp(_Enum):
    norms: ClassVar[PerSampleOp]
    clipped: ClassVar[PerSampleOp]
    grads: ClassVar[PerSampleOp]
    dot: ClassVar[PerSampleOp]
    sumsq: ClassVar[PerSampleOp]

class CurvatureOp(_Enum):
    hvp: ClassVar[CurvatureOp]
    ggn_vp: ClassVar[CurvatureOp]
    ggn_diag: ClassVar[CurvatureOp]

class Data:
    """A batch converted and scanned once (see mlpgrad/_native.py)."""
    def __init__(self, X: object, labels: object, targets: object, sample_weight: object, head: Head, k: int,
                 float32: bool, own: bool) -> None: ...
    @property
    def n(self) -> int: ...
    @property
    def X(self) -> _Array | _SparseX: ...
    @property
    def ok(self) -> bool: ...
    @property
    def fault(self) -> Fault: ...
    @property
    def total_weight(self) -> float: ...
    @property
    def label_range(self) -> tuple[int, int]: ...

class TrainOptions:
    """The settings of train_epoch."""
    solver: Solver
    batch_size: int
    alpha: float
    lr: float
    beta1: float
    beta2: float
    eps: float
    momentum: float
    nesterov: bool
    loss_scale: float
    def __init__(self) -> None: ...

def forward(weights: list[_Array], biases: list[_Array], X: _Array | _SparseX, head: Head, float32: bool,
            n_threads: int, /) -> _Array: ...
def loss_and_grad(weights: list[_Array], biases: list[_Array], data: Data, reduction: Reduction, want_grad: bool,
                  input_grad: bool, n_threads: int, out: _Array | None, /
                  ) -> tuple[float, _Array | None, _Array | None]: ...
def loss_and_grad_flat(theta: _Array, sizes: Sequence[int], data: Data, reduction: Reduction, want_grad: bool,
                       input_grad: bool, n_threads: int, out: _Array | None, /
                       ) -> tuple[float, _Array | None, _Array | None]: ...
def per_sample(theta: _Array, sizes: Sequence[int], data: Data, reduction: Reduction, op: PerSampleOp,
               max_norm: Sequence[float], V: _Array | None, want_norms: bool, want_layer_norms: bool, n_threads: int,
               out: _Array | None, /) -> tuple[float, _Array | None, _Array | None, _Array | None]: ...
def curvature(theta: _Array, sizes: Sequence[int], data: Data, reduction: Reduction, op: CurvatureOp,
              V: _Array | None, n_threads: int, /) -> _Array: ...
def grad_gram(theta: _Array, sizes: Sequence[int], a: Data, b: Data | None, n_threads: int, /) -> _Array: ...
def train_epoch(params: _Array, grad: _Array, state1: _Array, state2: _Array | None, t: NDArray[np.int64],
                sizes: Sequence[int], data: Data, order: NDArray[np.int64] | None, options: TrainOptions, sumsq: float,
                n_threads: int, /) -> tuple[float, float, int]: ...
def build_info() -> dict[str, object]: ...
def fma_peak(float32: bool, n_threads: int) -> float: ...
def set_simd(level: str, /) -> str: ...
def set_schedule(schedule: Schedule, /) -> None: ...
def schedule() -> Schedule: ...
