"""The per-sample section of the bench (``python -m mlpgrad bench --per-sample``, issue 12).

For each shape, in one process, interleaved rounds (every implementation settles, then makes a block of timed
calls; medians per call), float32 by default:

- mlpgrad's per-sample functions, each against mlpgrad's own ``loss_and_grad`` (reduction "sum", no dL/dX): the
  baseline ``grad``; ``norms`` = per_sample_grad_norms; ``clipped`` = clipped_grad(max_norm=1.0);
  ``psg`` = per_sample_grads into a preallocated ``out=``; ``dot(1)`` / ``dot(16)`` = grad_dot with V of shape (P,)
  / (P, 16); ``gram`` = grad_gram(X) on its own row count (``gram_n``, N = N2); ``sumsq`` = sum_squared_grads;
- ``copyto``: ``np.copyto`` of a large array into another (the bytes per_sample_grads writes, at most
  ``COPY_MAX_BYTES``), and ``fill``: ``np.copyto`` of a scalar into the same array (writes only, as
  per_sample_grads does: it reads little), the yardsticks of per_sample_grads' GB/s written;
- the same-run GEMM rates (:func:`mlpgrad.bench.measure_gemm`, before the shapes, each the best of NumPy's matmul and
  torch.mm): the square GEMM (the bench's "% of best GEMM" denominator) and, per shape, a GEMM of the size of
  grad_dot(16)'s and grad_gram's largest product; and the FMA peak of the header (the "% of peak" column);
- the peers, when importable (never required): torch's own gradient (the same model as an ``nn.Sequential`` of
  Linear + Sigmoid, W transposed, ``CrossEntropyLoss`` / ``BCEWithLogitsLoss`` with reduction "sum");
  ``torch.func.vmap(grad)`` per-sample gradients and the norms from them; Opacus (``GradSampleModule`` hooks:
  per-sample norms from ``grad_sample``; ghost clipping: ``GradSampleModuleFastGradientClipping`` +
  ``DPOptimizerFastGradientClipping`` + ``DPLossFastGradientClipping``, one zero_grad + forward + double backward,
  leaving the clipped sum in ``.grad``, no noise and no optimizer step); BackPACK (``BatchL2Grad``, ``BatchGrad``,
  ``SumGradSquared`` in one ``backward`` each).

Before timing, every implementation is called once: mlpgrad's functions are compared with ``mlpgrad.reference`` on
the first ``CHECK_ROWS`` rows (the reference builds explicit per-sample outer products, O(N P)), and every peer with
the mlpgrad function computing the same thing on the full problem (max-norm relative error <= 1e-3 in float32,
1e-10 in float64; a WARNING line otherwise, as in the main table).

Every per-sample gradient that the peers build is an (N, P) array, so each shape's N keeps N P itemsize near 1 GB
(the wide network runs at N = 128). Tests run :func:`run` with ``quick=True`` (tiny shapes, two rounds, no torch
needed). ``bench.py`` owns the ``--per-sample`` flag and calls :func:`run_command_section`.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import math
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import bench
from ._flat import pack

__all__ = ["SHAPES", "QUICK_SHAPES", "TARGETS", "gradient_flops", "forward_backward_flops", "grad_dot_flops",
           "grad_gram_flops", "run", "format_times", "format_peers", "format_targets", "format_rates",
           "run_command_section"]

MAX_NORM = 1.0           # clipped_grad's and Opacus ghost clipping's max_norm
DOT_VECTORS = 16         # the second grad_dot's m
CHECK_ROWS = 32          # rows on which mlpgrad is compared with mlpgrad.reference
COPY_MAX_BYTES = 512 * 2 ** 20  # the np.copyto yardstick: the bytes per_sample_grads writes, at most this
PSG_MAX_BYTES = 2 * 2 ** 30     # a --config shape's N is cut so that one (N, P) array stays under this
BLOCK_SECONDS = 0.1      # timed seconds per block and implementation (each makes at least one call)
QUICK_BLOCK_SECONDS = 0.005


@dataclass(frozen=True)
class Shape:
    config: bench.Config  # the network, its head and N
    gram_n: int           # grad_gram's rows (N = N2): the Gram matrix is gram_n^2

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def gemm_targets(self) -> bool:
        """The issue states the >= 60% of GEMM targets for mnist (N = N2 = 1024) only."""
        return self.config.name == "mnist"


def _shape(name, n, gram_n) -> Shape:
    return Shape(replace(bench.get_config(name), n=n), gram_n)


# The shapes; the wide one at N = 128 keeps its (N, P) per-sample gradients (P = 2.1M) at 1.1 GB, as mnist's.
SHAPES: Dict[str, Shape] = {s.name: s for s in [
    _shape("mnist", 1024, 1024),
    _shape("seed1_small", 8192, 1024),
    _shape("mid_sigmoid", 8192, 1024),
    _shape("wide", 128, 512),
]}
QUICK_SHAPES: Dict[str, Shape] = {s.name: s for s in [_shape("smoke", 100, 64), _shape("smoke_sigmoid", 100, 64)]}

OPS = ("grad", "norms", "clipped", "psg", "dot1", "dot16", "gram", "sumsq")
OP_LABELS = {"grad": "loss_and_grad", "norms": "norms", "clipped": "clipped", "psg": "per_sample_grads",
             "dot1": "dot(1)", "dot16": f"dot({DOT_VECTORS})", "gram": "gram", "sumsq": "sumsq"}

# Ratio targets, time / loss_and_grad's time, on every shape: (op, bound).
RATIO_TARGETS = (("norms", 0.8), ("clipped", 1.15), ("dot1", 1.15), ("sumsq", 1.2))
SPEEDUP_TARGET = 5.0     # per_sample_grads at least this many times faster than vmap and BackPACK BatchGrad
GEMM_TARGET = 60.0       # grad_dot(16) and grad_gram: at least this % of the square GEMM's rate (mnist)
TARGETS = {"ratio": dict(RATIO_TARGETS), "speedup": SPEEDUP_TARGET, "pct_gemm": GEMM_TARGET}


# -- flop counts (matrix products only, as in the main table) --------------------------------------------------

def _products(sizes) -> List[int]:
    return [a * b for a, b in zip(sizes[:-1], sizes[1:])]


def forward_backward_flops(sizes, n: int) -> int:
    """The forward and the deltas of every layer: 2 n sum_l d_(l-1) d_l for z = h W, and 2 n sum_(l>=2) d_(l-1) d_l
    for delta_(l-1) = (delta_l W_l^T) * h (1 - h) (no dL/dX). What per_sample_grad_norms needs."""
    prods = _products(sizes)
    return 2 * n * sum(prods) + 2 * n * sum(prods[1:])


def gradient_flops(sizes, n: int) -> int:
    """loss_and_grad without dL/dX: the forward and the deltas, and dW_l = h_(l-1)^T delta_l, 2 n sum_l d_(l-1) d_l."""
    return forward_backward_flops(sizes, n) + 2 * n * sum(_products(sizes))


def grad_dot_flops(sizes, n: int, m: int) -> int:
    """grad_dot with m vectors: the forward and the deltas, and per layer the product of [h_(l-1), 1] (n, d_(l-1)+1)
    with V_l reshaped to (d_(l-1)+1, d_l m), 2 n m sum_l (d_(l-1)+1) d_l (its contraction with delta_l is
    elementwise work, not counted). With m = 1 about the gradient's count."""
    return forward_backward_flops(sizes, n) + 2 * n * m * sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def grad_gram_flops(sizes, n: int, n2: Optional[int] = None) -> int:
    """grad_gram of n rows against n2 rows (n2 = None: the same rows, X2 = None): the forward and deltas of each set,
    and per layer H_(l-1) H'_(l-1)^T and D_l D'_l^T (g_i . g'_j = sum_l (h.h' + 1)(delta.delta')),
    2 n n2 sum_l (d_(l-1) + d_l). The full n x n2 products are counted even for X2 = None, where an implementation
    may compute one triangle: that is part of its speed, as the same result's rate."""
    same = n2 is None
    n2 = n if same else n2
    fb = forward_backward_flops(sizes, n) + (0 if same else forward_backward_flops(sizes, n2))
    return fb + 2 * n * n2 * sum(a + b for a, b in zip(sizes[:-1], sizes[1:]))


