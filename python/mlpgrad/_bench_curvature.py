"""The curvature section of the bench (``python -m mlpgrad bench --curvature``, issue 13).

For each shape, in one process, interleaved rounds (every implementation settles, then makes a block of timed
calls; medians per call), float32 by default:

- mlpgrad's curvature functions, each against mlpgrad's own ``loss_and_grad`` (reduction "sum", no dL/dX): the
  baseline ``grad``; ``hvp(1)`` / ``ggn_vp(1)`` = hvp / ggn_vp with V of shape (P,); ``hvp(16)`` / ``ggn_vp(16)``
  with V of shape (P, 16), one native pass; ``ggn_diag``; all with reduction "sum";
- the same-run square GEMM (:func:`mlpgrad.bench.measure_gemm`, before the shapes), the denominator of the
  16-vector blocks' "% of square GEMM";
- the peers, when importable (never required), on the same model as an ``nn.Sequential`` of Linear + Sigmoid
  (W transposed, ``CrossEntropyLoss`` / ``BCEWithLogitsLoss`` with reduction "sum"; the per-sample section's
  helpers): torch's own gradient (``autograd.grad``); ``torch.func`` forward-over-reverse H v,
  ``jvp(grad(loss), (params,), (v,))`` with one vector; curvlinops' ``GGNLinearOperator`` times one vector (in its
  tensor-list format, the data one batch, ``check_deterministic=False``); BackPACK's ``DiagGGNExact`` (one
  ``backward``, the model and the loss extended).

Before timing, mlpgrad's functions are compared with ``mlpgrad.reference`` on the first ``CHECK_ROWS`` rows and
every peer with the mlpgrad function computing the same thing on the full problem (max-norm relative error <= 1e-3
in float32, 1e-10 in float64; a WARNING line otherwise). Tests run :func:`run` with ``quick=True`` (tiny shapes,
two rounds, no torch needed). ``bench.py`` owns the ``--curvature`` flag and calls :func:`run_command_section`.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import replace
from typing import Callable, Dict, List, Optional

import numpy as np

from . import _bench_per_sample as ps
from . import bench
from ._flat import pack, unpack

__all__ = ["SHAPES", "QUICK_SHAPES", "TARGETS", "hvp_flops", "ggn_vp_flops", "ggn_diag_flops", "run",
           "format_times", "format_peers", "format_targets", "format_rates", "run_command_section"]

VECTORS = 16     # the block's m
CHECK_ROWS = 32  # rows on which mlpgrad is compared with mlpgrad.reference


def _config(name, n) -> bench.Config:
    return replace(bench.get_config(name), n=n)


# The shapes at the per-sample section's N.
SHAPES: Dict[str, bench.Config] = {c.name: c for c in [
    _config("mnist", 1024), _config("seed1_small", 8192), _config("mid_sigmoid", 8192)]}
QUICK_SHAPES: Dict[str, bench.Config] = {c.name: c for c in [_config("smoke", 100), _config("smoke_sigmoid", 100)]}

OPS = ("grad", "hvp1", "ggn1", "hvp16", "ggn16", "diag")
OP_LABELS = {"grad": "loss_and_grad", "hvp1": "hvp(1)", "ggn1": "ggn_vp(1)", "hvp16": f"hvp({VECTORS})",
             "ggn16": f"ggn_vp({VECTORS})", "diag": "ggn_diag"}

# Issue 13's targets: time / loss_and_grad's time on every shape; the blocks' % of the square GEMM (mnist); BackPACK
# DiagGGNExact's time / ggn_diag's.
RATIO_TARGETS = (("hvp1", 2.5), ("ggn1", 1.8))
GEMM_TARGET = 60.0
GEMM_TARGET_SHAPES = ("mnist",)
DIAG_SPEEDUP_TARGET = 3.0
TARGETS = {"ratio": dict(RATIO_TARGETS), "pct_gemm": GEMM_TARGET, "diag_speedup": DIAG_SPEEDUP_TARGET}


# -- flop counts (matrix products only, as in the main table) --------------------------------------------------
#
# p_l = d_(l-1) d_l; the R-quantities of X are 0 (no direction on the input), so layer 1 has one product where the
# others have two.

def _sums(sizes) -> tuple:
    """(sum_l p_l, sum_(l>=2) p_l)."""
    prods = ps._products(sizes)
    return sum(prods), sum(prods[1:])


def hvp_flops(sizes, n: int, m: int) -> int:
    """hvp with m vectors: once, the forward (2n sum p_l) and the deltas (2n sum_(l>=2) p_l); per vector
    R-forward  R{z_l} = R{h_(l-1)} W_l + h_(l-1) V_(W_l)                       2n (sum p_l + sum_(l>=2) p_l),
    R-backward R{dW_l} = R{h_(l-1)}^T delta_l + h_(l-1)^T R{delta_l}           2n (sum p_l + sum_(l>=2) p_l),
               R{dh_(l-1)} = R{delta_l} W_l^T + delta_l V_(W_l)^T (l >= 2)     2n 2 sum_(l>=2) p_l,
    so 2n (2 sum p_l + 4 sum_(l>=2) p_l) per vector."""
    total, inner = _sums(sizes)
    return ps.forward_backward_flops(sizes, n) + m * 2 * n * (2 * total + 4 * inner)


def ggn_vp_flops(sizes, n: int, m: int) -> int:
    """ggn_vp with m vectors: once, the forward (2n sum p_l; no ordinary deltas); per vector the R-forward to
    R{z_L} = J v (2n (sum p_l + sum_(l>=2) p_l)) and the ordinary backward of c Hhead R{z_L}: deltas
    (2n sum_(l>=2) p_l) and dW (2n sum p_l), so 2n (2 sum p_l + 2 sum_(l>=2) p_l) per vector."""
    total, inner = _sums(sizes)
    return 2 * n * total + m * 2 * n * (2 * total + 2 * inner)


def ggn_diag_flops(sizes, n: int) -> int:
    """ggn_diag: the forward (2n sum p_l), for each of the k = d_L columns of the head's factor its deltas
    (2n sum_(l>=2) p_l), then one product (h_(l-1)^2)^T M_l of the squares summed over the columns (2n sum p_l)."""
    total, inner = _sums(sizes)
    return 2 * n * total + sizes[-1] * 2 * n * inner + 2 * n * total


def op_flops(sizes, n: int) -> Dict[str, int]:
    return {"grad": ps.gradient_flops(sizes, n), "hvp1": hvp_flops(sizes, n, 1), "ggn1": ggn_vp_flops(sizes, n, 1),
            "hvp16": hvp_flops(sizes, n, VECTORS), "ggn16": ggn_vp_flops(sizes, n, VECTORS),
            "diag": ggn_diag_flops(sizes, n)}


# -- mlpgrad's calls ---------------------------------------------------------------------------------------------

def _functions(source: str, threads: Optional[int]) -> Dict[str, Callable]:
    """The functions timed: mlpgrad's (with n_threads), or mlpgrad.reference's (a stand-in to test the plumbing)."""
    import mlpgrad
    names = ("loss_and_grad", "hvp", "ggn_vp", "ggn_diag")
    if source == "mlpgrad":
        mod, extra = mlpgrad, {"n_threads": threads}
    elif source == "reference":
        mod, extra = mlpgrad.reference, {}
    else:
        raise ValueError(f"source must be 'mlpgrad' or 'reference', got {source!r}")
    return {n: functools.partial(getattr(mod, n), **extra) for n in names}


def vectors(p: bench.Problem, m: int) -> np.ndarray:
    """The directions V (P, m) of problem p, from a fixed seed: the same for mlpgrad and the peers."""
    P = ps.n_params(p.config.sizes)
    return np.random.default_rng(bench.SEED + 1).standard_normal((P, m)).astype(p.dtype)


def _op_calls(f: Dict[str, Callable], p: bench.Problem) -> Dict[str, Callable]:
    W, b, X, y, head = p.weights, p.biases, p.X, p.y, p.head
    V1, V16 = vectors(p, 1)[:, 0], vectors(p, VECTORS)
    return {
        "grad": lambda: f["loss_and_grad"](W, b, X, y, head=head, reduction="sum"),
        "hvp1": lambda: f["hvp"](W, b, X, y, V1, head=head),
        "ggn1": lambda: f["ggn_vp"](W, b, X, y, V1, head=head),
        "hvp16": lambda: f["hvp"](W, b, X, y, V16, head=head),
        "ggn16": lambda: f["ggn_vp"](W, b, X, y, V16, head=head),
        "diag": lambda: f["ggn_diag"](W, b, X, y, head=head),
    }


def _op_value(op: str, res) -> Dict[str, np.ndarray]:
    """An op's result as named arrays (flat, pack order), for the comparisons."""
    if op == "grad":
        return {"loss": np.asarray(res[0]), "grad": pack(res[1].weights, res[1].biases)}
    return {{"hvp1": "hvp", "ggn1": "ggn", "hvp16": "hvp16", "ggn16": "ggn16", "diag": "diag"}[op]: np.asarray(res)}


