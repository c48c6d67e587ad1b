"""The sparse section of the bench (``python -m mlpgrad bench --sparse``, issue 15 part 1).

A text-like problem (a bag of words per row): N rows of d_0 columns, a class per row (uniform over ``classes``), about
``density`` d_0 column draws per row, each from the class's own TOPIC_WORDS columns with probability TOPIC_SHARE and
otherwise from a skewed popularity (column j with probability proportional to 1 / (j + ZIPF_OFFSET), Zipf's law of
word frequencies); a word drawn twice counts twice; positive values normalized per row (as a TF-IDF vectorizer's
rows); float32 CSR from bench's fixed seed. The labels are learnable as a text classifier's are, from the words
(an argmax of a random linear teacher on these features, measured at 10,000 x 20,000, gave classes of 0.4% to 14%
of the rows and 28% held-out accuracy after 10 adam epochs). A network d_0-hidden-classes with a softmax head,
weights as in bench (N(0, 1/d_in), biases N(0, 0.1^2)).

Two tables, float32:

1. Per call of loss_and_grad (the loss and every parameter gradient, reduction "sum", no dL/dX: for text it would be
   a dense N x d_0 array), bench's interleaved rounds (each implementation settles, then makes a block of timed
   calls; medians): ``sparse``, mlpgrad on the CSR X; ``dense``, mlpgrad on the first ``dense_n`` rows densified
   (the whole X dense would not fit: N d_0 4 bytes = 20 GB), its time also scaled to N rows (x N / dense_n);
   ``torch`` (when importable, never required): the same loss and gradients with X a ``torch.sparse_csr_tensor``,
   ``X @ W_1 + b_1`` forward and ``torch.autograd.grad``. Before timing, each is called once and compared with
   mlpgrad on the CSR X of the same rows (max-norm relative error <= 1e-3; a WARNING line otherwise).
2. Fit: ``mlpgrad.MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=epochs, random_state=0)`` against
   scikit-learn's ``MLPClassifier(activation="logistic", same parameters)`` (both adam, batch size "auto" = 200) on
   the same CSR matrix, its first 90% of rows; one fit each (ConvergenceWarnings silenced): seconds, accuracy on the
   held-out 10%, and the ratio of the fit times. Issue 15's target: scikit-learn's fit time >= 5x mlpgrad's at equal
   accuracy (mlpgrad's at most ACCURACY_MARGIN below). An estimator that refuses a sparse X shows "n/a" and the
   error.

``--quick``: a small problem (QUICK) for the tests. ``bench.py`` owns the ``--sparse`` flag and calls
:func:`run_command_section`.
"""

from __future__ import annotations

import textwrap
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from . import _bench_per_sample as ps
from . import bench
from ._types import Gradients

__all__ = ["SparseShape", "FULL", "QUICK", "SPEEDUP_TARGET", "ACCURACY_MARGIN", "text_like_csr", "make_problem",
           "run", "format_calls", "format_fit", "format_targets", "run_command_section"]

ZIPF_OFFSET = 10       # column j drawn with probability ~ 1 / (j + 10): the head of a vocabulary is flatter
TOPIC_WORDS = 300      # columns of each class's own words ...
TOPIC_SHARE = 0.1      # ... the share of a row's draws taken from them (measured at 10,000 x 20,000: 83% held-out
                       # accuracy after 10 adam epochs; 0.05 left it at 15%, 0.2 with 200 words at 100%)
TEST_SHARE = 0.1         # rows held out for the fit's accuracy
SPEEDUP_TARGET = 5.0     # issue 15: scikit-learn's fit time / mlpgrad's >= this ...
ACCURACY_MARGIN = 0.01   # ... with mlpgrad's held-out accuracy at most this below scikit-learn's


@dataclass(frozen=True)
class SparseShape:
    name: str
    n: int           # rows
    d0: int          # columns
    density: float   # draws per row / d_0
    hidden: int      # hidden units
    classes: int     # softmax outputs
    dense_n: int     # rows of the densified subset
    epochs: int      # max_iter of the fits

    @property
    def sizes(self) -> tuple:
        return (self.d0, self.hidden, self.classes)


FULL = SparseShape("text", 50_000, 100_000, 0.001, 100, 20, 2_000, 10)  # dense subset: 2,000 x 100,000 x 4 B = 800 MB
QUICK = SparseShape("text_quick", 2_000, 5_000, 0.01, 16, 5, 200, 2)


# -- the problem -----------------------------------------------------------------------------------------------------

