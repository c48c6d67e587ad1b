"""Benchmark: the native core against the NumPy reference and peers (``python -m mlpgrad bench``).

Each call computes the loss, every dW_l and db_l, and dL/dX (``input_grad=True``) with
``reduction="sum"``: integer labels for the softmax head, 0/1 targets for the sigmoid head.
Data come from a fixed seed; weights ~ N(0, 1/d_in), biases ~ N(0, 0.1^2), X ~ N(0, 1).

Implementations (columns): ``reference`` (NumPy), ``native`` (the C++ core) and, when importable,
the peers ``torch`` (PyTorch eager) and ``jax`` (``jax.jit(jax.value_and_grad(...))``).  The peers
compute the same thing in the same layout and dtype: ``z = h @ W + b`` with W of shape
(d_in, d_out), sigmoid hidden layers, the loss summed over rows (softmax cross-entropy from the
logits via log_softmax, or sigmoid binary cross-entropy with logits), and the gradients of every
W, b and of X.  They are never required: they are imported lazily, only when asked for.

- torch: inputs are tensors made once with ``torch.from_numpy`` (W, b, X with requires_grad);
  a call is the forward (``torch.addmm(b, h, W)``, the fused bias + matmul that ``nn.Linear``
  lowers to, then ``torch.sigmoid``; ``F.cross_entropy`` = log_softmax + NLL, or
  ``F.binary_cross_entropy_with_logits``) and ``torch.autograd.grad(loss, [X, *Ws, *bs])``, which
  returns the gradients without accumulating into ``.grad`` (no zeroing pass, no in-place adds):
  the fastest idiomatic eager way.  Threads: ``torch.set_num_threads(T)``.
- jax: ``jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))`` over (Ws, bs, X), the inputs put
  on the device once, ``jax.block_until_ready`` on the outputs inside the timed call.  float64
  needs ``jax_enable_x64``: it is switched on (process-wide) before the first float64 arrays are
  made; float32 arrays stay float32.  Threads: the CPU client sizes its thread pool when it is
  created, from the environment; with ``--threads T`` the bench sets, in its own process and
  before jax is imported, ``XLA_FLAGS+=--xla_cpu_multi_thread_eigen=(T>1) intra_op_parallelism_threads=T``
  and ``PJRT_NPROC=T``.  With jax 0.10.2 measured here only ``PJRT_NPROC`` changes anything (a
  2048^3 matmul ran 2.0 CPU-seconds per second with XLA_FLAGS alone, 1.0 with PJRT_NPROC=1); the
  XLA flags are kept for older jaxlibs.  If jax's CPU client already exists when the bench starts
  (jax used earlier in the same process) its thread count cannot be changed: the header says so.

Method (the machine may be shared and noisy):

1. build the inputs once per (config, dtype); each implementation converts them once;
2. warm up and validate: call every implementation once and compare its results with the
   reference (max-norm relative error <= 1e-3 for float32, 1e-10 for float64; a WARNING line
   is printed otherwise; with ``--no-reference`` the peers are compared with native);
3. time interleaved rounds (A B C D A B C D ...): in each round every implementation in turn first
   *settles* (is called, untimed, for >= ``settle`` seconds, 0.15 s by default), then makes a
   block of calls, each timed alone with ``time.perf_counter``; report the median per
   implementation over all its timed calls (R calls in all; ~1.2 s of timed calls per config by
   default, shared by the implementations).

Why the settle phase: NumPy's OpenBLAS keeps its worker threads spinning for ~0.1 s after each
BLAS call (libgomp's threads spin briefly after a parallel region too, and torch ships its own
OpenMP runtime, and XLA its own thread pool); on a 2-core machine those spinners steal cores from
the next library's threads.  Measured here, a native call made right after a reference call took
~20 ms instead of ~1 ms (seed1_small, N=4096) until the spinning stopped.  Strictly alternating
single calls measures that contention, not the implementations; calling the same implementation
continuously for a while first measures each in the steady state of a loop that calls only it,
while rounds still spread the machine's noise over all of them.

Speed-ups are ratios of medians: "vs ref" = ref / native, "vs torch" = torch / native, "vs jax" =
jax / native (> 1: native is faster).  GFLOP/s count the matrix products only: forward
2 N sum(d_{l-1} d_l), dW the same, dH the same (layer 1 included because dL/dX is requested), so
6 N sum(d_{l-1} d_l) per call; elementwise work is not counted.  Two yardsticks, both of the same
run, dtype and thread count: "% of peak" is native's GFLOP/s over the machine's FMA peak (the
extension's register-only FMA loop on the active SIMD level, :func:`measure_peak`: what no kernel can
beat), "% of best GEMM" over the best GFLOP/s of a square matmul (2048^3; 1024^3 with ``--quick``)
among NumPy's ``@`` and ``torch.mm`` (when importable), timed the same way (:func:`measure_gemm`):
neither BLAS is the faster one on every machine.  The header names the CPU.

Other modes: ``--plot FILE.png`` (throughput against batch size N, log-log, for one config),
``--scaling`` (native with 1 and T threads on the large configs: issue 3 asks for >= 1.9x with 2
threads), ``--linear`` (native's time per row from 1k to 1M rows on a small config; it should be
flat), ``--per-sample``, ``--curvature``, ``--training`` and ``--sparse`` (their own modules, ``_bench_*.py``).

Implementations are a dict of named factories (``IMPLEMENTATIONS``): a factory gets a
:class:`Problem` and returns a zero-argument callable computing ``(loss, Gradients-like)``
(anything ``np.asarray`` accepts), or None if the implementation is unavailable.  :func:`run`,
:func:`measure_gemm`, :func:`scaling`, :func:`linear` and :func:`sweep` are the entry points for
tests; :func:`add_arguments` and :func:`run_command` are the ``bench`` command (``mlpgrad.cli`` dispatches).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ._types import Gradients

__all__ = ["Config", "SUITE", "IMPLEMENTATIONS", "PEERS", "Problem", "make_problem", "flop_count",
           "run", "measure_gemm", "gemm_rate", "measure_peak", "cpu_model", "scaling", "linear", "sweep", "plot",
           "available_peers", "setup_peers", "header_info", "format_header", "format_table", "format_gemm", "fmt_pct",
           "format_scaling", "format_linear", "add_arguments", "run_command"]

SEED = 0
QUICK_FACTOR = 16  # --quick divides every N by this
TOLERANCE = {"float32": 1e-3, "float64": 1e-10}
LOAD_WARNING = 0.5
LARGE_FLOPS = 1e9     # --scaling's default configs: at least this many FLOPs per call
SCALING_TARGET = 0.95  # issue 3: T threads at least 0.95 T times faster than 1 (1.9x for 2)


# -- configurations ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple  # (d_0, d_1, ..., d_L)
    n: int
    head: str

    @property
    def layers(self) -> str:
        """'784-256-256-10'; runs of 4+ equal widths are shortened: '64-(128x8)-10'."""
        parts, s = [], list(self.sizes)
        i = 0
        while i < len(s):
            j = i
            while j + 1 < len(s) and s[j + 1] == s[i]:
                j += 1
            count = j - i + 1
            if count >= 4:
                parts.append(f"({s[i]}x{count})")
            else:
                parts.extend(str(d) for d in s[i:j + 1])
            i = j + 1
        return "-".join(parts)

    def quick(self) -> "Config":
        return replace(self, n=max(1, self.n // QUICK_FACTOR))


# The suite: names are relied on elsewhere, keep them.
SUITE: Dict[str, Config] = {c.name: c for c in [
    Config("seed2_tiny", (5, 3, 5), 65536, "softmax"),
    Config("seed1_small", (32, 64, 64, 1), 65536, "sigmoid"),
    Config("mnist", (784, 256, 256, 10), 4096, "softmax"),
    Config("mnist_small_batch", (784, 256, 256, 10), 64, "softmax"),
    Config("wide", (1024, 1024, 1024, 10), 2048, "softmax"),
    Config("deep_narrow", tuple([64] + [128] * 8 + [10]), 16384, "softmax"),
]}

# Not in the default suite, accepted by --config and run(): tiny problems for tests.
EXTRA: Dict[str, Config] = {c.name: c for c in [
    Config("smoke", (4, 3, 2), 100, "softmax"),
    Config("smoke_sigmoid", (4, 3, 1), 100, "sigmoid"),
    Config("mid_sigmoid", (100, 50, 50, 1), 8192, "sigmoid"),  # one of --per-sample's and --curvature's shapes
    # --training's shapes (at their batch sizes there): scikit-learn's defaults on digits (N as digits'), issue 14's
    # 48,000 x 60 with 4 classes, and a binary problem with one sigmoid output.
    Config("digits", (64, 100, 10), 1797, "softmax"),
    Config("tabular", (60, 128, 64, 4), 48000, "softmax"),
    Config("binary_100", (100, 100, 1), 20000, "sigmoid"),
]}


def get_config(name) -> Config:
    if isinstance(name, Config):
        return name
    if name in SUITE:
        return SUITE[name]
    if name in EXTRA:
        return EXTRA[name]
    raise ValueError(f"unknown config {name!r}; choose from {', '.join(SUITE)} (or {', '.join(EXTRA)})")


def flop_count(sizes, n: int, input_grad: bool = True) -> int:
    """FLOPs of the matrix products of one loss_and_grad call (elementwise work not counted)."""
    prods = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    forward = 2 * n * sum(prods)
    dW = 2 * n * sum(prods)
    dH = 2 * n * (sum(prods[1:]) + (prods[0] if input_grad else 0))
    return forward + dW + dH


# -- problems and implementations -------------------------------------------------------------------

@dataclass
class Problem:
    """The inputs of one benchmark cell, built once."""
    config: Config
    dtype: str
    weights: List[np.ndarray]
    biases: List[np.ndarray]
    X: np.ndarray
    y: np.ndarray
    threads: Optional[int]  # n_threads for implementations that take it (None: their default)

    @property
    def head(self) -> str:
        return self.config.head


def make_problem(config: Config, dtype: str, threads: Optional[int] = None, seed: int = SEED) -> Problem:
    """Random data from a fixed seed, drawn in float64 so float32 and float64 see the same problem."""
    rng = np.random.default_rng(seed)
    sizes, n = config.sizes, config.n
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    k = sizes[-1]
    if config.head == "softmax":
        y = rng.integers(0, k, size=n)
    else:
        y = rng.integers(0, 2, size=(n,) if k == 1 else (n, k)).astype(dtype)
    return Problem(config, np.dtype(dtype).name, Ws, bs, X, y, threads)


def _reference(p: Problem):
    from . import reference

    def call():
        return reference.loss_and_grad(p.weights, p.biases, p.X, p.y, head=p.head, reduction="sum",
                                       input_grad=True)
    return call


def _native(p: Problem):
    from . import api

    def call():
        return api.loss_and_grad(p.weights, p.biases, p.X, p.y, head=p.head, reduction="sum",
                                 input_grad=True, n_threads=p.threads)
    return call


# -- peers (torch, jax): imported lazily, never required ---------------------------------------------

PEERS = ("torch", "jax")
_PEER_STATE: Dict[str, dict] = {}  # name -> {"module": ..., "error": ..., "threads": ..., ...}


def available_peers() -> List[str]:
    """The peers whose package is installed (found without importing it)."""
    out = []
    for name in PEERS:
        try:
            if importlib.util.find_spec(name) is not None:
                out.append(name)
        except (ImportError, ValueError):
            pass
    return out


def _setup_torch(threads: Optional[int]):
    """Import torch (once) and apply ``threads``; return the module or None."""
    st = _PEER_STATE.setdefault("torch", {})
    if "module" not in st and "error" not in st:
        try:
            import torch
        except Exception as exc:  # not installed or broken: the column is just absent
            st["error"] = f"{type(exc).__name__}: {exc}"
        else:
            st.update(module=torch, version=torch.__version__)
    torch = st.get("module")
    if torch is None:
        return None
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    st["threads"] = torch.get_num_threads()
    return torch


def _jax_backend_initialized() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    try:
        return bool(xb is not None and xb.backends_are_initialized())
    except Exception:
        return False


def _setup_jax(threads: Optional[int], x64: bool = False):
    """Import jax (once), its thread flags set first; enable float64 if ``x64``; return jax or None."""
    st = _PEER_STATE.setdefault("jax", {})
    if "module" not in st and "error" not in st:
        env = {}
        if _jax_backend_initialized():
            st["note"] = ("jax's CPU client existed before the bench started: its thread count is "
                          "whatever it was created with")
        elif threads is not None:
            flags = os.environ.get("XLA_FLAGS", "")
            env["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                                f" intra_op_parallelism_threads={threads}").strip()
            env["PJRT_NPROC"] = str(threads)
            os.environ.update(env)
        try:
            import jax
            jax.devices("cpu")  # create the CPU client now, with the environment above
        except Exception as exc:
            st["error"] = f"{type(exc).__name__}: {exc}"
        else:
            st.update(module=jax, version=jax.__version__, threads=threads, env=env)
    jax = st.get("module")
    if jax is None:
        return None
    if threads != st.get("threads") and "threads_note" not in st:
        st["threads_note"] = (f"jax's thread pool was sized at its first use (threads={st.get('threads')}); "
                              f"later requests (threads={threads}) do not change it")
    if x64 and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)
    st["x64"] = bool(jax.config.read("jax_enable_x64"))
    return jax


def setup_peers(names: Sequence[str], threads: Optional[int], dtypes=("float32",)) -> Dict[str, dict]:
    """Import the peers in ``names`` with their thread settings (jax: before its first use); return
    {name: {"version", "threads", ... or "error"}} for the header."""
    want64 = "float64" in _dtype_list(dtypes)
    out = {}
    for name in names:
        if name == "torch":
            _setup_torch(threads)
        elif name == "jax":
            _setup_jax(threads, want64)
        else:
            raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
        out[name] = {k: v for k, v in _PEER_STATE.get(name, {}).items() if k != "module"}
    return out


def _torch(p: Problem):
    torch = _setup_torch(p.threads)
    if torch is None:
        return None
    import torch.nn.functional as F

    def leaf(a):
        return torch.from_numpy(a).requires_grad_(True)
    Ws = [leaf(W) for W in p.weights]
    bs = [leaf(b) for b in p.biases]
    X = leaf(p.X)
    if p.head == "softmax":
        y = torch.from_numpy(np.ascontiguousarray(p.y, dtype=np.int64))
    else:
        y = torch.from_numpy(p.y.reshape(len(p.y), -1))
    inputs = [X] + Ws + bs
    L = len(Ws)

    def call():
        h = X
        for l in range(L - 1):
            h = torch.sigmoid(torch.addmm(bs[l], h, Ws[l]))
        z = torch.addmm(bs[-1], h, Ws[-1])
        if p.head == "softmax":
            loss = F.cross_entropy(z, y, reduction="sum")
        else:
            loss = F.binary_cross_entropy_with_logits(z, y, reduction="sum")
        g = torch.autograd.grad(loss, inputs)
        return loss.detach(), Gradients(list(g[1:L + 1]), list(g[L + 1:]), g[0])
    return call


def _jax(p: Problem):
    jax = _setup_jax(p.threads, x64=p.dtype == "float64")
    if jax is None:
        return None
    import jax.numpy as jnp

    def loss_fn(Ws, bs, X, y):
        h = X
        for W, b in zip(Ws[:-1], bs[:-1]):
            h = jax.nn.sigmoid(h @ W + b)
        z = h @ Ws[-1] + bs[-1]
        if p.head == "softmax":
            return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(z, axis=1), y[:, None], axis=1))
        return jnp.sum(jax.nn.softplus(z) - y * z)  # sigmoid BCE with logits

    f = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))
    Ws = [jnp.asarray(W) for W in p.weights]
    bs = [jnp.asarray(b) for b in p.biases]
    X = jnp.asarray(p.X)
    y = jnp.asarray(p.y) if p.head == "softmax" else jnp.asarray(p.y.reshape(len(p.y), -1))
    if X.dtype != np.dtype(p.dtype):
        raise RuntimeError(f"jax made {X.dtype} arrays from {p.dtype} data")

    def call():
        out = jax.block_until_ready(f(Ws, bs, X, y))
        loss, (dWs, dbs, dX) = out
        return loss, Gradients(list(dWs), list(dbs), dX)
    return call


# name -> factory(Problem) -> callable() -> (loss, grads), or None if unavailable.
# The first entry is the baseline every other implementation is validated against.
IMPLEMENTATIONS: Dict[str, Callable] = {
    "reference": _reference,
    "native": _native,
    "torch": _torch,
    "jax": _jax,
}
BASELINE = "reference"
LABELS = {"reference": "ref"}  # short column names in the table


# -- validation and timing --------------------------------------------------------------------------

def _rel_err(a, b) -> float:
    """Max-norm relative error max|a - b| / max|b|; inf on a shape mismatch or missing array."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    if b.size == 0:
        return 0.0
    err = float(np.max(np.abs(a - b)))
    return err / max(float(np.max(np.abs(b))), 1e-300) if math.isfinite(err) else math.inf