def _check_against_reference(p, tol, where, log) -> Dict[str, float]:
    """mlpgrad's ops against mlpgrad.reference on the first CHECK_ROWS rows: {op: relative error}."""
    pk = ps._rows(p, min(CHECK_ROWS, p.config.n))
    native = _op_calls(_functions("mlpgrad", p.threads), pk)
    ref = _op_calls(_functions("reference", None), pk)
    errs = {}
    for op in OPS:
        worst, errs[op] = ps._compare(_op_value(op, native[op]()), _op_value(op, ref[op]()))
        if not errs[op] <= tol:
            log(f"WARNING: mlpgrad's {OP_LABELS[op]} disagrees with mlpgrad.reference on {where} (first "
                f"{pk.config.n} rows): relative error {errs[op]:.2e} in {worst} > {tol:.0e}")
    return errs


# -- peers (torch, torch.func, curvlinops, BackPACK): imported lazily, never required ----------------------------

PEER_OPS = {  # peer -> (label, the mlpgrad op computing the same thing, the package it needs besides torch)
    "torch_grad": ("torch grad", "grad", None),
    "func_hvp": ("torch.func hvp", "hvp1", None),
    "curvlinops_ggn": ("curvlinops GGN matvec", "ggn1", "curvlinops"),
    "backpack_diag": ("BackPACK DiagGGNExact", "diag", "backpack"),
}
PEER_PACKAGES = {"curvlinops": "curvlinops-for-pytorch", "backpack": "backpack-for-pytorch"}