def text_like_csr(n: int, d0: int, density: float, classes: int, rng: np.random.Generator, dtype=np.float32):
    """(X, y): X a canonical CSR matrix (n, d0) of dtype with int64 indices (``_checks.check_X``'s form, so that
    mlpgrad takes its arrays as they are), y (n,) int64 classes; per row round(density d0) column draws, a share
    TOPIC_SHARE from its class's words, the others of Zipf-like popularity; repeats summed, values 1 + Exp(1) per
    draw, rows scaled to unit L2 norm."""
    import scipy.sparse

    from ._checks import check_X

    per_row = max(1, round(density * d0))
    y = rng.integers(0, classes, n)
    p = 1.0 / (np.arange(d0) + ZIPF_OFFSET)
    cols = rng.choice(d0, size=(n, per_row), p=p / p.sum())
    topics = rng.choice(d0, size=(classes, min(TOPIC_WORDS, d0 // classes)), replace=False)
    words = topics[y[:, None], rng.integers(0, topics.shape[1], (n, per_row))]
    cols = np.where(rng.random((n, per_row)) < TOPIC_SHARE, words, cols)
    X = scipy.sparse.csr_matrix((1.0 + rng.exponential(size=n * per_row), (np.repeat(np.arange(n), per_row),
                                                                           cols.ravel())), shape=(n, d0))
    X.sum_duplicates()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    return check_X(scipy.sparse.diags(1.0 / norms) @ X, d0, np.dtype(dtype)), y


@dataclass
class Problem:
    shape: SparseShape
    X: object        # (n, d0) canonical float32 CSR
    y: np.ndarray    # (n,) int64 labels
    weights: List[np.ndarray]
    biases: List[np.ndarray]
    threads: Optional[int]

    @property
    def nnz(self) -> int:
        return int(self.X.nnz)


def make_problem(shape: SparseShape, threads: Optional[int] = None, seed: int = bench.SEED) -> Problem:
    rng = np.random.default_rng(seed)
    X, y = text_like_csr(shape.n, shape.d0, shape.density, shape.classes, rng)
    sizes = shape.sizes
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [(0.1 * rng.standard_normal(b)).astype(np.float32) for b in sizes[1:]]
    return Problem(shape, X, y, Ws, bs, threads)


# -- per call of loss_and_grad ---------------------------------------------------------------------------------------

def _mlpgrad_call(p: Problem, X, y) -> Callable:
    from . import api

    def call():
        return api.loss_and_grad(p.weights, p.biases, X, y, head="softmax", n_threads=p.threads)
    return call


def _torch_call(torch, p: Problem) -> Callable:
    """torch's loss and parameter gradients with X a sparse CSR tensor (its arrays shared with p.X)."""
    F = torch.nn.functional
    X = torch.sparse_csr_tensor(torch.from_numpy(p.X.indptr), torch.from_numpy(p.X.indices),
                                torch.from_numpy(p.X.data), size=p.X.shape)
    Ws = [torch.from_numpy(W).requires_grad_() for W in p.weights]
    bs = [torch.from_numpy(b).requires_grad_() for b in p.biases]
    y = torch.from_numpy(p.y)

    def call():
        h = torch.sigmoid(X @ Ws[0] + bs[0])
        for W, b in zip(Ws[1:-1], bs[1:-1]):
            h = torch.sigmoid(torch.addmm(b, h, W))
        loss = F.cross_entropy(torch.addmm(bs[-1], h, Ws[-1]), y, reduction="sum")
        g = torch.autograd.grad(loss, Ws + bs)
        L = len(Ws)
        return float(loss), Gradients([t.numpy() for t in g[:L]], [t.numpy() for t in g[L:]], None)
    return call


def _calls(p: Problem, peers: List[str], log, notes: List[str]) -> tuple:
    """({name: call}, {name: max relative error against mlpgrad on the CSR X of the same rows}, ok)."""
    m = p.shape.dense_n
    calls = {"sparse": _mlpgrad_call(p, p.X, p.y), "dense": _mlpgrad_call(p, p.X[:m].toarray(), p.y[:m])}
    if "torch" in peers:
        torch = bench._setup_torch(p.threads)
        if torch is None:
            notes.append(f"torch left out: not importable ({bench._PEER_STATE['torch'].get('error')})")
        else:
            with warnings.catch_warnings():  # "sparse CSR tensor support is in beta state", invariant checks off
                warnings.simplefilter("ignore", UserWarning)
                calls["torch"] = _torch_call(torch, p)
    errs, ok = {}, True
    sparse_all, sparse_rows = calls["sparse"](), _mlpgrad_call(p, p.X[:m], p.y[:m])()
    for name, fn in calls.items():
        if name == "sparse":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            got = fn()
        e = bench._compare(got, sparse_rows if name == "dense" else sparse_all)
        worst = max(e, key=e.get)
        errs[name] = e[worst]
        if not e[worst] <= bench.TOLERANCE["float32"]:
            ok = False
            log(f"WARNING: {name} disagrees with mlpgrad on the sparse X ({p.shape.name}): relative error "
                f"{e[worst]:.2e} in {worst} > {bench.TOLERANCE['float32']:.0e}")
    return calls, errs, ok


# -- the fits --------------------------------------------------------------------------------------------------------

def _fit_one(make, X_train, y_train, X_test, y_test) -> dict:
    """One fit, timed; its held-out accuracy; or the error that stopped it."""
    try:
        from sklearn.exceptions import ConvergenceWarning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            clf = make().fit(X_train, y_train)
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "accuracy": float(clf.score(X_test, y_test)), "epochs": int(clf.n_iter_)}
    except Exception as exc:  # mlpgrad's estimator before it takes a sparse X
        return {"error": f"{type(exc).__name__}: {exc}"}


def _fits(p: Problem) -> Dict[str, dict]:
    import mlpgrad
    from sklearn.neural_network import MLPClassifier

    s = p.shape
    n_train = s.n - max(1, round(TEST_SHARE * s.n))
    split = (p.X[:n_train], p.y[:n_train], p.X[n_train:], p.y[n_train:])
    common = dict(hidden_layer_sizes=(s.hidden,), max_iter=s.epochs, random_state=0)
    return {"mlpgrad": _fit_one(lambda: mlpgrad.MLPClassifier(**common, n_threads=p.threads), *split),
            "sklearn": _fit_one(lambda: MLPClassifier(activation="logistic", **common), *split)}


# -- the section -----------------------------------------------------------------------------------------------------

def _targets(fits: Dict[str, dict]) -> List[dict]:
    mine, theirs = fits["mlpgrad"], fits["sklearn"]
    both = "seconds" in mine and "seconds" in theirs
    speedup = theirs["seconds"] / mine["seconds"] if both else None
    gap = mine["accuracy"] - theirs["accuracy"] if both else None
    return [ps._target("scikit-learn fit time / mlpgrad's", speedup, ">=", SPEEDUP_TARGET, bench._fmt_ratio),
            ps._target("held-out accuracy, mlpgrad - scikit-learn", gap, ">=", -ACCURACY_MARGIN,
                       lambda x: f"{x:+.3f}")]


def run(shape: Optional[SparseShape] = None, threads: Optional[int] = None, repeat: Optional[int] = None, *,
        quick: bool = False, settle: float = bench.SETTLE, log: Callable = print,
        progress: Optional[Callable] = None, peers=(), fit: bool = True) -> dict:
    """The sparse section: {"row": per-call times and fits, "notes": [...]}.

    ``shape``: FULL by default (QUICK with ``quick``). ``peers``: ("torch",), "auto" (torch when installed) or ()
    (none). ``fit=False`` leaves out the estimators' fits. With ``threads``, NumPy's BLAS (scikit-learn's dense
    products) is limited to as many threads (threadpoolctl).
    """
    shape = shape or (QUICK if quick else FULL)
    if peers == "auto":
        peers = ["torch"] if "torch" in bench.available_peers() else []
    unknown = [name for name in peers if name != "torch"]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; the sparse section has torch only")
    t0, notes = time.perf_counter(), []
    p = make_problem(shape, threads)
    calls, errs, ok = _calls(p, list(peers), log, notes)
    stats = bench._stats(bench._time_rounds(calls, repeat, quick, settle))
    rows = {"sparse": shape.n, "dense": shape.dense_n, "torch": shape.n}
    row = {"config": shape.name, "n": shape.n, "d0": shape.d0, "nnz": p.nnz, "density": p.nnz / (shape.n * shape.d0),
           "sizes": list(shape.sizes), "dtype": "float32", "threads": threads, **stats,
           "rows": {name: rows[name] for name in stats["ms"]},
           "ms_at_n": {name: v * shape.n / rows[name] for name, v in stats["ms"].items()},
           "max_rel_err": errs, "ok": ok}
    row["vs_sparse"] = {name: v / row["ms_at_n"]["sparse"] for name, v in row["ms_at_n"].items()}
    if progress is not None:
        progress(f"sparse {shape.name}: per-call times of {len(calls)} implementations in "
                 f"{time.perf_counter() - t0:.1f} s")
    if fit:
        limiter = None
        if threads is not None:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=threads, user_api="blas")
        try:
            row["fit"] = _fits(p)
        finally:
            if limiter is not None:
                limiter.restore_original_limits()
        row["targets"] = _targets(row["fit"])
        notes += [f"{name}'s MLPClassifier on the sparse X: {f['error']}" for name, f in row["fit"].items()
                  if "error" in f]
        if progress is not None:
            progress(f"sparse {shape.name}: fits in {time.perf_counter() - t0:.1f} s")
    row["seconds"] = time.perf_counter() - t0
    return {"row": row, "notes": notes}


# -- tables ----------------------------------------------------------------------------------------------------------

LABELS = {"sparse": "mlpgrad, CSR X", "dense": "mlpgrad, dense X", "torch": "torch.sparse CSR X"}


def format_calls(row: dict) -> str:
    head = ["implementation", "rows", "ms per call", f"ms at N = {row['n']}", "time / mlpgrad CSR's"]
    body = [[LABELS[name], str(row["rows"][name]), bench._fmt_ms(row["ms"][name]),
             bench._fmt_ms(row["ms_at_n"][name]), bench._fmt_ratio(row["vs_sparse"][name])] for name in row["ms"]]
    return bench._markdown(head, body, [False, True, True, True, True])


def format_fit(row: dict) -> str:
    if "fit" not in row:
        return ""
    head = ["estimator", "epochs", "fit s", "held-out accuracy", "fit time / mlpgrad's"]
    fits, body = row["fit"], []
    mine = fits["mlpgrad"].get("seconds")
    for name, label in (("mlpgrad", "mlpgrad.MLPClassifier"), ("sklearn", "sklearn MLPClassifier (logistic)")):
        f = fits[name]
        if "error" in f:
            body.append([label, "-", "n/a", "n/a", "n/a"])
            continue
        body.append([label, str(f["epochs"]), f"{f['seconds']:.2f}", f"{f['accuracy']:.3f}",
                     bench._fmt_ratio(f["seconds"] / mine) if mine else "-"])
    return bench._markdown(head, body, [False, True, True, True, True])


def format_targets(row: dict) -> str:
    if "targets" not in row:
        return ""
    head = ["measure", "value", "target", "met"]
    body = []
    for t in row["targets"]:
        met = "n/a" if t["value"] is None else ("met" if t["met"] else "not met")
        body.append([t["measure"], t.get("text", "n/a"), t["target"], met])
    return bench._markdown(head, body, [False, True, False, False])


def legend(row: dict) -> str:
    network = "-".join(map(str, row["sizes"]))
    return textwrap.fill(
        f"X: {row['n']} x {row['d0']} float32 CSR, {row['nnz']} nonzeros (density {100 * row['density']:.2g}%; "
        f"Zipf-like columns and {TOPIC_SHARE:.0%} topic words, unit rows), network {network} softmax. Per call: loss "
        "and parameter gradients (reduction sum, no dL/dX), median of interleaved timed calls; the dense X is the "
        "first rows densified, its time scaled to N rows. Fit: adam, batch 200, max_iter epochs on 90% of the rows, "
        f"accuracy on the other 10%. Target (issue 15): scikit-learn's fit time >= {SPEEDUP_TARGET:.0f}x mlpgrad's, "
        f"mlpgrad's accuracy at most {ACCURACY_MARGIN} below.", width=120)


def print_section(result: dict) -> None:
    row = result["row"]
    ps.print_tables([(f"sparse X (issue 15): loss_and_grad per call, {row['config']}", format_calls(row)),
                     ("fit on the sparse X: mlpgrad against scikit-learn", format_fit(row)),
                     ("targets", format_targets(row))],
                    None, legend(row), result["notes"])


def run_command_section(args, configs, progress=None, peak=None) -> dict:
    """``bench --sparse``: FULL (QUICK with --quick), --threads, --repeat, --settle, --peers; prints the tables,
    returns the JSON part."""
    peers = "auto" if args.peers == "auto" else (["torch"] if "torch" in (args.peers or []) else [])
    result = run(None, args.threads, args.repeat, quick=args.quick, settle=args.settle, log=print,
                 progress=progress, peers=peers)
    print_section(result)
    return result