def _compare(result, expected) -> Dict[str, float]:
    """Relative error of every output: {'loss': .., 'dW[0]': .., 'db[0]': .., ..., 'dX': ..}."""
    (loss, g), (ref_loss, rg) = result, expected
    errs = {"loss": _rel_err(np.asarray(loss, dtype=np.float64), np.asarray(ref_loss, dtype=np.float64))}
    if len(g.weights) != len(rg.weights) or len(g.biases) != len(rg.biases):
        errs["layers"] = math.inf
    for l, (a, b) in enumerate(zip(g.weights, rg.weights)):
        errs[f"dW[{l}]"] = _rel_err(a, b)
    for l, (a, b) in enumerate(zip(g.biases, rg.biases)):
        errs[f"db[{l}]"] = _rel_err(a, b)
    errs["dX"] = _rel_err(g.input, rg.input)
    return errs


def _validate(calls: Dict[str, Callable], baseline: str, tol: float, where: str, log) -> tuple:
    """Call each implementation once (the warm-up) and compare with ``baseline``: (max_err, ok)."""
    results = {name: fn() for name, fn in calls.items()}
    max_err, ok = {}, True
    for name, res in results.items():
        if name == baseline:
            continue
        errs = _compare(res, results[baseline])
        worst = max(errs, key=errs.get)
        max_err[name] = errs[worst]
        if not errs[worst] <= tol:
            ok = False
            log(f"WARNING: {name} disagrees with {baseline} on {where}: "
                f"relative error {errs[worst]:.2e} in {worst} > {tol:.0e}")
    del results
    return max_err, ok