def n_params(sizes) -> int:
    return sum(_products(sizes)) + sum(sizes[1:])


# -- mlpgrad's calls ---------------------------------------------------------------------------------------------

def _functions(source: str, threads: Optional[int]) -> Dict[str, Callable]:
    """The functions timed: mlpgrad's (with n_threads), or mlpgrad.reference's (a stand-in to test the plumbing)."""
    import mlpgrad
    names = ("loss_and_grad", "per_sample_grad_norms", "clipped_grad", "per_sample_grads", "grad_dot", "grad_gram",
             "sum_squared_grads")
    if source == "mlpgrad":
        mod, extra = mlpgrad, {"n_threads": threads}
    elif source == "reference":
        mod, extra = mlpgrad.reference, {}
    else:
        raise ValueError(f"source must be 'mlpgrad' or 'reference', got {source!r}")
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise RuntimeError(f"{mod.__name__} has no {', '.join(missing)}: the per-sample functions are not there")
    return {n: functools.partial(getattr(mod, n), **extra) for n in names}


def _op_calls(f: Dict[str, Callable], p: bench.Problem, gp: bench.Problem, V1, V16, out) -> Dict[str, Callable]:
    """One zero-argument call per op; ``gp`` is the Gram matrix's problem (its own row count)."""
    W, b, X, y, head = p.weights, p.biases, p.X, p.y, p.head
    return {
        "grad": lambda: f["loss_and_grad"](W, b, X, y, head=head, reduction="sum"),
        "norms": lambda: f["per_sample_grad_norms"](W, b, X, y, head=head),
        "clipped": lambda: f["clipped_grad"](W, b, X, y, head=head, max_norm=MAX_NORM),
        "psg": lambda: f["per_sample_grads"](W, b, X, y, head=head, out=out),
        "dot1": lambda: f["grad_dot"](W, b, X, y, V1, head=head),
        "dot16": lambda: f["grad_dot"](W, b, X, y, V16, head=head),
        "gram": lambda: f["grad_gram"](gp.weights, gp.biases, gp.X, gp.y, head=head),
        "sumsq": lambda: f["sum_squared_grads"](W, b, X, y, head=head),
    }


def _op_value(op: str, res) -> Dict[str, np.ndarray]:
    """An op's result as named arrays in mlpgrad's layout (flat gradients in pack order), for the comparisons."""
    if op == "grad":
        return {"loss": np.asarray(res[0]), "grad": pack(res[1].weights, res[1].biases)}
    if op == "clipped":
        return {"loss": np.asarray(res[0]), "grad": pack(res[1].weights, res[1].biases), "norms": np.asarray(res[2])}
    if op == "sumsq":
        return {"sumsq": pack(res.weights, res.biases)}
    key = {"norms": "norms", "psg": "psg", "dot1": "dot", "dot16": "dot", "gram": "gram"}[op]
    return {key: np.asarray(res)}


