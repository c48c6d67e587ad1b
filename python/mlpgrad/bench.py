"""Benchmark: the native core against the NumPy reference (``python -m mlpgrad bench``).

Each call computes the loss, every dW_l and db_l, and dL/dX (``input_grad=True``) with
``reduction="sum"``: integer labels for the softmax head, 0/1 targets for the sigmoid head.
Data come from a fixed seed; weights ~ N(0, 1/d_in), biases ~ N(0, 0.1^2), X ~ N(0, 1).

Method (the machine may be shared and noisy):

1. build the inputs once per (config, dtype); each implementation converts them once;
2. warm up and validate: call every implementation once and compare its results with the
   reference (max-norm relative error <= 1e-3 for float32, 1e-10 for float64; a WARNING line
   is printed otherwise);
3. time interleaved rounds (A B A B ...): in each round every implementation in turn first
   *settles* (is called, untimed, for >= ``settle`` seconds, 0.15 s by default), then makes a
   block of calls, each timed alone with ``time.perf_counter``; report the median per
   implementation over all its timed calls (R calls in all; ~1.2 s of timed calls, ~2.5 s in all
   per config by default).

Why the settle phase: NumPy's OpenBLAS keeps its worker threads spinning for ~0.1 s after each
BLAS call (libgomp's threads spin briefly after a parallel region too); on a 2-core machine those
spinners steal cores from the next library's threads.  Measured here, a native call made right
after a reference call took ~20 ms instead of ~1 ms (seed1_small, N=4096) until the spinning
stopped.  Strictly alternating single calls measures that contention, not the implementations;
calling the same implementation continuously for a while first measures each in the steady state
of a loop that calls only it, while rounds still spread the machine's noise over all of them.

The speed-up is median(reference) / median(native).  GFLOP/s count the matrix products
only: forward 2 N sum(d_{l-1} d_l), dW the same, dH the same (layer 1 included because dL/dX
is requested), so 6 N sum(d_{l-1} d_l) per call; elementwise work is not counted.

Implementations are a dict of named factories (``IMPLEMENTATIONS``) so that a peer (torch,
jax, ...) is a few lines: a factory gets a :class:`Problem` and returns a zero-argument
callable computing ``(loss, Gradients-like)`` (anything ``np.asarray`` accepts), or None if
the peer is unavailable.  :func:`run` is the entry point for tests; :func:`main` is the CLI.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["Config", "SUITE", "IMPLEMENTATIONS", "Problem", "make_problem", "flop_count", "run",
           "header_info", "format_header", "format_table", "main"]

SEED = 0
QUICK_FACTOR = 16  # --quick divides every N by this
TOLERANCE = {"float32": 1e-3, "float64": 1e-10}
LOAD_WARNING = 0.5


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


# name -> factory(Problem) -> callable() -> (loss, grads), or None if unavailable.
# The first entry is the baseline every other implementation is validated against.
IMPLEMENTATIONS: Dict[str, Callable] = {
    "reference": _reference,
    "native": _native,
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
    errs = {"loss": _rel_err(np.float64(loss), np.float64(ref_loss))}
    if len(g.weights) != len(rg.weights) or len(g.biases) != len(rg.biases):
        errs["layers"] = math.inf
    for l, (a, b) in enumerate(zip(g.weights, rg.weights)):
        errs[f"dW[{l}]"] = _rel_err(a, b)
    for l, (a, b) in enumerate(zip(g.biases, rg.biases)):
        errs[f"db[{l}]"] = _rel_err(a, b)
    errs["dX"] = _rel_err(g.input, rg.input)
    return errs


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


def _bench_one(config: Config, dtype: str, threads, repeat, quick, settle, log) -> dict:
    problem = make_problem(config, dtype, threads)
    calls = {}
    for name, factory in IMPLEMENTATIONS.items():
        fn = factory(problem)
        if fn is not None:
            calls[name] = fn
    if BASELINE not in calls:
        raise RuntimeError(f"the baseline implementation {BASELINE!r} is unavailable")

    # warm-up: validate against the baseline
    results = {name: fn() for name, fn in calls.items()}
    tol = TOLERANCE[dtype]
    max_err, ok = {}, True
    for name, res in results.items():
        if name == BASELINE:
            continue
        errs = _compare(res, results[BASELINE])
        worst = max(errs, key=errs.get)
        max_err[name] = errs[worst]
        if not errs[worst] <= tol:
            ok = False
            log(f"WARNING: {name} disagrees with {BASELINE} on {config.name} {dtype}: "
                f"relative error {errs[worst]:.2e} in {worst} > {tol:.0e}")
    del results

    times = _time_rounds(calls, repeat, quick, settle)
    flops = flop_count(config.sizes, config.n, input_grad=True)
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    native_ms = ms.get("native")
    return {
        "config": config.name,
        "layers": config.layers,
        "sizes": list(config.sizes),
        "head": config.head,
        "n": config.n,
        "dtype": dtype,
        "threads": threads,
        "calls": {name: len(t) for name, t in times.items()},
        "settle_s": settle,
        "flops": flops,
        "ms": ms,
        "ms_quartiles": {name: [1e3 * float(q) for q in np.percentile(t, [25, 75])] for name, t in times.items()},
        "speedup": ms[BASELINE] / native_ms if native_ms else None,
        "gflops": {name: flops / (v * 1e-3) / 1e9 for name, v in ms.items()},
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


def run(configs: Sequence = tuple(SUITE), dtypes=("float32",), threads: Optional[int] = None,
        repeat: Optional[int] = None, *, quick: bool = False, settle: float = SETTLE,
        log: Callable = print, progress: Optional[Callable] = None) -> List[dict]:
    """Benchmark ``configs`` (names or :class:`Config`) in each of ``dtypes`` ("float32", "float64",
    "both"); return one row dict per (config, dtype).

    ``threads``: n_threads for the native calls (None: OpenMP's default).  ``repeat``: timed calls
    per implementation (None: ~1.2 s of timed calls per config).  ``quick``: divide every N by 16 and
    time less.  ``settle``: seconds of untimed calls before each timed block (0 for tests).  ``log``
    prints validation warnings; ``progress`` (if given) gets a line per finished row.
    """
    rows = []
    for name in configs:
        config = get_config(name)
        if quick:
            config = config.quick()
        for dtype in _dtype_list(dtypes):
            t0 = time.perf_counter()
            row = _bench_one(config, dtype, threads, repeat, quick, settle, log)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if progress is not None:
                calls = ", ".join(f"{k} x{v}" for k, v in row["calls"].items())
                progress(f"{row['config']} {dtype}: {calls} timed calls in {row['seconds']:.1f} s")
    return rows


# -- header and table -------------------------------------------------------------------------------

def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "set by the environment (install threadpoolctl to see the count)"
    libs = [f"{i.get('internal_api')} {i.get('num_threads')} threads" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    return (", ".join(libs) or "none found") + ", set by the environment"


def header_info(threads: Optional[int] = None) -> dict:
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
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "threads": threads,
        "native_threads": threads if threads is not None else build.get("max_threads"),
        "loadavg": load,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def format_header(info: dict) -> List[str]:
    build = ", ".join(f"{k}={v}" for k, v in info["build_info"].items())
    t = info["threads"]
    threads = (f"n_threads={t}" if t is not None else
               f"n_threads=None (OpenMP default: {info['native_threads']})")
    lines = [
        "mlpgrad bench: loss + every dW, db + dL/dX (input_grad=True), reduction='sum'",
        f"- build: {build}",
        f"- numpy {info['numpy']}; BLAS threads: {info['numpy_blas_threads']}",
        f"- python {info['python']} on {info['platform']}, {info['cpu_count']} CPUs",
        f"- OMP_NUM_THREADS={info['OMP_NUM_THREADS'] if info['OMP_NUM_THREADS'] is not None else '(unset)'}",
        f"- native threads: {threads}",
    ]
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


def format_table(rows: List[dict]) -> str:
    """The rows as a Markdown table: config, layers, N, dtype, <impl> ms..., speed-up, <impl> GFLOP/s..."""
    impls = [name for name in IMPLEMENTATIONS if any(name in r["ms"] for r in rows)]
    label = [LABELS.get(name, name) for name in impls]
    head = (["config", "layers", "N", "dtype"] + [f"{l} ms" for l in label] + ["speed-up"]
            + [f"{l} GFLOP/s" for l in label])
    right = [False, False, True, False] + [True] * (len(head) - 4)
    body = []
    for r in rows:
        body.append([r["config"], r["layers"], str(r["n"]), r["dtype"]]
                    + [_fmt_ms(r["ms"].get(name)) for name in impls]
                    + ["-" if r["speedup"] is None else f"{r['speedup']:.2f}x"]
                    + [_fmt_gflops(r["gflops"].get(name)) for name in impls])
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if rj else c.ljust(w)
                                 for c, w, rj in zip(cells, widths, right)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if rj else ("-" * (w + 2))
                         for w, rj in zip(widths, right)) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


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


_SUITE_HELP = "\n".join(f"  {c.name:<18} {c.layers:<20} {c.head:<8} N={c.n}" for c in SUITE.values())

_BENCH_EPILOG = f"""\
built-in suite (default: all):
{_SUITE_HELP}

Each call computes the loss, every dW and db and dL/dX (input_grad=True), reduction "sum".
Timing: each implementation is called once and validated against the reference; then in
interleaved rounds each implementation first settles (is called untimed for --settle seconds, so
that the other library's idle threads, e.g. OpenBLAS's, which spin ~0.1 s after each call, stop
competing for the cores) and then makes a block of calls, each timed alone.  The table shows the
median ms per call, the speed-up median(ref)/median(native), and GFLOP/s counted from the matrix
products only, 6*N*sum(d_(l-1)*d_l) per call (elementwise work is not counted).
--threads sets the native core's threads only; NumPy's BLAS threads are whatever the environment
sets (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS).
"""


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="time the native core against the NumPy reference",
        description="Time mlpgrad.loss_and_grad (native) against mlpgrad.reference.loss_and_grad.",
        epilog=_BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=_positive_int, metavar="T",
                   help="n_threads for the native calls (default: OpenMP's default)")
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="float32",
                   help="computation dtype (default: float32)")
    p.add_argument("--repeat", type=_positive_int, metavar="R",
                   help="timed calls per implementation and config (default: ~1.2 s of timed calls "
                        "per config, ~2.5 s in all)")
    p.add_argument("--settle", type=_non_negative_float, default=SETTLE, metavar="SECONDS",
                   help=f"seconds of untimed calls before each timed block (default: {SETTLE}; "
                        "at least one call either way)")
    p.add_argument("--config", nargs="+", metavar="NAME",
                   help="configs to run (default: the whole suite, unless --layers is given)")
    p.add_argument("--layers", type=_layer_sizes, metavar="D0-D1-...",
                   help="also run a custom network, e.g. 5-3-5 (with --n and --head)")
    p.add_argument("--n", type=_positive_int, default=1024, metavar="N",
                   help="batch size of the --layers network (default: 1024)")
    p.add_argument("--head", choices=["sigmoid", "softmax"], default="softmax",
                   help="head of the --layers network (default: softmax)")
    p.add_argument("--quick", action="store_true",
                   help=f"divide every N by {QUICK_FACTOR} and time less (a smoke test)")
    p.add_argument("--json", metavar="FILE", help="also write the header and rows as JSON to FILE")
    p.set_defaults(func=_cmd_bench, parser=p)
    return p


def _cmd_bench(args) -> int:
    parser = args.parser
    names = list(args.config) if args.config else ([] if args.layers else list(SUITE))
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

    info = header_info(args.threads)
    print("\n".join(format_header(info)))
    print(flush=True)

    def progress(msg):
        print(msg, file=sys.stderr, flush=True)

    rows = run(configs, args.dtype, args.threads, args.repeat, quick=args.quick, settle=args.settle,
               log=lambda msg: print(msg, flush=True), progress=progress)
    print()
    print(format_table(rows))
    if args.json:
        info["command"] = {"dtype": args.dtype, "repeat": args.repeat, "quick": args.quick,
                           "settle": args.settle, "configs": [c.name for c in configs]}
        with open(args.json, "w") as f:
            json.dump({"header": info, "rows": rows}, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlpgrad",
        description="mlpgrad command line: exact losses and gradients of sigmoid MLPs.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_bench_parser(sub)  # further commands (e.g. demo) register here
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mlpgrad COMMAND ...``; with no command, print the usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    return args.func(args)