SETTLE = 0.15       # seconds each implementation is called untimed before each timed block
ROUNDS = 4          # timed blocks per implementation (2 with --quick)
TARGET = 1.2        # seconds of timed calls per config, all implementations (0.25 with --quick)
MAX_BLOCK = 1000    # timed calls per block at most


def _timed(fn) -> float:
    t0 = time.perf_counter()
    out = fn()
    t1 = time.perf_counter()
    del out  # freed outside the timed interval
    return t1 - t0


def _settle(fn, seconds: float) -> float:
    """Call ``fn`` until ``seconds`` have passed (at least once); return the last call's duration."""
    start = time.perf_counter()
    while True:
        last = _timed(fn)
        if time.perf_counter() - start >= seconds:
            return last


def _block_sizes(repeat: Optional[int], rounds: int, n_impls: int, call_seconds: float,
                 quick: bool) -> List[int]:
    """Timed calls per round: ``repeat`` split evenly, or ~TARGET / (rounds * n_impls) seconds per block."""
    if repeat is not None:
        return [repeat // rounds + (i < repeat % rounds) for i in range(rounds)]
    target = (0.25 if quick else TARGET) / (rounds * n_impls)
    k = int(min(MAX_BLOCK, max(1, math.ceil(target / max(call_seconds, 1e-9)))))
    return [k] * rounds


def _time_rounds(calls: Dict[str, Callable], repeat: Optional[int], quick: bool,
                 settle: float) -> Dict[str, List[float]]:
    """Interleaved rounds: each implementation settles, then makes a block of timed calls."""
    rounds = min(repeat, ROUNDS) if repeat is not None else (2 if quick else ROUNDS)
    times = {name: [] for name in calls}
    blocks: Dict[str, List[int]] = {}
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name, fn in calls.items():
                last = _settle(fn, settle)
                if name not in blocks:  # sized from a steady-state call in the first round
                    blocks[name] = _block_sizes(repeat, rounds, len(calls), last, quick)
                for _ in range(blocks[name][r]):
                    times[name].append(_timed(fn))
    finally:
        if gc_enabled:
            gc.enable()
    return times


def _stats(times: Dict[str, List[float]]) -> dict:
    return {
        "calls": {name: len(t) for name, t in times.items()},
        "ms": {name: 1e3 * float(np.median(t)) for name, t in times.items()},
        "ms_quartiles": {name: [1e3 * float(q) for q in np.percentile(t, [25, 75])]
                         for name, t in times.items()},
    }


def _bench_one(config: Config, dtype: str, threads, repeat, quick, settle, log,
               impls: Sequence[str], gemm_peak: Optional[Dict[str, float]] = None,
               fma_peak: Optional[Dict[str, float]] = None) -> dict:
    problem = make_problem(config, dtype, threads)
    calls = {}
    for name in impls:
        fn = IMPLEMENTATIONS[name](problem)
        if fn is not None:
            calls[name] = fn
        elif name in (BASELINE, "native"):
            raise RuntimeError(f"the implementation {name!r} is unavailable")
    baseline = BASELINE if BASELINE in calls else next(iter(calls))

    tol = TOLERANCE[dtype]
    max_err, ok = _validate(calls, baseline, tol, f"{config.name} {dtype}", log)
    stats = _stats(_time_rounds(calls, repeat, quick, settle))
    flops = flop_count(config.sizes, config.n, input_grad=True)
    ms = stats["ms"]
    native_ms = ms.get("native")
    gflops = {name: flops / (v * 1e-3) / 1e9 for name, v in ms.items()}
    peak = (gemm_peak or {}).get(dtype)
    fma = (fma_peak or {}).get(dtype)
    return {
        "config": config.name,
        "layers": config.layers,
        "sizes": list(config.sizes),
        "head": config.head,
        "n": config.n,
        "dtype": dtype,
        "threads": threads,
        "settle_s": settle,
        "flops": flops,
        **stats,
        "speedup": ms[BASELINE] / native_ms if native_ms and BASELINE in ms else None,
        "speedup_vs": {name: v / native_ms for name, v in ms.items() if native_ms and name != "native"},
        "gflops": gflops,
        "gemm_gflops": peak,
        "native_pct_gemm": 100.0 * gflops["native"] / peak if peak and "native" in gflops else None,
        "fma_peak_gflops": fma,
        "native_pct_peak": 100.0 * gflops["native"] / fma if fma and "native" in gflops else None,
        "validated_against": baseline,
        "max_rel_err": max_err,
        "tolerance": tol,
        "ok": ok,
    }


def _dtype_list(dtypes) -> List[str]:
    if isinstance(dtypes, (str, np.dtype, type)):
        dtypes = [dtypes]
    out = []
    for d in dtypes:
        names = ["float32", "float64"] if d == "both" else [np.dtype(d).name]
        for name in names:
            if name not in TOLERANCE:
                raise ValueError(f"dtype must be float32, float64 or 'both', got {d!r}")
            if name not in out:
                out.append(name)
    return out


def _impl_list(peers, reference: bool) -> List[str]:
    """reference (if asked), native, then the peers: 'auto' = the installed ones."""
    if peers is None:
        peers = ()
    elif isinstance(peers, str):
        peers = available_peers() if peers == "auto" else ([] if peers == "none" else peers.split(","))
    for p in peers:
        if p not in PEERS:
            raise ValueError(f"unknown peer {p!r}; choose from {', '.join(PEERS)}")
    return ([BASELINE] if reference else []) + ["native"] + [p for p in PEERS if p in peers]


def run(configs: Sequence = tuple(SUITE), dtypes=("float32",), threads: Optional[int] = None,
        repeat: Optional[int] = None, *, quick: bool = False, settle: float = SETTLE,
        log: Callable = print, progress: Optional[Callable] = None, peers=(),
        reference: bool = True, gemm_peak: Optional[Dict[str, float]] = None,
        fma_peak: Optional[Dict[str, float]] = None, fast: Optional[bool] = None) -> List[dict]:
    """Benchmark ``configs`` (names or :class:`Config`) in each of ``dtypes`` ("float32", "float64",
    "both"); return one row dict per (config, dtype).

    ``threads``: n_threads for the native calls and the peers' thread count (None: their defaults).
    ``repeat``: timed calls per implementation (None: ~1.2 s of timed calls per config).  ``quick``:
    divide every N by 16 and time less.  ``settle``: seconds of untimed calls before each timed block
    (0 for tests).  ``peers``: a list from :data:`PEERS`, "auto" (the installed ones) or ()
    (default); a peer that fails to import is left out.  ``reference=False`` skips the NumPy
    reference (the peers are then validated against native).  ``gemm_peak``: {dtype: GFLOP/s} from
    :func:`measure_gemm` (its "peak", the best GEMM) for the "% of best GEMM" column; ``fma_peak``: {dtype:
    GFLOP/s} from :func:`measure_peak` for the "% of peak" column.  ``fast``: time less without changing N
    (default: ``quick``).  ``log`` prints validation warnings; ``progress`` (if given) gets a line
    per finished row.
    """
    impls = _impl_list(peers, reference)
    fast = quick if fast is None else fast
    rows = []
    for name in configs:
        config = get_config(name)
        if quick:
            config = config.quick()
        for dtype in _dtype_list(dtypes):
            t0 = time.perf_counter()
            row = _bench_one(config, dtype, threads, repeat, fast, settle, log, impls, gemm_peak, fma_peak)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if progress is not None:
                calls = ", ".join(f"{k} x{v}" for k, v in row["calls"].items())
                progress(f"{row['config']} N={row['n']} {dtype}: {calls} timed calls in {row['seconds']:.1f} s")
    return rows


# -- GEMM: the "peak" in the same run -----------------------------------------------------------------

# (label, M, K, N, A transposed): C (M, N) = A (M, K) @ B (K, N); the first is the "peak".
GEMM_SHAPES = [
    ("square", 2048, 2048, 2048, False),
    ("mnist X@W1", 4096, 784, 256, False),      # mnist's first layer, forward
    ("mnist h^T@delta", 784, 4096, 256, True),  # mnist's dW1 = X^T delta_1 (A is a transposed view)
]


def _gemm_shapes(quick: bool) -> list:
    if not quick:
        return list(GEMM_SHAPES)
    return [("square", 1024, 1024, 1024, False),
            ("mnist X@W1", 256, 784, 256, False),
            ("mnist h^T@delta", 784, 256, 256, True)]


def _gemm_backends(backend: str, threads: Optional[int]) -> Dict[str, object]:
    """{name: torch module or None} for ``backend``: "auto" = NumPy's ``@`` and, when importable, ``torch.mm``."""
    if backend not in ("auto", "torch", "numpy"):
        raise ValueError(f"backend must be auto, torch, numpy or none, got {backend!r}")
    out = {}
    if backend in ("auto", "numpy"):
        out["numpy.matmul"] = None
    if backend in ("auto", "torch"):
        torch = _setup_torch(threads)
        if torch is not None:
            out["torch.mm"] = torch
        elif backend == "torch":
            raise RuntimeError(f"torch is not importable: {_PEER_STATE['torch'].get('error')}")
    return out


def _gemm_call(torch, a, b, trans: bool) -> Callable:
    if torch is None:
        return (lambda: a.T @ b) if trans else (lambda: a @ b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return (lambda: torch.mm(ta.t(), tb)) if trans else (lambda: torch.mm(ta, tb))


def measure_gemm(dtypes=("float32",), threads: Optional[int] = None, backend: str = "auto", *,
                 quick: bool = False, shapes: Optional[list] = None, repeat: Optional[int] = None,
                 settle: float = SETTLE, progress: Optional[Callable] = None) -> Optional[dict]:
    """Time matmuls (``GEMM_SHAPES``, or ``shapes``) per dtype with NumPy's ``@`` ("numpy"; threads limited with
    threadpoolctl if installed, else the environment's), ``torch.mm`` ("torch") or both ("auto": torch when
    importable); same interleaved settle-then-block rounds as :func:`run`. The rate of a shape is the best of
    the backends (:func:`gemm_rate`): neither BLAS is the faster one on every machine (MKL's torch.mm ran at
    129-164 GFLOP/s on an AMD EPYC where NumPy's OpenBLAS made 197).

    Returns {"backend": the backends' names joined, "backends": [...], "threads": {backend: count},
    "results": [{label, m, k, n, transposed, dtype, backend, ms, gflops}], "peak": {dtype: the best GFLOP/s of
    the first shape}, "best": {dtype: the backend that made it}}, or None for backend "none".
    """
    if backend == "none":
        return None
    backends = _gemm_backends(backend, threads)
    shapes = _gemm_shapes(quick) if shapes is None else shapes
    rng = np.random.default_rng(SEED)
    calls, meta = {}, {}
    for dtype in _dtype_list(dtypes):
        for label, m, k, n, trans in shapes:
            a = rng.standard_normal((k, m) if trans else (m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            for used, torch in backends.items():
                key = f"{label} {dtype} {used}"
                calls[key] = _gemm_call(torch, a, b, trans)
                meta[key] = dict(label=label, m=m, k=k, n=n, transposed=trans, dtype=dtype, backend=used,
                                 flops=2 * m * k * n)

    blas_threads = None
    limiter = None
    if "numpy.matmul" in backends and threads is not None:
        try:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=threads, user_api="blas")
            blas_threads = threads
        except ImportError:
            pass
    try:
        t0 = time.perf_counter()
        for fn in calls.values():  # warm-up
            fn()
        stats = _stats(_time_rounds(calls, repeat, quick, settle))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    results = []
    for key, m in meta.items():
        ms = stats["ms"][key]
        results.append({**m, "ms": ms, "ms_quartiles": stats["ms_quartiles"][key], "calls": stats["calls"][key],
                        "gflops": m["flops"] / (ms * 1e-3) / 1e9})
    if progress is not None:
        progress(f"GEMM ({', '.join(backends)}): {len(calls)} matmuls timed in {time.perf_counter() - t0:.1f} s")
    thr = {}
    for used, torch in backends.items():
        if torch is not None:
            thr[used] = torch.get_num_threads()
        else:
            thr[used] = blas_threads if blas_threads is not None else "set by the environment"
    gemm = {"backend": ", ".join(backends), "backends": list(backends), "threads": thr, "results": results}
    first = shapes[0][0]
    best = {d: _best_gemm(results, d, first) for d in _dtype_list(dtypes)}
    gemm["peak"] = {d: r["gflops"] for d, r in best.items() if r}
    gemm["best"] = {d: r["backend"] for d, r in best.items() if r}
    return gemm


def _best_gemm(results: List[dict], dtype: str, label: str) -> Optional[dict]:
    rs = [r for r in results if r["dtype"] == dtype and r["label"] == label]
    return max(rs, key=lambda r: r["gflops"]) if rs else None


def gemm_rate(gemm: Optional[dict], dtype: str, label: str = "square") -> Optional[float]:
    """The best GFLOP/s among the backends of a :func:`measure_gemm` result for one shape and dtype (None:
    not measured)."""
    best = _best_gemm((gemm or {}).get("results", []), dtype, label)
    return best["gflops"] if best else None


# -- the machine's peak ------------------------------------------------------------------------------

def measure_peak(dtypes=("float32",), threads: Optional[int] = None) -> Dict[str, float]:
    """{dtype: GFLOP/s} of the extension's register-only FMA loop (mlpgrad/peak.hpp) on the active SIMD level
    and ``threads`` threads (None: OpenMP's default), ~0.1 s per dtype: what no kernel can beat."""
    from . import _native
    return {d: _native.fma_peak(d == "float32", threads or 0) for d in _dtype_list(dtypes)}


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo's "model name" (Linux x86), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# -- modes: thread scaling, time against N, the plot sweep ------------------------------------------

def large_configs() -> List[str]:
    """Suite configs with at least ``LARGE_FLOPS`` matmul FLOPs per call (the --scaling default)."""
    return [c.name for c in SUITE.values() if flop_count(c.sizes, c.n) >= LARGE_FLOPS]


def scaling(configs: Optional[Sequence] = None, dtypes=("float32",), threads: Sequence[int] = (1, 2),
            repeat: Optional[int] = None, *, quick: bool = False, settle: float = SETTLE,
            log: Callable = print, progress: Optional[Callable] = None) -> List[dict]:
    """Native with each thread count in ``threads`` (interleaved rounds, validated against the first);
    one row per (config, dtype) with ms per thread count and the speed-up ms[first] / ms[last].
    ``configs`` default: :func:`large_configs`."""
    from . import api
    threads = list(threads)
    rows = []
    for name in (large_configs() if configs is None else configs):
        config = get_config(name)
        if quick:
            config = config.quick()
        for dtype in _dtype_list(dtypes):
            t0 = time.perf_counter()
            p = make_problem(config, dtype)
            calls = {}
            for t in threads:
                def call(t=t):
                    return api.loss_and_grad(p.weights, p.biases, p.X, p.y, head=p.head, reduction="sum",
                                             input_grad=True, n_threads=t)
                calls[f"native[{t}]"] = call
            first, last = f"native[{threads[0]}]", f"native[{threads[-1]}]"
            max_err, ok = _validate(calls, first, TOLERANCE[dtype], f"{config.name} {dtype}", log)
            stats = _stats(_time_rounds(calls, repeat, quick, settle))
            ratio = stats["ms"][first] / stats["ms"][last]
            target = SCALING_TARGET * threads[-1] / threads[0]
            rows.append({
                "config": config.name, "layers": config.layers, "n": config.n, "dtype": dtype,
                "threads": threads, **stats, "speedup": ratio, "target": target,
                "meets_target": ratio >= target, "max_rel_err": max_err, "ok": ok,
                "seconds": time.perf_counter() - t0,
            })
            if progress is not None:
                progress(f"scaling {config.name} {dtype}: {ratio:.2f}x in {rows[-1]['seconds']:.1f} s")
    return rows


LINEAR_SIZES = tuple(2 ** k for k in range(10, 21))  # 1k .. 1M rows


def linear(config="seed1_small", dtype: str = "float32", threads: Optional[int] = None,
           ns: Sequence[int] = LINEAR_SIZES, repeat: Optional[int] = None, *,
           settle: float = SETTLE, progress: Optional[Callable] = None) -> List[dict]:
    """Native alone on ``config`` at each batch size in ``ns``: ms per call and ns per row (which
    should be flat in N once the per-call overhead is amortized)."""
    from . import api
    base = get_config(config)
    rows = []
    for n in ns:
        t0 = time.perf_counter()
        p = make_problem(replace(base, n=int(n)), np.dtype(dtype).name, threads)

        def call():
            return api.loss_and_grad(p.weights, p.biases, p.X, p.y, head=p.head, reduction="sum",
                                     input_grad=True, n_threads=p.threads)
        call()
        stats = _stats(_time_rounds({"native": call}, repeat, True, settle))
        ms = stats["ms"]["native"]
        rows.append({"config": base.name, "layers": base.layers, "n": int(n), "dtype": p.dtype,
                     "threads": threads, **stats, "ns_per_row": 1e6 * ms / n,
                     "gflops": flop_count(base.sizes, n) / (ms * 1e-3) / 1e9,
                     "seconds": time.perf_counter() - t0})
        p = call = None  # free the problem before the next size
        if progress is not None:
            progress(f"linear {base.name} N={n}: {ms:.3f} ms in {rows[-1]['seconds']:.1f} s")
    last = rows[-1]["ns_per_row"] if rows else None
    for r in rows:
        r["per_row_vs_largest"] = r["ns_per_row"] / last
    return rows


OBJECTIVE_N = 64
OBJECTIVE_CONFIGS = ("seed1_small", "mnist")


def objective(configs: Sequence = OBJECTIVE_CONFIGS, dtypes=("float32",), threads: Optional[int] = None,
              n: int = OBJECTIVE_N, repeat: Optional[int] = None, *, settle: float = SETTLE,
              progress: Optional[Callable] = None) -> List[dict]:
    """Per-call time of the loss and every gradient at a small batch: the functional call on lists of
    parameters (which checks and binds the data on every call) against ``Objective.loss_and_grad(theta)``
    (data bound once), interleaved; both compute the same numbers."""
    from . import api
    from ._flat import pack
    from .objective import Objective
    rows = []
    for config in configs:
        base = get_config(config)
        for dtype in _dtype_list(dtypes):
            p = make_problem(replace(base, n=int(n)), dtype, threads)
            theta = pack(p.weights, p.biases)
            obj = Objective(base.sizes, p.X, p.y, head=p.head, n_threads=p.threads)
            calls = {
                "functional": lambda: api.loss_and_grad(p.weights, p.biases, p.X, p.y, head=p.head,
                                                        n_threads=p.threads),
                "objective": lambda: obj.loss_and_grad(theta),
            }
            stats = _stats(_time_rounds(calls, repeat, False, settle))
            ms = stats["ms"]
            rows.append({"config": base.name, "layers": base.layers, "n": int(n), "dtype": dtype,
                         "threads": threads, **stats, "ratio": ms["functional"] / ms["objective"]})
            if progress is not None:
                progress(f"objective {base.name} {dtype}: functional {1e3 * ms['functional']:.1f} us, "
                         f"Objective {1e3 * ms['objective']:.1f} us")
    return rows


def format_objective(rows: List[dict]) -> str:
    head = ["config", "layers", "N", "dtype", "functional (us)", "Objective (us)", "functional / Objective"]
    body = [[r["config"], r["layers"], str(r["n"]), r["dtype"], f"{1e3 * r['ms']['functional']:.1f}",
             f"{1e3 * r['ms']['objective']:.1f}", _fmt_ratio(r["ratio"])] for r in rows]
    return _markdown(head, body, [False, False, True, False, True, True, True])


PLOT_MIN_N = 2 ** 6
PLOT_MAX_N = 2 ** 20
PLOT_FLOP_BUDGET = 2e11  # default largest N: ~200 GFLOP per call (mnist: 2^16 rows)


def plot_sizes(config, max_n: Optional[int] = None) -> List[int]:
    """Powers of two from 2^6 to ``max_n`` (default: the largest with <= ~200 GFLOP per call, at
    most 2^20: mnist 2^16, seed1_small 2^20)."""
    config = get_config(config)
    if max_n is None:
        per_row = flop_count(config.sizes, 1)
        max_n = 2 ** int(math.floor(math.log2(max(PLOT_FLOP_BUDGET / per_row, 1))))
        max_n = min(PLOT_MAX_N, max(max_n, 2 ** 10))
    out, n = [], PLOT_MIN_N
    while n <= max_n:
        out.append(n)
        n *= 2
    return out or [int(max_n)]


def sweep(config="mnist", dtypes=("float32",), threads: Optional[int] = None,
          ns: Optional[Sequence[int]] = None, repeat: Optional[int] = None, *,
          settle: float = SETTLE, log: Callable = print, progress: Optional[Callable] = None,
          peers=(), reference: bool = True, gemm_peak: Optional[Dict[str, float]] = None,
          fma_peak: Optional[Dict[str, float]] = None) -> List[dict]:
    """:func:`run` on ``config`` at each batch size in ``ns`` (default :func:`plot_sizes`), with the
    shorter timing of --quick: the data of the plot."""
    base = get_config(config)
    ns = plot_sizes(base) if ns is None else ns
    configs = [replace(base, n=int(n)) for n in ns]
    return run(configs, dtypes, threads, repeat, settle=settle, log=log, progress=progress,
               peers=peers, reference=reference, gemm_peak=gemm_peak, fma_peak=fma_peak, fast=True)


_STYLE = {"reference": ("ref (NumPy)", "o", "tab:gray"), "native": ("native", "s", "tab:red"),
          "torch": ("torch eager", "^", "tab:blue"), "jax": ("jax jit", "v", "tab:green")}


def plot(rows: List[dict], path: str, gemm: Optional[dict] = None, title: str = "",
         peak: Optional[Dict[str, float]] = None) -> str:
    """Write a log-log PNG of GFLOP/s (left axis; rows/s on the right) against N, one panel per dtype,
    one line per implementation, the best GEMM's GFLOP/s as a dashed line and the FMA peak (``peak``, from
    :func:`measure_peak`) as a dotted one; needs matplotlib."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    dtypes = [d for d in ("float32", "float64") if any(r["dtype"] == d for r in rows)]
    fig = Figure(figsize=(6.4 * len(dtypes), 4.8), layout="constrained")
    axes = fig.subplots(1, len(dtypes), squeeze=False)[0]
    for ax, dtype in zip(axes, dtypes):
        rs = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: r["n"])
        for name in IMPLEMENTATIONS:
            pts = [(r["n"], r["gflops"][name]) for r in rs if name in r["gflops"]]
            if pts:
                label, marker, color = _STYLE.get(name, (name, "x", None))
                ax.plot(*zip(*pts), marker=marker, color=color, label=label)
        g = _best_gemm((gemm or {}).get("results", []), dtype, "square")
        if g is not None:
            ax.axhline(g["gflops"], color="black", linestyle="--", linewidth=1,
                       label=f"{g['backend']} {g['m']}x{g['k']}x{g['n']}: {g['gflops']:.0f} GFLOP/s")
        if (peak or {}).get(dtype):
            ax.axhline(peak[dtype], color="black", linestyle=":", linewidth=1,
                       label=f"FMA peak: {peak[dtype]:.0f} GFLOP/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size N (rows)")
        ax.set_ylabel(r"GFLOP/s (matmuls only: $6N\,\Sigma_l\,d_{l-1}d_l$ per call)")
        per_row = rs[0]["flops"] / rs[0]["n"] if rs else 1.0
        sec = ax.secondary_yaxis("right", functions=(lambda g, k=per_row: g * 1e9 / k,
                                                     lambda r, k=per_row: r * k / 1e9))
        sec.set_ylabel("rows/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{title} {dtype}".strip())
        ax.legend(fontsize="small", loc="lower right")
    fig.savefig(path, dpi=110)
    return path


# -- header and tables ------------------------------------------------------------------------------

def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "set by the environment (install threadpoolctl to see the count)"
    libs = [f"{i.get('internal_api')} {i.get('num_threads')} threads" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    return (", ".join(libs) or "none found") + ", set by the environment"


def header_info(threads: Optional[int] = None, peers: Optional[Dict[str, dict]] = None,
                peak: Optional[Dict[str, float]] = None) -> dict:
    """Build, versions, CPU, threads and load; ``peers`` from :func:`setup_peers`, ``peak`` from
    :func:`measure_peak` (with these threads)."""
    from ._build import build_info
    build = dict(build_info())
    try:
        load = list(os.getloadavg())
    except (AttributeError, OSError):
        load = None
    return {
        "build_info": build,
        "numpy": np.__version__,
        "numpy_blas_threads": _blas_info(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OPENBLAS_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                    "OPENBLAS_NUM_THREADS") if k in os.environ},
        "threads": threads,
        "native_threads": threads if threads is not None else build.get("max_threads"),
        "fma_peak": dict(peak or {}),
        "peers": peers or {},
        "loadavg": load,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _peer_line(name: str, st: dict) -> str:
    if "error" in st:
        return f"- {name}: not importable ({st['error']})"
    if name == "torch":
        return f"- torch {st.get('version')}: eager, torch.set_num_threads -> {st.get('threads')} threads"
    env = st.get("env") or {}
    thr = (f"threads={st.get('threads')} via " + ", ".join(f"{k}={v!r}" for k, v in env.items())
           if env else "threads: jax's default (all CPUs)")
    line = f"- jax {st.get('version')}: jit, x64={'on' if st.get('x64') else 'off'}, {thr}"
    for k in ("note", "threads_note"):
        if k in st:
            line += f"; NOTE: {st[k]}"
    return line


def format_header(info: dict) -> List[str]:
    build = ", ".join(f"{k}={v}" for k, v in info["build_info"].items())
    t = info["threads"]
    threads = (f"n_threads={t}" if t is not None else
               f"n_threads=None (OpenMP default: {info['native_threads']})")
    blas_env = info.get("OPENBLAS_env") or {}
    lines = [
        "mlpgrad bench: loss + every dW, db + dL/dX (input_grad=True), reduction='sum'",
        f"- build: {build}",
        f"- numpy {info['numpy']}; BLAS threads: {info['numpy_blas_threads']}"
        + ("; " + " ".join(f"{k}={v}" for k, v in blas_env.items()) if blas_env else ""),
        f"- CPU: {info.get('cpu', 'unknown')}; python {info['python']} on {info['platform']}, {info['cpu_count']} CPUs",
        f"- OMP_NUM_THREADS={info['OMP_NUM_THREADS'] if info['OMP_NUM_THREADS'] is not None else '(unset)'}",
        f"- native threads: {threads}",
    ]
    if info.get("fma_peak"):
        rates = ", ".join(f"{d} {g:.1f}" for d, g in info["fma_peak"].items())
        lines.append(f"- FMA peak (register-only FMA loop, {info['build_info'].get('simd')}, "
                     f"{_threads_text(info['native_threads'])}; the '% of peak' denominator): {rates} GFLOP/s")
    for name, st in (info.get("peers") or {}).items():
        lines.append(_peer_line(name, st))
    load = info["loadavg"]
    if load is None:
        lines.append("- load average: unavailable")
    else:
        lines.append("- load average: " + " ".join(f"{x:.2f}" for x in load))
        if load[0] > LOAD_WARNING:
            lines.append(f"WARNING: 1-minute load average {load[0]:.2f} > {LOAD_WARNING}: "
                         "the machine is busy, timings will be noisy")
    lines.append("- timing: median per call over interleaved rounds, each implementation settling "
                 "(called untimed) before its timed block; GFLOP/s from 6*N*sum(d_{l-1}*d_l) (matmuls only)")
    return lines


def _threads_text(t) -> str:
    """'1 thread', '2 threads', or the text as it is ('set by the environment')."""
    return (f"{t} thread" + ("s" if t != 1 else "")) if isinstance(t, int) else f"threads {t}"


def format_gemm(gemm: Optional[dict]) -> List[str]:
    """Header lines: the best square GEMM per dtype (the '% of best GEMM' denominator) and every backend's rates."""
    if not gemm:
        return []
    first = gemm["results"][0]
    size = f"{first['m']}x{first['k']}x{first['n']}"
    best = ", ".join(f"{d} {g:.1f} GFLOP/s ({gemm['best'][d]})" for d, g in gemm["peak"].items())
    threads = "; ".join(f"{b}: {_threads_text(t)}" for b, t in gemm["threads"].items())
    lines = [f"- best GEMM ({first['label']} {size}, the best of {gemm['backend']}; the '% of best GEMM' "
             f"denominator): {best}", f"- GEMM GFLOP/s ({threads}):"]
    for dtype in sorted({r["dtype"] for r in gemm["results"]}):
        for backend in gemm["backends"]:
            parts = [f"{r['m']}x{r['k']}{'(T)' if r['transposed'] else ''}x{r['n']} {r['gflops']:.1f}"
                     for r in gemm["results"] if r["dtype"] == dtype and r["backend"] == backend]
            lines.append(f"  - {dtype} {backend}: " + ", ".join(parts))
    return lines


def _fmt_ms(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _fmt_gflops(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x:.1f}" if x >= 10 else f"{x:.2f}")


def _fmt_ratio(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x:.1f}x" if x >= 10 else f"{x:.2f}x")


def _markdown(head: List[str], body: List[List[str]], right: List[bool]) -> str:
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if rj else c.ljust(w)
                                 for c, w, rj in zip(cells, widths, right)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if rj else ("-" * (w + 2))
                         for w, rj in zip(widths, right)) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def fmt_pct(p: Optional[float]) -> str:
    """A percentage for the tables: '-' when unknown, two digits below 10%."""
    return "-" if p is None else f"{p:.0f}%" if p >= 10 else f"{p:.2g}%"


def format_table(rows: List[dict]) -> str:
    """config, layers, N, dtype, <impl> ms..., native's speed-up vs each other, native GFLOP/s, % of peak, % of
    best GEMM."""
    impls = [name for name in IMPLEMENTATIONS if any(name in r["ms"] for r in rows)]
    others = [name for name in impls if name != "native"]
    label = {name: LABELS.get(name, name) for name in impls}
    head = (["config", "layers", "N", "dtype"] + [f"{label[n]} ms" for n in impls]
            + [f"vs {label[n]}" for n in others] + ["native GFLOP/s", "% of peak", "% of best GEMM"])
    right = [False, False, True, False] + [True] * (len(head) - 4)
    body = []
    for r in rows:
        vs = r.get("speedup_vs", {})
        body.append([r["config"], r["layers"], str(r["n"]), r["dtype"]]
                    + [_fmt_ms(r["ms"].get(n)) for n in impls]
                    + [_fmt_ratio(vs.get(n)) for n in others]
                    + [_fmt_gflops(r["gflops"].get("native")), fmt_pct(r.get("native_pct_peak")),
                       fmt_pct(r.get("native_pct_gemm"))])
    return _markdown(head, body, right)


def table_legend(rows: List[dict]) -> str:
    impls = [name for name in IMPLEMENTATIONS if any(name in r["ms"] for r in rows)]
    others = [LABELS.get(n, n) for n in impls if n != "native"]
    text = "ms: median per call."
    if others:
        text += (" vs X: native's speed-up, X ms / native ms (> 1: native faster)"
                 f" for X in {', '.join(others)}.")
    text += (" % of peak: native GFLOP/s / the FMA peak of that dtype (header; '-': not measured)."
             " % of best GEMM: native GFLOP/s / the best square GEMM's GFLOP/s of that dtype (header; '-': --gemm"
             " none).")
    return text


def format_scaling(rows: List[dict]) -> str:
    if not rows:
        return ""
    ts = rows[0]["threads"]
    head = (["config", "layers", "N", "dtype"] + [f"{t} thread{'s' if t > 1 else ''} ms" for t in ts]
            + [f"{ts[0]}->{ts[-1]} speed-up", "target", "meets"])
    right = [False, False, True, False] + [True] * (len(head) - 4)
    body = [[r["config"], r["layers"], str(r["n"]), r["dtype"]]
            + [_fmt_ms(r["ms"][f"native[{t}]"]) for t in ts]
            + [_fmt_ratio(r["speedup"]), f">= {r['target']:.2f}x", "yes" if r["meets_target"] else "NO"]
            for r in rows]
    return _markdown(head, body, right)


def format_linear(rows: List[dict]) -> str:
    if not rows:
        return ""
    head = ["N", "native ms", "ns/row", "per row vs largest N", "GFLOP/s"]
    body = [[str(r["n"]), _fmt_ms(r["ms"]["native"]), f"{r['ns_per_row']:.2f}",
             f"{r['per_row_vs_largest']:.2f}", _fmt_gflops(r["gflops"])] for r in rows]
    table = _markdown(head, body, [True] * len(head))
    tail = [r["ns_per_row"] for r in rows if r["n"] >= 16384]
    if len(tail) >= 2:
        table += (f"\n\nns/row for N >= 16384: {min(tail):.2f} .. {max(tail):.2f} "
                  f"(max/min {max(tail) / min(tail):.2f}; 1.00 = perfectly linear in N)")
    return table


# -- command line -----------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _layer_sizes(text: str) -> tuple:
    try:
        sizes = tuple(int(s) for s in text.split("-"))
    except ValueError:
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected widths like 5-3-5 (at least two, each >= 1), got {text!r}")
    return sizes


def _peer_list(text: str):
    text = text.strip().lower()
    if text in ("none", ""):
        return []
    if text == "auto":
        return "auto"
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in PEERS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(bad)}; choose from {','.join(PEERS)} or none")
    return names


def _config_name(text: str) -> str:
    try:
        return get_config(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_SUITE_HELP = "\n".join(f"  {c.name:<18} {c.layers:<20} {c.head:<8} N={c.n}" for c in SUITE.values())

DESCRIPTION = """\
Time mlpgrad.loss_and_grad (native) against mlpgrad.reference.loss_and_grad and, when importable,
PyTorch eager and JAX jit."""

EPILOG = f"""\
built-in suite (default: all):
{_SUITE_HELP}

Each call computes the loss, every dW and db and dL/dX (input_grad=True), reduction "sum".
Columns: the NumPy reference, native, and the peers torch (eager; forward + torch.autograd.grad)
and jax (jit of value_and_grad) when importable.  Every implementation is called once and
validated against the reference; then in interleaved rounds each implementation first settles
(is called untimed for --settle seconds, so that the other libraries' idle threads, e.g.
OpenBLAS's, libgomp's, torch's and XLA's, which spin after each call, stop competing for the
cores) and then makes a block of calls, each timed alone.  The table shows the median ms per call,
native's speed-up against each other column (their ms / native ms), native's GFLOP/s counted from
the matrix products only, 6*N*sum(d_(l-1)*d_l) per call, and that as a percentage of the machine's
FMA peak (a register-only FMA loop, same dtype, same threads: the header's "FMA peak") and of the best
square matmul's GFLOP/s among NumPy's matmul and torch.mm (when importable; --gemm), measured at the
start of the run (the header's "best GEMM").

Threads: --threads T sets native's n_threads, torch.set_num_threads(T), and for jax (before it
is imported) XLA_FLAGS="--xla_cpu_multi_thread_eigen=... intra_op_parallelism_threads=T" and
PJRT_NPROC=T (jax 0.10's CPU client only honours PJRT_NPROC).  NumPy's BLAS threads (the reference)
are whatever the environment sets (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS).

NumPy's OpenBLAS can be slowed on some machines by OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the
environment; the bench never changes them.  To compare against NumPy's matmul (--gemm numpy) or
a fair reference, unset both for the benchmark command only:
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m mlpgrad bench --gemm numpy ...

Modes (instead of the table above; they combine): --plot FILE.png (throughput against N for
--plot-config, log-log), --scaling (native, 1 thread vs --threads T, default 2, on the suite's
configs with >= 1 GFLOP per call or --config; issue 3 asks for >= 1.9x with 2), --linear [CONFIG]
(native's time per row from N=1k to 1M rows; should be flat), --per-sample (issue 12's per-sample functions
against loss_and_grad, the same-run GEMM and np.copyto, and torch.func vmap, Opacus and BackPACK when importable),
--curvature (issue 13's hvp, ggn_vp and ggn_diag against loss_and_grad and the same-run GEMM, and torch.func hvp,
curvlinops and BackPACK DiagGGNExact when importable), --training (issue 14's per-step time of a native adam and sgd
epoch against scikit-learn's MLPClassifier and a torch eager loop when importable, as % of the GEMM-bound limit),
--sparse (issue 15's text-like sparse X: loss_and_grad per call on the CSR X, on dense rows and with torch.sparse, and
mlpgrad's MLPClassifier fit against scikit-learn's on it).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m mlpgrad bench``."""
    p.add_argument("--threads", type=_positive_int, metavar="T",
                   help="threads for native (n_threads), torch (set_num_threads) and jax (XLA_FLAGS, "
                        "PJRT_NPROC) (default: each library's default)")
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="float32",
                   help="computation dtype (default: float32)")
    p.add_argument("--peers", type=_peer_list, default="auto", metavar="torch,jax|none",
                   help="peer columns (default: those importable); a peer that fails to import is "
                        "left out with a note")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="do not run the NumPy reference (peers are then validated against native)")
    p.add_argument("--gemm", choices=["auto", "torch", "numpy", "none"], default="auto",
                   help="matmuls timed for '%% of best GEMM', the best of them counting (default auto: numpy and, "
                        "when importable, torch.mm)")
    p.add_argument("--repeat", type=_positive_int, metavar="R",
                   help="timed calls per implementation and config (default: ~1.2 s of timed calls "
                        "per config in all)")
    p.add_argument("--settle", type=_non_negative_float, default=SETTLE, metavar="SECONDS",
                   help=f"seconds of untimed calls before each timed block (default: {SETTLE}; "
                        "at least one call either way)")
    p.add_argument("--config", nargs="+", metavar="NAME",
                   help="configs to run (default: the whole suite, unless --layers is given; "
                        "with --scaling: its configs)")
    p.add_argument("--layers", type=_layer_sizes, metavar="D0-D1-...",
                   help="also run a custom network, e.g. 5-3-5 (with --n and --head)")
    p.add_argument("--n", type=_positive_int, default=1024, metavar="N",
                   help="batch size of the --layers network (default: 1024)")
    p.add_argument("--head", choices=["sigmoid", "softmax"], default="softmax",
                   help="head of the --layers network (default: softmax)")
    p.add_argument("--quick", action="store_true",
                   help=f"divide every N by {QUICK_FACTOR} and time less (a smoke test)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="plot GFLOP/s and rows/s against N (2^6 .. up to 2^20) for --plot-config, "
                        "log-log (needs matplotlib: pip install mlpgrad[bench])")
    p.add_argument("--plot-config", type=_config_name, default="mnist", metavar="NAME",
                   help="the network of --plot (default: mnist)")
    p.add_argument("--plot-max-n", type=_positive_int, metavar="N",
                   help="largest N of --plot (default: ~200 GFLOP per call, at most 2^20; mnist 2^16)")
    p.add_argument("--scaling", action="store_true",
                   help="native with 1 vs T threads (--threads, default 2) on the large configs")
    p.add_argument("--linear", nargs="?", const="seed1_small", type=_config_name, metavar="CONFIG",
                   help="native's time per row for N = 2^10 .. 2^20 on CONFIG (default seed1_small)")
    p.add_argument("--objective", action="store_true",
                   help=f"per-call time at N = {OBJECTIVE_N}: the functional loss_and_grad against "
                        "Objective.loss_and_grad (data bound once), on --config (default seed1_small mnist)")
    p.add_argument("--per-sample", action="store_true",
                   help="the per-sample functions (norms, clipped_grad, per_sample_grads, grad_dot, grad_gram, "
                        "sum_squared_grads) against loss_and_grad, the same-run GEMM and np.copyto, and the peers "
                        "torch.func vmap, Opacus, BackPACK when importable, on --config (default mnist seed1_small "
                        "mid_sigmoid wide at their per-sample N; see mlpgrad/_bench_per_sample.py)")
    p.add_argument("--curvature", action="store_true",
                   help="the curvature functions (hvp, ggn_vp with 1 and 16 vectors, ggn_diag) against loss_and_grad "
                        "and the same-run GEMM, and the peers torch.func hvp, curvlinops GGN, BackPACK DiagGGNExact "
                        "when importable, on --config (default mnist N=1024, seed1_small and mid_sigmoid N=8192; see "
                        "mlpgrad/_bench_curvature.py)")
    p.add_argument("--training", action="store_true",
                   help="per-step time of a native train_epoch (adam and sgd) against scikit-learn's MLPClassifier "
                        "and a torch eager loop when importable, as %% of the GEMM-bound limit, on --config (default "
                        "digits, tabular, mnist and binary_100 at their batch sizes; see mlpgrad/_bench_training.py)")
    p.add_argument("--sparse", action="store_true",
                   help="a text-like sparse X (50,000 x 100,000 CSR, 0.1%% nonzero, 100 hidden units, 20 classes): "
                        "loss_and_grad per call on the CSR X, on densified rows and with torch.sparse when "
                        "importable, and MLPClassifier's fit against scikit-learn's (see mlpgrad/_bench_sparse.py)")
    p.add_argument("--json", metavar="FILE", help="also write the header and rows as JSON to FILE")


def _modes(args) -> bool:
    """Whether a mode replaces the main table."""
    return bool(args.plot or args.scaling or args.linear or args.objective or args.per_sample or args.curvature
                or args.training or args.sparse)


def _selected_configs(args) -> List[Config]:
    """The configs of --config (or the suite, when no other mode or --layers is asked for), and --layers'."""
    parser = args.parser
    modes = _modes(args)
    names = list(args.config) if args.config else ([] if args.layers or modes else list(SUITE))
    configs = []
    for name in names:
        try:
            configs.append(get_config(name))
        except ValueError as exc:
            parser.error(str(exc))
    if args.layers:
        configs.append(Config("custom", args.layers, args.n, args.head))
    elif args.n != parser.get_default("n") or args.head != parser.get_default("head"):
        parser.error("--n and --head describe the --layers network; pass --layers too")
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before the long run, not after)
        except ImportError:
            parser.error("--plot needs matplotlib (pip install 'mlpgrad[bench]')")
    return configs