def _rows(p: bench.Problem, k: int) -> bench.Problem:
    return replace(p, X=p.X[:k], y=p.y[:k], config=replace(p.config, n=min(k, p.config.n)))


def _compare(value: Dict[str, np.ndarray], expected: Dict[str, np.ndarray]) -> tuple:
    """(worst key, its max-norm relative error) over the keys both have."""
    errs = {k: bench._rel_err(v, expected[k]) for k, v in value.items() if k in expected}
    worst = max(errs, key=errs.get)
    return worst, errs[worst]


def _check_against_reference(p, gp, V1, V16, tol, where, log) -> Dict[str, float]:
    """mlpgrad's ops against mlpgrad.reference on the first CHECK_ROWS rows: {op: relative error}."""
    k = min(CHECK_ROWS, p.config.n)
    pk, gk = _rows(p, k), _rows(gp, min(CHECK_ROWS, gp.config.n))
    P = V1.shape[0]
    native = _op_calls(_functions("mlpgrad", p.threads), pk, gk, V1, V16, np.empty((k, P), dtype=p.dtype))
    ref = _op_calls(_functions("reference", None), pk, gk, V1, V16, None)
    errs = {}
    for op in OPS:
        worst, err = _compare(_op_value(op, native[op]()), _op_value(op, ref[op]()))
        errs[op] = err
        if not err <= tol:
            log(f"WARNING: mlpgrad's {OP_LABELS[op]} disagrees with mlpgrad.reference on {where} (first {k} rows): "
                f"relative error {err:.2e} in {worst} > {tol:.0e}")
    return errs


# -- peers (torch, torch.func, Opacus, BackPACK): imported lazily, never required --------------------------------

PEER_OPS = {  # peer -> (label, the mlpgrad op computing the same thing, the package it needs besides torch)
    "torch_grad": ("torch grad", "grad", None),
    "vmap_grads": ("vmap per-sample grads", "psg", None),
    "vmap_norms": ("norms via vmap", "norms", None),
    "opacus_norms": ("Opacus hooks norms", "norms", "opacus"),
    "opacus_ghost": ("Opacus ghost-clipping step", "clipped", "opacus"),
    "backpack_l2": ("BackPACK BatchL2Grad", "norms", "backpack"),
    "backpack_grads": ("BackPACK BatchGrad", "psg", "backpack"),
    "backpack_sumsq": ("BackPACK SumGradSquared", "sumsq", "backpack"),
}
PEER_PACKAGES = {"opacus": "opacus", "backpack": "backpack-for-pytorch"}
# Opacus's clip factor is min(1, C / (||g_i|| + 1e-6)), not min(1, C / ||g_i||): its clipped sum is checked against
# mlpgrad's per-sample gradients weighted by that factor (the difference can reach 1e-5 where the sum cancels).
OPACUS_EPS = 1e-6


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def peer_versions(torch, packages: Dict[str, str] = PEER_PACKAGES) -> Dict[str, str]:
    """Versions of torch and of the installed peer ``packages`` ({module: distribution}) (imported here)."""
    out = {"torch": torch.__version__}
    for mod, dist in packages.items():
        if _installed(mod):
            try:
                from importlib.metadata import version
                out[mod] = version(dist)
            except Exception as exc:
                out[mod] = f"? ({type(exc).__name__})"
    return out