def _torch_direction(torch, p: bench.Problem) -> list:
    """vectors(p, 1) as tensors in the order and layout of the model's parameters (W_l^T, b_l, ...)."""
    Ws, bs = unpack(vectors(p, 1)[:, 0], p.config.sizes)
    return [torch.from_numpy(np.ascontiguousarray(a)) for W, b in zip(Ws, bs) for a in (W.T, b)]


def _peer_func_hvp(torch, p):
    from torch.func import functional_call, grad, jvp
    model, crit = ps._torch_model(torch, p), ps._torch_loss(torch, p.head)
    X, y = torch.from_numpy(p.X), ps._torch_targets(torch, p)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tangents = dict(zip(params, _torch_direction(torch, p)))

    def loss(params):
        return crit(functional_call(model, params, (X,)), y)

    def call():
        return jvp(grad(loss), (params,), (tangents,))[1]
    return call, lambda res: {"hvp": ps._flat(*ps._split(res.values()))}


def _peer_curvlinops_ggn(torch, p):
    from curvlinops import GGNLinearOperator
    model, crit = ps._torch_model(torch, p), ps._torch_loss(torch, p.head)
    X, y = torch.from_numpy(p.X), ps._torch_targets(torch, p)
    G = GGNLinearOperator(model, crit, list(model.parameters()), [(X, y)], check_deterministic=False)
    v = _torch_direction(torch, p)
    return (lambda: G @ v), (lambda res: {"ggn": ps._flat(*ps._split(res))})


def _peer_backpack_diag(torch, p):
    from backpack.extensions import DiagGGNExact
    call = ps._backpack_call(torch, p, DiagGGNExact, lambda qs: [q.diag_ggn_exact for q in qs], extend_loss=True)
    return call, lambda res: {"diag": ps._flat(*ps._split(res))}


PEER_FACTORIES = {"torch_grad": ps._peer_torch_grad, "func_hvp": _peer_func_hvp,
                  "curvlinops_ggn": _peer_curvlinops_ggn, "backpack_diag": _peer_backpack_diag}


def available_peers() -> List[str]:
    return ps.available_peers(PEER_OPS)


# -- the section -------------------------------------------------------------------------------------------------