def _log(msg):
    print(msg, flush=True)


def _progress(msg):
    print(msg, file=sys.stderr, flush=True)


def _run_tables(args, configs, table_configs, peers, gemm_peak, fma_peak, out) -> None:
    """The main table, --scaling, --linear, --objective, --per-sample, --curvature, --training and --sparse, each
    printed as it completes. ``gemm_peak``, ``fma_peak``: {dtype: GFLOP/s} of the best GEMM and of the FMA loop."""
    if table_configs:
        rows = run(table_configs, args.dtype, args.threads, args.repeat, quick=args.quick,
                   settle=args.settle, log=_log, progress=_progress, peers=peers,
                   reference=args.reference, gemm_peak=gemm_peak, fma_peak=fma_peak)
        print(format_table(rows))
        print("\n" + table_legend(rows), flush=True)
        out["rows"] = rows
    if args.scaling:
        t = args.threads if args.threads is not None else 2
        if t == 1:
            args.parser.error("--scaling compares 1 thread with --threads T: T must be >= 2")
        srows = scaling(configs or None, args.dtype, (1, t), args.repeat, quick=args.quick,
                        settle=args.settle, log=_log, progress=_progress)
        print(f"\nthread scaling (native, 1 vs {t} threads; issue 3 target >= {SCALING_TARGET * t:.2f}x):\n")
        print(format_scaling(srows), flush=True)
        out["scaling"] = srows
    if args.linear:
        ns = LINEAR_SIZES if not args.quick else tuple(2 ** k for k in range(10, 17))
        for dtype in _dtype_list(args.dtype):
            lrows = linear(args.linear, dtype, args.threads, ns, args.repeat, settle=args.settle,
                           progress=_progress)
            cfg = get_config(args.linear)
            print(f"\ntime against N (native, {cfg.name} {cfg.layers} {dtype}):\n")
            print(format_linear(lrows), flush=True)
            out.setdefault("linear", []).extend(lrows)
    if args.objective:
        names = [c.name for c in configs if c.name != "custom"] or list(OBJECTIVE_CONFIGS)
        orows = objective(names, args.dtype, args.threads, repeat=args.repeat, settle=args.settle,
                          progress=_progress)
        print(f"\nper call at N = {OBJECTIVE_N} (loss and every gradient; functional vs Objective, interleaved):\n")
        print(format_objective(orows), flush=True)
        out["objective"] = orows
    if args.per_sample:
        from . import _bench_per_sample
        out["per_sample"] = _bench_per_sample.run_command_section(args, configs, progress=_progress, peak=fma_peak)
    if args.curvature:
        from . import _bench_curvature
        out["curvature"] = _bench_curvature.run_command_section(args, configs, progress=_progress, peak=fma_peak)
    if args.training:
        from . import _bench_training
        out["training"] = _bench_training.run_command_section(args, configs, progress=_progress, peak=fma_peak)
    if args.sparse:
        from . import _bench_sparse
        out["sparse"] = _bench_sparse.run_command_section(args, configs, progress=_progress, peak=fma_peak)