def _torch_model(torch, p: bench.Problem):
    """nn.Sequential of Linear + Sigmoid holding mlpgrad's parameters (Linear.weight = W^T)."""
    nn = torch.nn
    dtype = getattr(torch, p.dtype)
    layers = []
    for l, (W, b) in enumerate(zip(p.weights, p.biases)):
        lin = nn.Linear(W.shape[0], W.shape[1], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if l < len(p.weights) - 1:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def _torch_targets(torch, p: bench.Problem):
    if p.head == "softmax":
        return torch.from_numpy(np.ascontiguousarray(p.y, dtype=np.int64))
    return torch.from_numpy(np.ascontiguousarray(p.y.reshape(len(p.y), -1)))


def _torch_loss(torch, head: str):
    return (torch.nn.CrossEntropyLoss if head == "softmax" else torch.nn.BCEWithLogitsLoss)(reduction="sum")


def _row_loss(torch, head: str):
    """The head's loss with one value per row under reduction="none": Opacus's ghost clipping sets "none" and
    multiplies the per-row losses by an (N,) factor, which BCEWithLogitsLoss's (N, 1) would broadcast to (N, N)."""
    F = torch.nn.functional

    class RowLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.reduction = "sum"

        def forward(self, z, t):
            if head == "softmax":
                per_row = F.cross_entropy(z, t, reduction="none")
            else:
                per_row = F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(dim=1)
            return {"none": per_row, "sum": per_row.sum(), "mean": per_row.mean()}[self.reduction]
    return RowLoss()


def _flat(weights, biases):
    """torch gradients (Linear layout, weight (d_out, d_in)) -> flat numpy in mlpgrad's pack order."""
    import torch
    return torch.cat([w.detach().t().reshape(-1) for w in weights] + [b.detach().reshape(-1) for b in biases]).numpy()


def _flat_per_sample(weights, biases):
    """(N, d_out, d_in) and (N, d_out) per-sample gradients -> (N, P) numpy in pack order."""
    import torch
    n = biases[0].shape[0]
    return torch.cat([w.detach().transpose(1, 2).reshape(n, -1) for w in weights]
                     + [b.detach().reshape(n, -1) for b in biases], dim=1).numpy()


def _split(params):
    """nn.Sequential's parameters (W_1, b_1, W_2, b_2, ...) -> (weights, biases)."""
    params = list(params)
    return params[0::2], params[1::2]


def _peer_torch_grad(torch, p):
    model, crit = _torch_model(torch, p), _torch_loss(torch, p.head)
    X, y = torch.from_numpy(p.X), _torch_targets(torch, p)
    params = list(model.parameters())

    def call():
        loss = crit(model(X), y)
        return loss.detach(), torch.autograd.grad(loss, params)

    def value(res):
        return {"loss": res[0].numpy(), "grad": _flat(*_split(res[1]))}
    return call, value


def _vmap_grads_fn(torch, p):
    from torch.func import functional_call, grad, vmap
    model, crit = _torch_model(torch, p), _torch_loss(torch, p.head)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def sample_loss(params, x, t):
        return crit(functional_call(model, params, (x.unsqueeze(0),)), t.unsqueeze(0))
    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    X, y = torch.from_numpy(p.X), _torch_targets(torch, p)
    return lambda: per_sample(params, X, y)


def _norms_of(torch, per_param):
    """Per-sample norms from per-parameter per-sample tensors (N, ...): the norm of the per-parameter norms."""
    n = per_param[0].shape[0]
    return torch.stack([torch.linalg.vector_norm(g.reshape(n, -1), dim=1) for g in per_param]).norm(dim=0)


def _peer_vmap_grads(torch, p):
    call = _vmap_grads_fn(torch, p)
    return call, lambda res: {"psg": _flat_per_sample(*_split(res.values()))}


def _peer_vmap_norms(torch, p):
    grads = _vmap_grads_fn(torch, p)
    return (lambda: _norms_of(torch, list(grads().values()))), (lambda res: {"norms": res.numpy()})


def _peer_opacus_norms(torch, p):
    from opacus import GradSampleModule
    gsm = GradSampleModule(_torch_model(torch, p), batch_first=True, loss_reduction="sum")
    X, y, crit = torch.from_numpy(p.X), _torch_targets(torch, p), _torch_loss(torch, p.head)
    params = list(gsm.parameters())

    def call():
        gsm.zero_grad(set_to_none=True)  # also drops grad_sample, which would otherwise accumulate
        crit(gsm(X), y).backward()
        return _norms_of(torch, [q.grad_sample for q in params])
    return call, lambda res: {"norms": res.numpy()}


def _peer_opacus_ghost(torch, p):
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
    gsm = GradSampleModuleFastGradientClipping(_torch_model(torch, p), batch_first=True, loss_reduction="sum",
                                               max_grad_norm=MAX_NORM, use_ghost_clipping=True)
    opt = DPOptimizerFastGradientClipping(torch.optim.SGD(gsm.parameters(), lr=0.0), noise_multiplier=0.0,
                                          max_grad_norm=MAX_NORM, expected_batch_size=p.config.n, loss_reduction="sum")
    crit = DPLossFastGradientClipping(gsm, opt, _row_loss(torch, p.head), loss_reduction="sum")
    X, y = torch.from_numpy(p.X), _torch_targets(torch, p)
    params = list(gsm.parameters())

    def call():
        opt.zero_grad(set_to_none=True)
        loss = crit(gsm(X), y)
        loss.backward()  # the norms' backward, then the clipped one: the clipped sum is in .grad
        return loss.detach(), [q.grad for q in params], gsm.per_sample_gradient_norms

    def value(res):
        return {"loss": res[0].numpy(), "grad": _flat(*_split(res[1])), "norms": res[2].detach().numpy()}
    return call, value


def _backpack_call(torch, p, extension, read, extend_loss=False):
    """One backward with a BackPACK extension; ``extend_loss``: the loss module extended too (what second-order
    extensions, which backpropagate the loss's Hessian, need)."""
    from backpack import backpack, extend
    model = extend(_torch_model(torch, p))
    X, y, crit = torch.from_numpy(p.X), _torch_targets(torch, p), _torch_loss(torch, p.head)
    if extend_loss:
        crit = extend(crit)
    params = list(model.parameters())

    def call():
        model.zero_grad(set_to_none=True)
        with backpack(extension()):
            crit(model(X), y).backward()
        return read(params)
    return call


def _peer_backpack_l2(torch, p):
    from backpack.extensions import BatchL2Grad
    call = _backpack_call(torch, p, BatchL2Grad, lambda ps: torch.stack([q.batch_l2 for q in ps]).sum(dim=0).sqrt())
    return call, lambda res: {"norms": res.numpy()}


def _peer_backpack_grads(torch, p):
    from backpack.extensions import BatchGrad
    call = _backpack_call(torch, p, BatchGrad, lambda ps: [q.grad_batch for q in ps])
    return call, lambda res: {"psg": _flat_per_sample(*_split(res))}


def _peer_backpack_sumsq(torch, p):
    from backpack.extensions import SumGradSquared
    call = _backpack_call(torch, p, SumGradSquared, lambda ps: [q.sum_grad_squared for q in ps])
    return call, lambda res: {"sumsq": _flat(*_split(res))}


PEER_FACTORIES = {
    "torch_grad": _peer_torch_grad, "vmap_grads": _peer_vmap_grads, "vmap_norms": _peer_vmap_norms,
    "opacus_norms": _peer_opacus_norms, "opacus_ghost": _peer_opacus_ghost, "backpack_l2": _peer_backpack_l2,
    "backpack_grads": _peer_backpack_grads, "backpack_sumsq": _peer_backpack_sumsq,
}


def available_peers(peer_ops: Dict[str, tuple] = PEER_OPS) -> List[str]:
    """The peers of ``peer_ops`` whose packages are installed (torch for all; opacus, backpack for theirs), found
    without import."""
    if not _installed("torch"):
        return []
    return [name for name, (_, _, pkg) in peer_ops.items() if pkg is None or _installed(pkg)]


def _peer_calls(names, p, values, tol, where, log, notes, peer_ops=PEER_OPS, factories=PEER_FACTORIES,
                labels=OP_LABELS) -> tuple:
    """Make each peer, call it once and compare it with the mlpgrad op computing the same thing (``values``);
    a peer that fails to build or run is left out with a note. One peer's result is held at a time.
    ``peer_ops``, ``factories``, ``labels``: a section's tables (this one's by default).
    Returns ({peer: call}, {peer: relative error})."""
    torch = bench._setup_torch(p.threads)
    calls, errs = {}, {}
    if torch is None:
        notes.append(f"peers left out: torch is not importable ({bench._PEER_STATE['torch'].get('error')})")
        return calls, errs
    for name in names:
        label, op, _ = peer_ops[name]
        try:
            call, value = factories[name](torch, p)
            got = value(call())
        except Exception as exc:  # a peer's API or version problem: its column is just absent
            notes.append(f"{label} left out on {where}: {type(exc).__name__}: {exc}")
            continue
        worst, err = _compare(got, values["opacus_clipped" if name == "opacus_ghost" else op])
        errs[name] = err
        if not err <= tol:
            log(f"WARNING: {label} disagrees with mlpgrad's {labels[op]} on {where}: "
                f"relative error {err:.2e} in {worst} > {tol:.0e}")
        del got
        calls[name] = call
    return calls, errs


# -- timing ------------------------------------------------------------------------------------------------------

def _time_rounds(calls: Dict[str, Callable], repeat: Optional[int], quick: bool, settle: float) -> Dict[str, list]:
    """bench's interleaved rounds (each implementation settles, then makes a block of timed calls), with blocks of
    ~BLOCK_SECONDS per implementation instead of bench's per-config budget: a shape has ~17 implementations from
    0.1 ms to seconds, and the fast ones need enough calls for a steady median. ``repeat``: timed calls per
    implementation, split over the rounds, as in bench."""
    rounds = min(repeat, bench.ROUNDS) if repeat is not None else (2 if quick else bench.ROUNDS)
    seconds = QUICK_BLOCK_SECONDS if quick else BLOCK_SECONDS
    times = {name: [] for name in calls}
    blocks: Dict[str, List[int]] = {}
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name, fn in calls.items():
                last = bench._settle(fn, settle)
                if name not in blocks:
                    if repeat is not None:
                        blocks[name] = bench._block_sizes(repeat, rounds, len(calls), last, quick)
                    else:
                        k = int(min(bench.MAX_BLOCK, max(1, math.ceil(seconds / max(last, 1e-9)))))
                        blocks[name] = [k] * rounds
                for _ in range(blocks[name][r]):
                    times[name].append(bench._timed(fn))
    finally:
        if gc_enabled:
            gc.enable()
    return times


def _gemm_shapes(shapes: Sequence[Shape], quick: bool) -> list:
    """The square GEMM (the '% of GEMM' denominator, first) and per shape the size of grad_dot(16)'s largest
    product ([h, 1] (N, d_(l-1)+1) @ V_l (d_(l-1)+1, d_l m)) and of grad_gram's (H (n, d) @ H^T (d, n), d the
    widest)."""
    s = 256 if quick else 2048
    out = [("square", s, s, s, False)]
    for sh in shapes:
        sizes = sh.config.sizes
        a, b = max(zip(sizes[:-1], sizes[1:]), key=lambda ab: ab[0] * ab[1])
        out.append((f"{sh.name} dot", sh.config.n, a + 1, b * DOT_VECTORS, False))
        out.append((f"{sh.name} gram", sh.gram_n, max(sizes), sh.gram_n, False))
    return out


# -- the section -------------------------------------------------------------------------------------------------

def _one(shape: Shape, dtype: str, threads, repeat, quick, settle, log, peers, gemm, source, notes) -> dict:
    config, t0 = shape.config, time.perf_counter()
    p = bench.make_problem(config, dtype, threads)
    gp = bench.make_problem(replace(config, n=shape.gram_n), dtype, threads)  # same weights, its own rows
    P = n_params(config.sizes)
    rng = np.random.default_rng(bench.SEED + 1)
    V1 = rng.standard_normal(P).astype(dtype)
    V16 = rng.standard_normal((P, DOT_VECTORS)).astype(dtype)
    out = np.empty((config.n, P), dtype=dtype)
    tol = bench.TOLERANCE[dtype]
    where = f"{config.name} {dtype}"

    calls = _op_calls(_functions(source, threads), p, gp, V1, V16, out)
    ref_err = (_check_against_reference(p, gp, V1, V16, tol, where, log) if source == "mlpgrad" else {})
    values = {op: _op_value(op, calls[op]()) for op in ("grad", "norms", "clipped", "psg", "sumsq")}
    if "opacus_ghost" in peers:
        norms = values["clipped"]["norms"]
        factor = np.minimum(1, MAX_NORM / (norms + OPACUS_EPS)).astype(dtype)
        values["opacus_clipped"] = {**values["clipped"], "grad": factor @ values["psg"]["psg"]}
    for op in ("dot1", "dot16", "gram"):
        calls[op]()  # the warm-up
    peer_calls, peer_err = _peer_calls(peers, p, values, tol, where, log, notes) if peers else ({}, {})
    del values

    psg_bytes = out.nbytes
    copy_n = max(1, min(psg_bytes, COPY_MAX_BYTES) // 8)
    src, dst = np.ones(copy_n), np.empty(copy_n)  # float64: the bytes are what counts
    calls["copyto"] = lambda: np.copyto(dst, src)
    calls["fill"] = lambda: np.copyto(dst, 0.5)
    calls.update(peer_calls)

    stats = bench._stats(_time_rounds(calls, repeat, quick, settle))
    ms = stats["ms"]
    sizes, n = config.sizes, config.n
    flops = {"grad": gradient_flops(sizes, n), "norms": forward_backward_flops(sizes, n),
             "dot1": grad_dot_flops(sizes, n, 1), "dot16": grad_dot_flops(sizes, n, DOT_VECTORS),
             "gram": grad_gram_flops(sizes, shape.gram_n)}
    gflops = {op: f / (ms[op] * 1e-3) / 1e9 for op, f in flops.items()}
    gb_s = {"psg": psg_bytes / (ms["psg"] * 1e-3) / 1e9,
            **{k: dst.nbytes / (ms[k] * 1e-3) / 1e9 for k in ("copyto", "fill")}}
    gemm_rates = {}
    for label in ("square", f"{shape.name} dot", f"{shape.name} gram"):
        rate = bench.gemm_rate(gemm, dtype, label)  # the best of the backends
        if rate:
            gemm_rates[label.split()[-1]] = rate
    row = {
        "config": config.name, "layers": config.layers, "sizes": list(sizes), "head": config.head, "n": n,
        "gram_n": shape.gram_n, "n_params": P, "dtype": dtype, "threads": threads, "source": source,
        **stats,
        "ratio": {op: ms[op] / ms["grad"] for op in OPS if op != "grad"},
        "peer_ratio": {name: ms[name] / ms[PEER_OPS[name][1]] for name in peer_calls},
        "flops": flops, "gflops": gflops,
        "gemm_gflops": gemm_rates,  # square, dot (the dot(16)-sized product), gram (the Gram-sized product)
        "bytes": {"psg": psg_bytes, "copyto": dst.nbytes}, "gb_s": gb_s,
        "max_rel_err": {**{f"mlpgrad {op} vs reference": e for op, e in ref_err.items()},
                        **{f"{name} vs mlpgrad": e for name, e in peer_err.items()}},
        "tolerance": tol,
        "ok": all(e <= tol for e in list(ref_err.values()) + list(peer_err.values())),
    }
    row["targets"] = _targets(row, shape)
    row["seconds"] = time.perf_counter() - t0
    return row


def _target(measure, value, op, bound, fmt) -> dict:
    """One target: op "<=" (value at most bound) or ">=" (at least); gap = how far the value is from the bound."""
    if value is None:
        return {"measure": measure, "value": None, "target": f"{op} {fmt(bound)}", "met": None, "gap": None}
    met = value <= bound if op == "<=" else value >= bound
    if met:
        gap = None
    elif bound > 0 and value > 0:  # a ratio's gap is a factor, other measures' a difference
        gap = value / bound if op == "<=" else bound / value
    else:
        gap = value - bound
    return {"measure": measure, "value": value, "target": f"{op} {fmt(bound)}", "met": met,
            "gap": gap, "text": fmt(value)}


def _targets(row: dict, shape: Shape) -> List[dict]:
    ms, out = row["ms"], []
    for op, bound in RATIO_TARGETS:
        out.append(_target(f"{OP_LABELS[op]} / loss_and_grad", row["ratio"][op], "<=", bound, bench._fmt_ratio))
    for peer in ("vmap_grads", "backpack_grads"):
        value = ms[peer] / ms["psg"] if peer in ms else None
        out.append(_target(f"{PEER_OPS[peer][0]} / per_sample_grads", value, ">=", SPEEDUP_TARGET, bench._fmt_ratio))
    square = row["gemm_gflops"].get("square")
    for op in ("dot16", "gram"):
        pct = 100.0 * row["gflops"][op] / square if square else None
        measure = f"{OP_LABELS[op]} % of square GEMM"
        if shape.gemm_targets:
            out.append(_target(measure, pct, ">=", GEMM_TARGET, lambda x: f"{x:.0f}%"))
        elif pct is not None:
            out.append({"measure": measure, "value": pct, "target": "-", "met": None, "gap": None,
                        "text": f"{pct:.0f}%"})
    return out


def run(shapes=None, dtypes=("float32",), threads: Optional[int] = None, repeat: Optional[int] = None, *,
        quick: bool = False, settle: float = bench.SETTLE, log: Callable = print,
        progress: Optional[Callable] = None, peers=(), gemm: Optional[dict] = None,
        source: str = "mlpgrad", peak: Optional[Dict[str, float]] = None) -> dict:
    """The per-sample section: {"rows": one dict per (shape, dtype), "notes": [...], "peers": versions}.

    ``shapes``: names of :data:`SHAPES` (or of :data:`QUICK_SHAPES`), bench Config objects, or :class:`Shape`
    objects (default: all of SHAPES, or QUICK_SHAPES with ``quick``). ``peers``: names of :data:`PEER_OPS`, "auto"
    (the installed ones) or () (none). ``gemm``: a :func:`mlpgrad.bench.measure_gemm` result with the shapes of
    :func:`_gemm_shapes` (None: no GEMM columns). ``source="reference"`` times mlpgrad.reference instead of
    mlpgrad (tiny shapes only: it is O(N P) everywhere), to test the plumbing.
    ``peak``: {dtype: GFLOP/s} of the FMA loop (:func:`mlpgrad.bench.measure_peak`) for the "% of peak" column.
    """
    shapes = resolve_shapes(shapes, quick)
    if peers == "auto":
        peers = available_peers()
    unknown = [name for name in peers if name not in PEER_OPS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEER_OPS)}")
    notes: List[str] = []
    rows = []
    with warnings.catch_warnings():
        # Opacus's and BackPACK's module hooks on a model whose input needs no gradient: torch warns on every call.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        for shape in shapes:
            for dtype in bench._dtype_list(dtypes):
                row = _one(shape, dtype, threads, repeat, quick, settle, log, list(peers), gemm, source, notes)
                row["fma_peak_gflops"] = (peak or {}).get(dtype)
                rows.append(row)
                if progress is not None:
                    progress(f"per-sample {row['config']} N={row['n']} {dtype}: {len(row['ms'])} implementations "
                             f"in {row['seconds']:.1f} s")
    versions = {}
    if peers and "torch" in bench._PEER_STATE and bench._PEER_STATE["torch"].get("module") is not None:
        versions = peer_versions(bench._PEER_STATE["torch"]["module"])
        versions["torch threads"] = bench._PEER_STATE["torch"].get("threads")
    return {"rows": rows, "notes": notes, "peers": versions}


def resolve_shapes(shapes, quick: bool = False) -> List[Shape]:
    """Names (SHAPES, QUICK_SHAPES, or any bench config: N as there, cut to keep (N, P) under PSG_MAX_BYTES in
    float64), Config or Shape objects -> Shapes; None: the default list."""
    if shapes is None:
        return list((QUICK_SHAPES if quick else SHAPES).values())
    out = []
    for s in shapes:
        if isinstance(s, Shape):
            out.append(s)
            continue
        if isinstance(s, str) and s in SHAPES:
            sh = SHAPES[s]
        elif isinstance(s, str) and s in QUICK_SHAPES:
            sh = QUICK_SHAPES[s]
        else:
            config = bench.get_config(s)
            n = max(1, min(config.n, PSG_MAX_BYTES // (8 * n_params(config.sizes))))
            sh = Shape(replace(config, n=n), min(n, 1024))
        if quick:
            sh = Shape(sh.config.quick(), max(1, sh.gram_n // bench.QUICK_FACTOR))
        out.append(sh)
    return out


# -- tables ------------------------------------------------------------------------------------------------------

def format_times(rows: List[dict]) -> str:
    """mlpgrad's ms per call for each op, and np.copyto's (array, and scalar: fill)."""
    head = (["config", "layers", "N", "P", "dtype"] + [f"{OP_LABELS[op]} ms" for op in OPS if op != "gram"]
            + ["gram ms (N2)", "copyto ms (MB)", "fill ms"])
    body = []
    for r in rows:
        ms = r["ms"]
        body.append([r["config"], r["layers"], str(r["n"]), str(r["n_params"]), r["dtype"]]
                    + [bench._fmt_ms(ms[op]) for op in OPS if op != "gram"]
                    + [f"{bench._fmt_ms(ms['gram'])} ({r['gram_n']})",
                       f"{bench._fmt_ms(ms['copyto'])} ({r['bytes']['copyto'] / 1e6:.0f})",
                       bench._fmt_ms(ms["fill"])])
    return bench._markdown(head, body, [False, False, True, True, False] + [True] * (len(head) - 5))


def format_peers(rows: List[dict]) -> str:
    """The peers' ms per call beside mlpgrad's loss_and_grad and the mlpgrad op each one matches."""
    names = [name for name in PEER_OPS if any(name in r["ms"] for r in rows)]
    if not names:
        return ""
    head = ["config", "N", "dtype", "mlpgrad grad ms"] + [f"{PEER_OPS[n][0]} ms (vs mlpgrad)" for n in names]
    body = []
    for r in rows:
        cells = [r["config"], str(r["n"]), r["dtype"], bench._fmt_ms(r["ms"]["grad"])]
        for n in names:
            if n in r["ms"]:
                cells.append(f"{bench._fmt_ms(r['ms'][n])} ({bench._fmt_ratio(r['peer_ratio'][n])})")
            else:
                cells.append("-")
        body.append(cells)
    return bench._markdown(head, body, [False, True, False] + [True] * (len(head) - 3))


def format_targets(rows: List[dict]) -> str:
    """Issue 12's targets, each with its measured value and met / the gap."""
    head = ["config", "dtype", "measure", "value", "target", "met"]
    body = []
    for r in rows:
        for t in r["targets"]:
            if t["value"] is None:
                met = "- (peer absent)" if "/ per_sample_grads" in t["measure"] else "- (no GEMM)"
            elif t["met"] is None:
                met = "-"
            elif t["met"]:
                met = "met"
            else:
                met = f"gap: {t['gap']:.2f}x"
            body.append([r["config"], r["dtype"], t["measure"], t.get("text", "-"), t["target"], met])
    return bench._markdown(head, body, [False, False, False, True, False, False])


def format_rates(rows: List[dict]) -> str:
    """GFLOP/s of grad_dot(16), grad_gram (and loss_and_grad, grad_dot(1)) against the FMA peak and the same-run
    GEMMs; GB/s of per_sample_grads against np.copyto."""
    head = ["config", "dtype", "op", "GFLOP per call", "GFLOP/s", "% of peak", "square GEMM", "% square",
            "same-size GEMM", "% same-size"]
    body = []
    for r in rows:
        g, peak = r["gemm_gflops"], r.get("fma_peak_gflops")
        for op, size in (("grad", None), ("dot1", None), ("dot16", "dot"), ("gram", "gram")):
            rate = r["gflops"][op]
            cells = [r["config"], r["dtype"], OP_LABELS[op], f"{r['flops'][op] / 1e9:.3g}", bench._fmt_gflops(rate),
                     bench.fmt_pct(100 * rate / peak if peak else None)]
            for yard in ("square", size):
                y = g.get(yard) if yard else None
                cells += ([bench._fmt_gflops(y), f"{100 * rate / y:.0f}%"] if y else ["-", "-"])
            body.append(cells)
        for yard in ("copyto", "fill"):
            body.append([r["config"], r["dtype"], "per_sample_grads GB/s written", f"{r['bytes']['psg'] / 1e9:.3g} GB",
                         f"{r['gb_s']['psg']:.1f} GB/s", "-", "-", "-", f"{yard} {r['gb_s'][yard]:.1f} GB/s",
                         f"{100 * r['gb_s']['psg'] / r['gb_s'][yard]:.0f}%"])
    return bench._markdown(head, body, [False, False, False] + [True] * (len(head) - 3))


LEGEND = f"""\
ms: median per call (interleaved rounds, each implementation settling before its block). mlpgrad's ops:
loss_and_grad (reduction "sum", no dL/dX: the baseline), per_sample_grad_norms, clipped_grad (max_norm={MAX_NORM}),
per_sample_grads into a preallocated out= (N x P), grad_dot with V (P,) and (P, {DOT_VECTORS}), grad_gram(X) on N2
rows (N = N2), sum_squared_grads; copyto: np.copyto of an array of the MB shown into another, fill: of a scalar into
it (1 thread each; the memory yardsticks: fill writes only, as per_sample_grads, copyto reads as much). Peers (ms,
and in brackets their time over the mlpgrad op computing the same thing): torch's gradient (autograd.grad),
torch.func vmap(grad) per-sample gradients (as per-parameter tensors) and the norms from them, Opacus
GradSampleModule hooks (per-sample norms from grad_sample) and its ghost-clipping step (zero_grad + forward + its
two backwards, the clipped sum in .grad), BackPACK BatchL2Grad / BatchGrad / SumGradSquared (one backward each).
Targets (issue 12): op / loss_and_grad time, or peer time / per_sample_grads time, or GFLOP/s as % of the square
GEMM's timed in the same run (mnist); gap: how far from the bound (value / bound for <=, bound / value for >=).
GFLOP count the matrix products: forward + deltas (2n sum d_(l-1) d_l + 2n sum_(l>=2) d_(l-1) d_l), plus dW (2n sum
d_(l-1) d_l) for loss_and_grad, the products with V (2nm sum (d_(l-1)+1) d_l) for grad_dot, the n x N2 products 2 n
N2 sum (d_(l-1) + d_l) for grad_gram; same-size GEMM: one matmul of the size of the op's largest product. GB/s
written: N P itemsize / time. GEMM rates: the best of NumPy's matmul and torch.mm (when importable). % of peak:
GFLOP/s over the FMA peak of the dtype (the header's register-only FMA loop)."""


def print_tables(tables: List[tuple], gemm: Optional[dict], legend: str, notes: List[str]) -> None:
    """A bench section as the per-sample, curvature and training sections print it: each (heading, table) whose
    table is not empty, the GEMM lines, the legend, the notes."""
    for heading, table in tables:
        if table:
            print(f"\n{heading}:\n")
            print(table)
    if gemm:
        print("\n" + "\n".join(bench.format_gemm(gemm)))
    print("\n" + legend)
    for note in notes:
        print(f"NOTE: {note}")
    print(flush=True)


def peers_heading(result: dict) -> str:
    vers = ", ".join(f"{k} {v}" for k, v in result["peers"].items())
    return f"peers ({vers}), ms per call (their time / mlpgrad's for the same result)"


def print_section(result: dict, gemm: Optional[dict]) -> None:
    rows = result["rows"]
    print_tables([("per-sample gradients (issue 12): mlpgrad's ops, ms per call", format_times(rows)),
                  (peers_heading(result), format_peers(rows)),
                  ("targets", format_targets(rows)),
                  ("rates against the FMA peak, the same run's GEMM and memory copy", format_rates(rows))],
                 gemm, LEGEND, result["notes"])


def _cli_peers(requested) -> List[str]:
    """bench's --peers: "auto" -> the installed per-sample peers; a list with "torch" -> all of them (absent ones
    are noted when they fail); none -> no peers. jax has no per-sample peer here."""
    if requested == "auto":
        return available_peers()
    if "torch" in (requested or []):
        return list(PEER_OPS)
    return []


def run_command_section(args, configs, progress=None, peak=None) -> dict:
    """``bench --per-sample``: the shapes of --config (SHAPES' N for their names) or SHAPES (QUICK_SHAPES with
    --quick), --dtype, --threads, --repeat, --settle, --peers, --gemm; prints the tables, returns the JSON part."""
    chosen = [c.name if c.name in SHAPES or c.name in QUICK_SHAPES else c for c in configs]
    shapes = resolve_shapes(chosen or None, args.quick)
    gemm = None
    if args.gemm != "none":
        gemm = bench.measure_gemm(args.dtype, args.threads, args.gemm, quick=args.quick,
                                  shapes=_gemm_shapes(shapes, args.quick), repeat=args.repeat, settle=args.settle,
                                  progress=progress)
    result = run(shapes, args.dtype, args.threads, args.repeat, quick=args.quick, settle=args.settle,
                 log=print, progress=progress, peers=_cli_peers(args.peers), gemm=gemm, peak=peak)
    print_section(result, gemm)
    return {**result, "gemm": gemm}
