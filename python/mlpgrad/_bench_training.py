"""The training section of the bench (``python -m mlpgrad bench --training``, issue 14).

For each shape (a network, the rows N of its data and a batch size B) and dtype, in one process, bench's interleaved
rounds (every implementation settles, then makes a block of timed calls; medians), float32 by default. One call is
one epoch over the N rows in ceil(N / B) steps (the last batch shorter); the time per step is the epoch's over its
steps. Data and initial weights come from bench's fixed seed (:func:`mlpgrad.bench.make_problem`), the rows in one
fixed shuffled order.

- ``adam`` / ``sgd``: mlpgrad's native epoch (``_native.train_epoch``, mlpgrad/train.hpp), the one call per epoch that
  ``MLPClassifier._fit_stochastic`` makes, set up as it does: the batch gathered in the given order, its loss and
  gradients, the optimizer step; scikit-learn's defaults: alpha = 1e-4, lr = 1e-3, adam's betas (0.9, 0.999) and
  eps 1e-8, sgd's momentum 0.9 (Nesterov's);
- ``sklearn``: scikit-learn's ``MLPClassifier`` (activation "logistic", solver "adam", the same batch size, alpha and
  lr), one ``partial_fit`` over the rows per call (it shuffles them), after a first untimed one that sets it up;
- ``torch`` (when importable, never required): an eager loop on the same net (``nn.Sequential`` of Linear and
  Sigmoid, ``CrossEntropyLoss`` / ``BCEWithLogitsLoss`` with reduction "mean"), ``torch.optim.Adam`` (same lr, betas
  and eps, no weight decay), each batch taken with ``index_select`` in a fixed shuffled order, then
  ``zero_grad(set_to_none=True)``, forward, backward, step.

The flops a step needs, counted from the matrix products only: forward 2B sum_l d_(l-1) d_l, dW the same, the deltas
2B sum_(l>=2) d_(l-1) d_l (no dL/dX for the first layer): ``bench.flop_count(sizes, B, input_grad=False)``. The
GEMM-bound limit of a step is that count over the best square GEMM's rate of the run (NumPy's matmul and torch.mm,
:func:`mlpgrad.bench.measure_gemm`); "% of GEMM-bound" is that limit over the measured step time, "% of peak" the
step's GFLOP/s over the FMA peak (:func:`mlpgrad.bench.measure_peak`). Issue 14's targets: native training steps at
>= 75% of the GEMM-bound limit on tabular (60-128-64-4, B = 256) and digits (64-100-10, B = 200), float32 and
float64.

Tests run :func:`run` with ``quick=True`` (tiny shapes, torch not needed). ``bench.py`` owns the ``--training`` flag
and calls :func:`run_command_section`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional

import numpy as np

from . import _bench_per_sample as ps
from . import bench

__all__ = ["SHAPES", "QUICK_SHAPES", "TARGET_PCT", "TARGET_SHAPES", "IMPLEMENTATIONS", "resolve_shapes", "run",
           "format_times", "format_rates", "format_targets", "run_command_section"]

# scikit-learn's MLPClassifier defaults, used by every implementation.
ALPHA = 1e-4
LR = 1e-3
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
MOMENTUM = 0.9

TARGET_PCT = 75.0                       # issue 14: a step at >= this % of its GEMM-bound limit ...
TARGET_SHAPES = ("tabular", "digits")   # ... on these shapes, float32 and float64


@dataclass(frozen=True)
class Shape:
    config: bench.Config  # the network, its head and the rows N of an epoch
    batch: int            # B, rows per step

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def steps(self) -> int:
        return math.ceil(self.config.n / self.batch)


def _shape(name: str, batch: int) -> Shape:
    return Shape(bench.get_config(name), batch)


# The shapes: scikit-learn's defaults on digits (N = 1797, B = 200), its 48,000 x 60 problem with 4 classes,
# mnist's network at the bench's N = 4096 (32 steps of 128), and a binary problem with one sigmoid output.
SHAPES: Dict[str, Shape] = {s.name: s for s in [
    _shape("digits", 200), _shape("tabular", 256), _shape("mnist", 128), _shape("binary_100", 200)]}
QUICK_SHAPES: Dict[str, Shape] = {s.name: s for s in [_shape("smoke", 16), _shape("smoke_sigmoid", 16)]}

IMPLEMENTATIONS = ("adam", "sgd", "sklearn", "torch")
LABELS = {"adam": "native adam", "sgd": "native sgd", "sklearn": "sklearn adam", "torch": "torch adam"}


def resolve_shapes(shapes, quick: bool = False) -> List[Shape]:
    """Names (SHAPES, QUICK_SHAPES, or any bench config at its own N with B = min(200, N), scikit-learn's "auto"),
    Config or Shape objects -> Shapes; None: SHAPES (QUICK_SHAPES with ``quick``). ``quick`` divides a named shape's
    N as the bench's --quick does, keeping at least two batches."""
    if shapes is None:
        return list((QUICK_SHAPES if quick else SHAPES).values())
    out = []
    for s in shapes:
        if isinstance(s, Shape):
            out.append(s)
            continue
        if isinstance(s, str) and s in QUICK_SHAPES:
            out.append(QUICK_SHAPES[s])
            continue
        if isinstance(s, str) and s in SHAPES:
            sh = SHAPES[s]
        else:
            config = bench.get_config(s)
            sh = Shape(config, min(200, config.n))
        if quick:
            sh = Shape(replace(sh.config, n=max(2 * sh.batch, sh.config.n // bench.QUICK_FACTOR)), sh.batch)
        out.append(sh)
    return out


# -- the implementations: each returns a zero-argument call running one epoch, which returns its loss -----------------

def _native_epoch(p: bench.Problem, batch: int, solver: str, order: np.ndarray) -> Callable:
    """One native train_epoch per call, its parameters, gradient and optimizer state made once (as the estimator's
    _fit_stochastic makes them); returns the epoch's mean loss."""
    from . import _native
    from ._flat import n_weights, pack
    sizes = list(p.config.sizes)
    targets = p.y if p.head == "softmax" else p.y.reshape(len(p.y), -1)
    data = _native.bind_data(p.X, targets, None, p.head, sizes[0], sizes[-1], p.dtype)
    params = pack(p.weights, p.biases)
    grad, m = np.empty_like(params), np.zeros_like(params)
    v = np.zeros_like(params) if solver == "adam" else None
    t = np.zeros(1, np.int64)
    w = params[:n_weights(sizes)]
    state = {"sumsq": float(np.dot(w, w))}
    options = _native.train_options(solver, batch, ALPHA, LR, BETA1, BETA2, EPS, MOMENTUM, True)
    n_threads = p.threads or 0

    def call():
        loss_sum, state["sumsq"], _ = _native.train_epoch(params, grad, m, v, t, sizes, data, order, options,
                                                          state["sumsq"], n_threads)
        return loss_sum / len(order)
    return call


def _sklearn_epoch(p: bench.Problem, batch: int) -> Callable:
    """MLPClassifier.partial_fit over all rows per call (one epoch), after a first call that sets it up."""
    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=tuple(p.config.sizes[1:-1]), activation="logistic", solver="adam",
                        alpha=ALPHA, batch_size=batch, learning_rate_init=LR, beta_1=BETA1, beta_2=BETA2,
                        epsilon=EPS, random_state=bench.SEED)
    classes = np.arange(p.config.sizes[-1]) if p.head == "softmax" else np.array([0.0, 1.0], dtype=p.dtype)
    clf.partial_fit(p.X, p.y, classes=classes)

    def call():
        clf.partial_fit(p.X, p.y)
        return clf.loss_
    return call


def _torch_epoch(torch, p: bench.Problem, batch: int, order: np.ndarray) -> Callable:
    """An eager torch loop over the batches of ``order``: zero_grad, forward, backward, Adam's step."""
    model = ps._torch_model(torch, p)
    crit = (torch.nn.CrossEntropyLoss if p.head == "softmax" else torch.nn.BCEWithLogitsLoss)()
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
    X, Y = torch.from_numpy(p.X), ps._torch_targets(torch, p)
    idx = torch.from_numpy(order)
    n = len(order)

    def call():
        total = 0.0
        for s in range(0, n, batch):
            rows = idx[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = crit(model(X.index_select(0, rows)), Y.index_select(0, rows))
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        return total / n
    return call


def _calls(shape: Shape, p: bench.Problem, peers: List[str], notes: List[str]) -> Dict[str, Callable]:
    order = np.random.default_rng(bench.SEED + 1).permutation(shape.config.n).astype(np.int64)
    calls = {"adam": _native_epoch(p, shape.batch, "adam", order), "sgd": _native_epoch(p, shape.batch, "sgd", order),
             "sklearn": _sklearn_epoch(p, shape.batch)}
    if "torch" in peers:
        torch = bench._setup_torch(p.threads)
        if torch is None:
            notes.append(f"torch left out: not importable ({bench._PEER_STATE['torch'].get('error')})")
        else:
            calls["torch"] = _torch_epoch(torch, p, shape.batch, order)
    return calls


# -- the section --------------------------------------------------------------------------------------------------

def _one(shape: Shape, dtype: str, threads, repeat, quick, settle, log, peers, gemm, peak, notes) -> dict:
    config, t0 = shape.config, time.perf_counter()
    p = bench.make_problem(config, dtype, threads)
    calls = _calls(shape, p, peers, notes)
    first = {name: float(fn()) for name, fn in calls.items()}  # the warm-up: every epoch's loss must be finite
    ok = all(math.isfinite(v) for v in first.values())
    if not ok:
        log(f"WARNING: a training epoch on {config.name} {dtype} gave a non-finite loss: {first}")
    stats = bench._stats(bench._time_rounds(calls, repeat, quick, settle))
    ms, steps = stats["ms"], shape.steps
    epoch_flops = bench.flop_count(config.sizes, config.n, input_grad=False)
    gflops = {name: epoch_flops / (v * 1e-3) / 1e9 for name, v in ms.items()}
    square, fma = bench.gemm_rate(gemm, dtype), (peak or {}).get(dtype)
    row = {
        "config": config.name, "layers": config.layers, "sizes": list(config.sizes), "head": config.head,
        "n": config.n, "batch": shape.batch, "steps": steps, "dtype": dtype, "threads": threads,
        **stats,
        "step_us": {name: 1e3 * v / steps for name, v in ms.items()},
        "step_flops": bench.flop_count(config.sizes, shape.batch, input_grad=False),
        "epoch_flops": epoch_flops, "gflops": gflops,
        "gemm_gflops": square, "fma_peak_gflops": fma,
        "gemm_bound_us": 1e6 * epoch_flops / (square * 1e9) / steps if square else None,
        "pct_gemm_bound": {name: 100 * g / square for name, g in gflops.items()} if square else {},
        "pct_peak": {name: 100 * g / fma for name, g in gflops.items()} if fma else {},
        "vs_adam": {name: v / ms["adam"] for name, v in ms.items()},
        "first_loss": first, "ok": ok,
    }
    row["targets"] = _targets(row)
    row["seconds"] = time.perf_counter() - t0
    return row


def _targets(row: dict) -> List[dict]:
    """Issue 14's: each native step's % of its GEMM-bound limit (>= TARGET_PCT on TARGET_SHAPES; shown elsewhere)."""
    out = []
    for name in ("adam", "sgd"):
        pct = row["pct_gemm_bound"].get(name)
        measure = f"{LABELS[name]} step % of GEMM-bound"
        if row["config"] in TARGET_SHAPES:
            out.append(ps._target(measure, pct, ">=", TARGET_PCT, lambda x: f"{x:.0f}%"))
        elif pct is not None:
            out.append({"measure": measure, "value": pct, "target": "-", "met": None, "gap": None,
                        "text": f"{pct:.0f}%"})
    return out


def run(shapes=None, dtypes=("float32",), threads: Optional[int] = None, repeat: Optional[int] = None, *,
        quick: bool = False, settle: float = bench.SETTLE, log: Callable = print,
        progress: Optional[Callable] = None, peers=(), gemm: Optional[dict] = None,
        peak: Optional[Dict[str, float]] = None) -> dict:
    """The training section: {"rows": one dict per (shape, dtype), "notes": [...]}.

    ``shapes``: see :func:`resolve_shapes`. ``peers``: ("torch",), "auto" (torch when installed) or () (none).
    ``gemm``: a :func:`mlpgrad.bench.measure_gemm` result with a "square" shape (None: no GEMM-bound columns);
    ``peak``: {dtype: GFLOP/s} from :func:`mlpgrad.bench.measure_peak` (None: no "% of peak"). With ``threads``,
    NumPy's BLAS (which scikit-learn's products run on) is limited to as many threads (threadpoolctl).
    """
    shapes = resolve_shapes(shapes, quick)
    if peers == "auto":
        peers = ["torch"] if "torch" in bench.available_peers() else []
    unknown = [name for name in peers if name != "torch"]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; the training section has torch only")
    notes: List[str] = []
    rows = []
    limiter = None
    if threads is not None:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=threads, user_api="blas")
    try:
        for shape in shapes:
            for dtype in bench._dtype_list(dtypes):
                row = _one(shape, dtype, threads, repeat, quick, settle, log, list(peers), gemm, peak, notes)
                rows.append(row)
                if progress is not None:
                    progress(f"training {row['config']} B={row['batch']} {dtype}: {len(row['ms'])} implementations "
                             f"in {row['seconds']:.1f} s")
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    return {"rows": rows, "notes": notes}


# -- tables ---------------------------------------------------------------------------------------------------------

def _names(rows: List[dict]) -> List[str]:
    return [n for n in IMPLEMENTATIONS if any(n in r["ms"] for r in rows)]


def format_times(rows: List[dict]) -> str:
    """Per (shape, dtype): the step's flops, its GEMM-bound time and every implementation's us per step."""
    names = _names(rows)
    head = (["config", "layers", "B", "N", "steps", "dtype", "MFLOP/step", "GEMM-bound us"]
            + [f"{LABELS[n]} us" for n in names])
    body = []
    for r in rows:
        bound = r["gemm_bound_us"]
        body.append([r["config"], r["layers"], str(r["batch"]), str(r["n"]), str(r["steps"]), r["dtype"],
                     f"{r['step_flops'] / 1e6:.3g}", bench._fmt_ms(bound)]
                    + [bench._fmt_ms(r["step_us"].get(n)) for n in names])
    return bench._markdown(head, body, [False, False, True, True, True, False] + [True] * (len(head) - 6))


def format_rates(rows: List[dict]) -> str:
    """One line per (shape, dtype, implementation): us per step, GFLOP/s, % of GEMM-bound, % of peak, time / native
    adam's."""
    head = ["config", "dtype", "implementation", "us/step", "GFLOP/s", "% of GEMM-bound", "% of peak",
            "time / native adam's"]
    body = []
    for r in rows:
        for n in _names([r]):
            body.append([r["config"], r["dtype"], LABELS[n], bench._fmt_ms(r["step_us"][n]),
                         bench._fmt_gflops(r["gflops"][n]),
                         bench.fmt_pct(r["pct_gemm_bound"].get(n)), bench.fmt_pct(r["pct_peak"].get(n)),
                         bench._fmt_ratio(r["vs_adam"][n])])
    return bench._markdown(head, body, [False, False, False] + [True] * (len(head) - 3))


def format_targets(rows: List[dict]) -> str:
    """Issue 14's targets, each with its measured value and met / the gap."""
    head = ["config", "dtype", "measure", "value", "target", "met"]
    body = []
    for r in rows:
        for t in r["targets"]:
            if t["value"] is None:
                met = "- (no GEMM)"
            elif t["met"] is None:
                met = "-"
            else:
                met = "met" if t["met"] else f"gap: {t['gap']:.2f}x"
            body.append([r["config"], r["dtype"], t["measure"], t.get("text", "-"), t["target"], met])
    return bench._markdown(head, body, [False, False, False, True, False, False])


LEGEND = f"""\
One call is one epoch of N rows in ceil(N / B) steps; us per step = the median epoch time (interleaved rounds, each
implementation settling before its block) / steps. native adam / sgd: mlpgrad's train_epoch (the estimator's one
native call per epoch: gather, loss and gradients, optimizer step; alpha {ALPHA}, lr {LR}, sgd momentum {MOMENTUM}
Nesterov); sklearn adam: MLPClassifier(activation="logistic", solver="adam").partial_fit over the N rows; torch adam:
an eager loop (index_select, zero_grad, forward, backward, torch.optim.Adam.step; no weight decay). MFLOP/step: the
matrix products a step needs, forward 2B sum d_(l-1) d_l + dW 2B sum d_(l-1) d_l + deltas 2B sum_(l>=2) d_(l-1) d_l
(no dL/dX); GEMM-bound us: that over the best square GEMM's rate of the run; % of GEMM-bound: that bound / the
measured step; % of peak: GFLOP/s / the FMA peak (header). Targets (issue 14): native steps >= {TARGET_PCT:.0f}% of
GEMM-bound on {' and '.join(TARGET_SHAPES)}, float32 and float64; gap: target / value."""


def print_section(result: dict, gemm: Optional[dict]) -> None:
    rows = result["rows"]
    ps.print_tables([("training steps (issue 14): us per step of one epoch", format_times(rows)),
                     ("rates against the FMA peak and the same run's GEMM", format_rates(rows)),
                     ("targets", format_targets(rows))],
                    gemm, LEGEND, result["notes"])


def _cli_peers(requested) -> List[str]:
    """bench's --peers: "auto" -> torch when installed; a list with torch -> torch; none -> no peer."""
    if requested == "auto":
        return "auto"
    return ["torch"] if "torch" in (requested or []) else []


def run_command_section(args, configs, progress=None, peak=None) -> dict:
    """``bench --training``: the shapes of --config (SHAPES' B for their names, with --quick N / 16) or SHAPES (at N /
    16 with --quick), --dtype, --threads, --repeat, --settle, --peers, --gemm; prints the tables, returns the JSON
    part."""
    chosen = [c.name if c.name in SHAPES or c.name in QUICK_SHAPES else c for c in configs] or list(SHAPES)
    shapes = resolve_shapes(chosen, args.quick)
    gemm = None
    if args.gemm != "none":
        gemm = bench.measure_gemm(args.dtype, args.threads, args.gemm, quick=args.quick,
                                  shapes=ps._gemm_shapes((), args.quick),  # the square GEMM alone
                                  repeat=args.repeat, settle=args.settle, progress=progress)
    result = run(shapes, args.dtype, args.threads, args.repeat, quick=args.quick, settle=args.settle,
                 log=print, progress=progress, peers=_cli_peers(args.peers), gemm=gemm, peak=peak)
    print_section(result, gemm)
    return {**result, "gemm": gemm}