def _run_plot(args, peers, gemm, fma_peak, out) -> None:
    ns = plot_sizes(args.plot_config, args.plot_max_n)
    prows = sweep(args.plot_config, args.dtype, args.threads, ns, args.repeat, settle=args.settle,
                  log=_log, progress=_progress, peers=peers, reference=args.reference,
                  gemm_peak=gemm["peak"] if gemm else None, fma_peak=fma_peak)
    cfg = get_config(args.plot_config)
    thr = args.threads if args.threads is not None else "default"
    print(f"\nthroughput against N ({cfg.name} {cfg.layers}, threads={thr}):\n")
    print(format_table(prows), flush=True)
    plot(prows, args.plot, gemm, title=f"mlpgrad bench: {cfg.name} {cfg.layers}, threads={thr},", peak=fma_peak)
    print(f"\nwrote {args.plot}")
    out["plot"] = {"file": args.plot, "config": cfg.name, "rows": prows}


def _finish(args, info, configs, peers, out) -> None:
    """The load average at the end, and --json."""
    try:
        info["loadavg_end"] = list(os.getloadavg())
        print("\n- load average at the end: " + " ".join(f"{x:.2f}" for x in info["loadavg_end"])
              + " (includes this benchmark's own threads)")
    except (AttributeError, OSError):
        info["loadavg_end"] = None
    if args.json:
        info["command"] = {"argv": sys.argv[1:], "dtype": args.dtype, "repeat": args.repeat,
                           "quick": args.quick, "settle": args.settle, "peers": peers,
                           "reference": args.reference, "gemm": args.gemm,
                           "configs": [c.name for c in configs]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")


def run_command(args: argparse.Namespace) -> int:
    """``python -m mlpgrad bench``: ``args`` from :func:`add_arguments`, and ``args.parser`` (for its errors)."""
    configs = _selected_configs(args)
    modes = _modes(args)
    own_configs = (args.scaling or args.objective or args.per_sample or args.curvature
                   or args.training)  # modes using --config
    table_configs = configs if (not modes or (not own_configs and configs)) else []
    need_peers = bool(table_configs or args.plot)
    requested = args.peers if need_peers else []
    peers = available_peers() if requested == "auto" else list(requested)

    fma_peak = measure_peak(args.dtype, args.threads)
    info = header_info(args.threads, setup_peers(peers, args.threads, args.dtype), fma_peak)
    print("\n".join(format_header(info)), flush=True)
    for name in peers:
        if "error" in info["peers"].get(name, {}) and requested != "auto":
            _log(f"NOTE: peer {name} was asked for but is not importable; its column is left out")
    peers = [name for name in peers if "error" not in info["peers"].get(name, {})]

    out: dict = {"header": info}
    gemm = None
    if need_peers and args.gemm != "none":
        gemm = measure_gemm(args.dtype, args.threads, args.gemm, quick=args.quick, settle=args.settle,
                            progress=_progress)
        print("\n".join(format_gemm(gemm)), flush=True)
        out["gemm"] = gemm
    print(flush=True)
    _run_tables(args, configs, table_configs, peers, gemm["peak"] if gemm else None, fma_peak, out)
    if args.plot:
        _run_plot(args, peers, gemm, fma_peak, out)
    _finish(args, info, configs, peers, out)
    return 0