def _one(config: bench.Config, dtype: str, threads, repeat, quick, settle, log, peers, gemm, source, notes) -> dict:
    t0 = time.perf_counter()
    p = bench.make_problem(config, dtype, threads)
    tol = bench.TOLERANCE[dtype]
    where = f"{config.name} {dtype}"

    calls = _op_calls(_functions(source, threads), p)
    ref_err = _check_against_reference(p, tol, where, log) if source == "mlpgrad" else {}
    values = {op: _op_value(op, calls[op]()) for op in ("grad", "hvp1", "ggn1", "diag")}
    for op in ("hvp16", "ggn16"):
        calls[op]()  # the warm-up
    peer_calls, peer_err = (ps._peer_calls(peers, p, values, tol, where, log, notes, PEER_OPS, PEER_FACTORIES,
                                           OP_LABELS) if peers else ({}, {}))
    del values
    calls.update(peer_calls)

    stats = bench._stats(ps._time_rounds(calls, repeat, quick, settle))
    ms = stats["ms"]
    flops = op_flops(config.sizes, config.n)
    gflops = {op: f / (ms[op] * 1e-3) / 1e9 for op, f in flops.items()}
    square = bench.gemm_rate(gemm, dtype)  # the best of the backends
    row = {
        "config": config.name, "layers": config.layers, "sizes": list(config.sizes), "head": config.head,
        "n": config.n, "n_params": ps.n_params(config.sizes), "dtype": dtype, "threads": threads, "source": source,
        **stats,
        "ratio": {op: ms[op] / ms["grad"] for op in OPS if op != "grad"},
        "peer_ratio": {name: ms[name] / ms[PEER_OPS[name][1]] for name in peer_calls},
        "flops": flops, "gflops": gflops, "gemm_gflops": {"square": square} if square else {},
        "max_rel_err": {**{f"mlpgrad {op} vs reference": e for op, e in ref_err.items()},
                        **{f"{name} vs mlpgrad": e for name, e in peer_err.items()}},
        "tolerance": tol,
        "ok": all(e <= tol for e in list(ref_err.values()) + list(peer_err.values())),
    }
    row["targets"] = _targets(row)
    row["seconds"] = time.perf_counter() - t0
    return row


def _targets(row: dict) -> List[dict]:
    out = []
    for op, bound in RATIO_TARGETS:
        out.append(ps._target(f"{OP_LABELS[op]} / loss_and_grad", row["ratio"][op], "<=", bound, bench._fmt_ratio))
    square = row["gemm_gflops"].get("square")
    for op in ("hvp16", "ggn16"):
        pct = 100.0 * row["gflops"][op] / square if square else None
        measure = f"{OP_LABELS[op]} % of square GEMM"
        if row["config"] in GEMM_TARGET_SHAPES:
            out.append(ps._target(measure, pct, ">=", GEMM_TARGET, lambda x: f"{x:.0f}%"))
        elif pct is not None:
            out.append({"measure": measure, "value": pct, "target": "-", "met": None, "gap": None,
                        "text": f"{pct:.0f}%"})
    ms = row["ms"]
    value = ms["backpack_diag"] / ms["diag"] if "backpack_diag" in ms else None
    out.append(ps._target(f"{PEER_OPS['backpack_diag'][0]} / ggn_diag", value, ">=", DIAG_SPEEDUP_TARGET,
                          bench._fmt_ratio))
    return out


def resolve_shapes(shapes, quick: bool = False) -> List[bench.Config]:
    """Names (SHAPES, QUICK_SHAPES, or any bench config at its own N) or Config objects -> Configs; None: the
    default list. ``quick`` divides N as the bench's --quick does (QUICK_SHAPES are already small)."""
    if shapes is None:
        return list(QUICK_SHAPES.values()) if quick else list(SHAPES.values())
    out = []
    for s in shapes:
        if isinstance(s, bench.Config):
            config = s
        elif s in QUICK_SHAPES:
            out.append(QUICK_SHAPES[s])
            continue
        else:
            config = SHAPES.get(s) or bench.get_config(s)
        out.append(config.quick() if quick else config)
    return out


def run(shapes=None, dtypes=("float32",), threads: Optional[int] = None, repeat: Optional[int] = None, *,
        quick: bool = False, settle: float = bench.SETTLE, log: Callable = print,
        progress: Optional[Callable] = None, peers=(), gemm: Optional[dict] = None,
        source: str = "mlpgrad", peak: Optional[Dict[str, float]] = None) -> dict:
    """The curvature section: {"rows": one dict per (shape, dtype), "notes": [...], "peers": versions}.

    ``shapes``: see :func:`resolve_shapes`. ``peers``: names of :data:`PEER_OPS`, "auto" (the installed ones) or ()
    (none). ``gemm``: a :func:`mlpgrad.bench.measure_gemm` result with a "square" shape (None: no GEMM columns).
    ``source="reference"`` times mlpgrad.reference instead of mlpgrad (tiny shapes only), to test the plumbing.
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
        # BackPACK's module hooks on a model whose input needs no gradient: torch warns on every call.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        # torch's forward-mode AD (torch.func.jvp, and curvlinops through it) scripts its decompositions at its first
        # use, and torch 2.13 deprecates torch.jit.script: torch's own business, not the peer's result.
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
        for config in shapes:
            for dtype in bench._dtype_list(dtypes):
                row = _one(config, dtype, threads, repeat, quick, settle, log, list(peers), gemm, source, notes)
                row["fma_peak_gflops"] = (peak or {}).get(dtype)
                rows.append(row)
                if progress is not None:
                    progress(f"curvature {row['config']} N={row['n']} {dtype}: {len(row['ms'])} implementations "
                             f"in {row['seconds']:.1f} s")
    versions = {}
    if peers and "torch" in bench._PEER_STATE and bench._PEER_STATE["torch"].get("module") is not None:
        versions = ps.peer_versions(bench._PEER_STATE["torch"]["module"], PEER_PACKAGES)
        versions["torch threads"] = bench._PEER_STATE["torch"].get("threads")
    return {"rows": rows, "notes": notes, "peers": versions}


# -- tables ------------------------------------------------------------------------------------------------------

def format_times(rows: List[dict]) -> str:
    """mlpgrad's ms per call for each op, and each op's time over loss_and_grad's."""
    head = ["config", "layers", "N", "P", "dtype"] + [f"{OP_LABELS[op]} ms" for op in OPS]
    body = []
    for r in rows:
        ms = r["ms"]
        body.append([r["config"], r["layers"], str(r["n"]), str(r["n_params"]), r["dtype"], bench._fmt_ms(ms["grad"])]
                    + [f"{bench._fmt_ms(ms[op])} ({bench._fmt_ratio(r['ratio'][op])})" for op in OPS[1:]])
    return bench._markdown(head, body, [False, False, True, True, False] + [True] * len(OPS))


def format_peers(rows: List[dict]) -> str:
    """The peers' ms per call beside the mlpgrad op each one matches."""
    names = [name for name in PEER_OPS if any(name in r["ms"] for r in rows)]
    if not names:
        return ""
    head = ["config", "N", "dtype"] + [f"{PEER_OPS[n][0]} ms (vs mlpgrad {OP_LABELS[PEER_OPS[n][1]]})" for n in names]
    body = []
    for r in rows:
        cells = [r["config"], str(r["n"]), r["dtype"]]
        for n in names:
            cells.append(f"{bench._fmt_ms(r['ms'][n])} ({bench._fmt_ratio(r['peer_ratio'][n])})" if n in r["ms"]
                         else "-")
        body.append(cells)
    return bench._markdown(head, body, [False, True, False] + [True] * len(names))


def format_targets(rows: List[dict]) -> str:
    """Issue 13's targets, each with its measured value and met / the gap."""
    head = ["config", "dtype", "measure", "value", "target", "met"]
    body = []
    for r in rows:
        for t in r["targets"]:
            if t["value"] is None:
                met = "- (peer absent)" if "BackPACK" in t["measure"] else "- (no GEMM)"
            elif t["met"] is None:
                met = "-"
            else:
                met = "met" if t["met"] else f"gap: {t['gap']:.2f}x"
            body.append([r["config"], r["dtype"], t["measure"], t.get("text", "-"), t["target"], met])
    return bench._markdown(head, body, [False, False, False, True, False, False])


def format_rates(rows: List[dict]) -> str:
    """GFLOP/s of every op against the FMA peak and the same run's square GEMM."""
    head = ["config", "dtype", "op", "GFLOP per call", "flops / loss_and_grad's", "GFLOP/s", "% of peak",
            "% square GEMM"]
    body = []
    for r in rows:
        square, peak = r["gemm_gflops"].get("square"), r.get("fma_peak_gflops")
        for op in OPS:
            rate = r["gflops"][op]
            body.append([r["config"], r["dtype"], OP_LABELS[op], f"{r['flops'][op] / 1e9:.3g}",
                         f"{r['flops'][op] / r['flops']['grad']:.2f}", bench._fmt_gflops(rate),
                         bench.fmt_pct(100 * rate / peak if peak else None),
                         f"{100 * rate / square:.0f}%" if square else "-"])
    return bench._markdown(head, body, [False, False, False, True, True, True, True, True])


LEGEND = f"""\
ms: median per call (interleaved rounds, each implementation settling before its block); in brackets, the time over
loss_and_grad's (reduction "sum", no dL/dX: the baseline). mlpgrad's ops, reduction "sum": hvp and ggn_vp with V
(P,) and (P, {VECTORS}), ggn_diag. Peers (ms, and in brackets their time over the mlpgrad op computing the same
thing): torch's gradient (autograd.grad), torch.func forward-over-reverse jvp(grad(loss)) with one vector,
curvlinops GGNLinearOperator @ one vector, BackPACK DiagGGNExact (one backward).
Targets (issue 13): hvp(1) <= 2.5x and ggn_vp(1) <= 1.8x loss_and_grad's time on every shape; hvp({VECTORS}) and
ggn_vp({VECTORS}) >= 60% of the square GEMM's GFLOP/s timed in the same run (mnist); BackPACK DiagGGNExact's time
>= 3x ggn_diag's; gap: how far from the bound (value / bound for <=, bound / value for >=).
GFLOP count the matrix products, with p_l = d_(l-1) d_l, S = sum_l p_l, S2 = sum_(l>=2) p_l (layer 1 has no
R{{h_0}}: X gets no direction): loss_and_grad 2n (2 S + S2); hvp with m vectors 2n (S + S2) (forward and deltas,
once) + m 2n (2 S + 4 S2) (R-forward R{{h}} W + h V_W: S + S2; R{{dW}} = R{{h}}^T delta + h^T R{{delta}}: S + S2;
R{{dh}} = R{{delta}} W^T + delta V_W^T: 2 S2); ggn_vp 2n S (forward) + m 2n (2 S + 2 S2) (R-forward to J v: S + S2;
the ordinary backward of c Hhead J v: S2 + S); ggn_diag 2n S + k 2n S2 + 2n S (k = d_L backward passes of the head
factor's columns, then one (h^2)^T M product of their squares summed). One vector: hvp 1.9-2.4x, ggn_vp 1.6x loss_and_grad's flops on the issue's shapes.
Square GEMM: the best of NumPy's matmul and torch.mm (when importable). % of peak: GFLOP/s over the FMA peak of the
dtype (the header's register-only FMA loop)."""


def print_section(result: dict, gemm: Optional[dict]) -> None:
    rows = result["rows"]
    ps.print_tables([("curvature (issue 13): mlpgrad's ops, ms per call (time / loss_and_grad's)", format_times(rows)),
                     (ps.peers_heading(result), format_peers(rows)),
                     ("targets", format_targets(rows)),
                     ("rates against the FMA peak and the same run's GEMM", format_rates(rows))],
                    gemm, LEGEND, result["notes"])


def _cli_peers(requested) -> List[str]:
    """bench's --peers: "auto" -> the installed curvature peers; a list with "torch" -> all of them (absent ones are
    noted when they fail); none -> no peers. jax has no curvature peer here."""
    if requested == "auto":
        return available_peers()
    if "torch" in (requested or []):
        return list(PEER_OPS)
    return []


def run_command_section(args, configs, progress=None, peak=None) -> dict:
    """``bench --curvature``: the shapes of --config (SHAPES' N for their names) or SHAPES (QUICK_SHAPES with
    --quick), --dtype, --threads, --repeat, --settle, --peers, --gemm; prints the tables, returns the JSON part."""
    shapes = [c.name if c.name in SHAPES or c.name in QUICK_SHAPES else c for c in configs] or None
    gemm = None
    if args.gemm != "none":
        gemm = bench.measure_gemm(args.dtype, args.threads, args.gemm, quick=args.quick,
                                  shapes=ps._gemm_shapes((), args.quick),  # the square GEMM alone
                                  repeat=args.repeat, settle=args.settle, progress=progress)
    result = run(shapes, args.dtype, args.threads, args.repeat, quick=args.quick, settle=args.settle,
                 log=print, progress=progress, peers=_cli_peers(args.peers), gemm=gemm, peak=peak)
    print_section(result, gemm)
    return {**result, "gemm": gemm}
