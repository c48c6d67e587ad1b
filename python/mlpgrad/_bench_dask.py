"""``python -m mlpgrad bench-dask``: gradient evaluations per second of ``mlpgrad.dask.loss_and_grad`` on local
Dask clusters of 1 and 2 worker processes, over a data set larger than one worker's memory limit.

The data is never materialised, neither on the client nor whole on a worker: each row block of X (uniform in
[-1, 1)) and of y (0/1 labels) is generated on a worker from its own seed ``(seed, block index)`` by
``dask.array.map_blocks``, inside every evaluation, and is dropped once its task has used it. So an evaluation
is "read every block from the source, compute its partial sums, reduce": the generation stands for the read of
real data (its cost is shown separately, "generate + read"). The results of every evaluation, on every cluster
size, are compared bit for bit (the same row chunks give the same bits: mlpgrad.dask's guarantee).

Each worker: ``threads_per_worker=1`` (distributed's nanny also sets ``OMP_NUM_THREADS=1`` in it), so each task's
native call gets 1 thread by mlpgrad.dask's rule. Set ``OMP_NUM_THREADS`` explicitly for the command and run it
on a quiet machine: the workers are separate processes that share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

__all__ = ["add_arguments", "run_command"]

DEFAULTS = dict(rows=4_000_000, layers=(100, 64, 1), chunk_rows=50_000, memory_limit="512MiB", workers=(1, 2),
                repeat=3, warmup=1, seed=0, dtype="float32", head="sigmoid")
QUICK = dict(rows=40_000, chunk_rows=5_000, repeat=2, warmup=1)


# ------------------------------------------------------------------ data and network (the blocks run on workers)

def _x_block(block_info=None, *, seed, d, dtype_name):
    info = block_info[None]
    i, n = info["chunk-location"][0], info["chunk-shape"][0]
    x = np.random.default_rng([seed, i, 0]).random((n, d), dtype=np.dtype(dtype_name))
    x *= 2
    x -= 1
    return x


def _y_block(block_info=None, *, seed, k, head, dtype_name):
    info = block_info[None]
    i, n = info["chunk-location"][0], info["chunk-shape"][0]
    rng = np.random.default_rng([seed, i, 1])
    if head == "softmax":
        return rng.integers(0, k, size=n)
    return rng.integers(0, 2, size=(n,) if k == 1 else (n, k)).astype(dtype_name)


def make_data(rows, layers, chunk_rows, seed, dtype, head):
    """Lazy X (rows, d_0) and y, chunked by chunk_rows along the rows, generated block by block."""
    import dask.array as da

    d, k = layers[0], layers[-1]
    row_chunks = (chunk_rows,) * (rows // chunk_rows) + ((rows % chunk_rows,) if rows % chunk_rows else ())
    X = da.map_blocks(_x_block, chunks=(row_chunks, (d,)), dtype=dtype, meta=np.empty((0, 0), dtype),
                      seed=seed, d=d, dtype_name=np.dtype(dtype).name)
    y_dtype = np.int64 if head == "softmax" else np.dtype(dtype)
    y_chunks = (row_chunks,) if head == "softmax" or k == 1 else (row_chunks, (k,))
    y = da.map_blocks(_y_block, chunks=y_chunks, dtype=y_dtype, meta=np.empty((0,) * len(y_chunks), y_dtype),
                      seed=seed, k=k, head=head, dtype_name=np.dtype(dtype).name)
    return X, y


def make_network(layers, seed, dtype):
    rng = np.random.default_rng([seed, 2])
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(layers[:-1], layers[1:])]
    bs = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in layers[1:]]
    return Ws, bs


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _worker_facts():
    from . import dask as mdask
    return {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "task_threads": mdask._task_threads(None)}


# ------------------------------------------------------------------ the measurement

def _flat(loss, grads):
    return float(loss), np.concatenate([g.ravel() for g in grads.weights + grads.biases])


def _parse_bytes(text: str) -> int:
    from dask.utils import parse_bytes
    return int(parse_bytes(text))


def measure(n_workers, X, y, Ws, bs, head, memory_limit, repeat, warmup, progress):
    """Start a LocalCluster of n_workers processes (1 thread each, memory_limit each), time warm-up + repeat
    evaluations and one generate+read pass; return the row and the results of every evaluation."""
    import dask
    from distributed import Client, LocalCluster

    import mlpgrad.dask as mdask

    t0 = time.perf_counter()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster, set_as_default=False) as client, client.as_current():
        startup = time.perf_counter() - t0
        facts = client.run(_worker_facts)
        results, times = [], []
        for i in range(warmup + repeat):
            t = time.perf_counter()
            out = mdask.loss_and_grad(Ws, bs, X, y, head=head)
            dt = time.perf_counter() - t
            results.append(_flat(*out))
            if i >= warmup:
                times.append(dt)
            progress(f"  {n_workers} worker(s): evaluation {i + 1}/{warmup + repeat} "
                     f"({'warm-up' if i < warmup else 'timed'}): {dt:.3f} s")
        t = time.perf_counter()
        dask.compute(X.sum(dtype=np.float64), y.sum())
        gen = time.perf_counter() - t
        progress(f"  {n_workers} worker(s): generate + read pass: {gen:.3f} s")
        peaks = client.run(_peak_rss)
    row = {"workers": n_workers, "seconds": times, "median_s": statistics.median(times), "min_s": min(times),
           "max_s": max(times), "generate_read_s": gen, "startup_s": startup,
           "peak_worker_rss": max(peaks.values()), "worker_facts": sorted({tuple(sorted(f.items()))
                                                                           for f in facts.values()})}
    return row, results


def format_table(rows, rows_n, nbytes, limit, n_blocks) -> str:
    head = ("| workers | rows | data | memory limit / worker | blocks | s / eval (median) | min - max | evals/s "
            "| rows/s | scaling vs 1 | generate + read s | peak worker RSS |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    base = next((r["median_s"] for r in rows if r["workers"] == 1), None)
    for r in rows:
        scale = f"{base / r['median_s']:.2f}x" if base else "-"
        lines.append(f"| {r['workers']} | {rows_n:,} | {nbytes / 2**30:.2f} GiB | {limit / 2**20:.0f} MiB | {n_blocks} "
                     f"| {r['median_s']:.3f} | {r['min_s']:.3f} - {r['max_s']:.3f} | {1 / r['median_s']:.3f} "
                     f"| {rows_n / r['median_s']:,.0f} | {scale} | {r['generate_read_s']:.3f} "
                     f"| {r['peak_worker_rss'] / 2**20:.0f} MiB |")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    """``python -m mlpgrad bench-dask``: ``args`` from :func:`add_arguments`."""
    try:
        import dask
        import distributed
    except ImportError as exc:
        print(f'bench-dask needs the "dask" extra ({exc}): pip install "mlpgrad[dask]"', file=sys.stderr)
        return 1
    import mlpgrad

    quick = args.quick
    rows = args.rows if args.rows is not None else (QUICK if quick else DEFAULTS)["rows"]
    chunk_rows = args.chunk_rows if args.chunk_rows is not None else (QUICK if quick else DEFAULTS)["chunk_rows"]
    repeat = args.repeat if args.repeat is not None else (QUICK if quick else DEFAULTS)["repeat"]
    warmup = args.warmup if args.warmup is not None else (QUICK if quick else DEFAULTS)["warmup"]
    layers, dtype, head = args.layers, np.dtype(args.dtype), args.head
    limit = _parse_bytes(args.memory_limit)

    X, y = make_data(rows, layers, chunk_rows, args.seed, dtype, head)
    Ws, bs = make_network(layers, args.seed, dtype)
    nbytes = X.nbytes + y.nbytes
    n_blocks = X.numblocks[0]

    def progress(msg):
        print(msg, file=sys.stderr, flush=True)

    # the native core alone on one block in memory, 1 thread: the compute in an evaluation, without Dask
    Xb, yb = (a.blocks[0].compute(scheduler="sync") for a in (X, y))
    mlpgrad.loss_and_grad(Ws, bs, Xb, yb, head=head, n_threads=1)
    native = []
    for _ in range(max(3, repeat)):
        t = time.perf_counter()
        mlpgrad.loss_and_grad(Ws, bs, Xb, yb, head=head, n_threads=1)
        native.append(time.perf_counter() - t)
    native_block = statistics.median(native)
    native_pass = native_block * rows / Xb.shape[0]
    del Xb, yb

    info = mlpgrad.build_info()
    print(f"mlpgrad {info['version']} bench-dask: mlpgrad.dask.loss_and_grad, network {'-'.join(map(str, layers))} "
          f"{head} head, {dtype.name}, reduction sum")
    print(f"- python {platform.python_version()}, dask {dask.__version__}, distributed {distributed.__version__}, "
          f"numpy {np.__version__}; {os.cpu_count()} CPUs; SIMD {info['simd']}; OpenMP {info['openmp']}")
    print(f"- OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} (client)")
    print(f"- data: X {rows:,} x {layers[0]} + y = {nbytes / 2**30:.2f} GiB in {n_blocks} row blocks of {chunk_rows:,}; "
          f"{nbytes / limit:.1f}x one worker's memory limit ({args.memory_limit})"
          + ("" if nbytes > limit else "  NOTE: not larger than the limit (--quick or small --rows)"))
    print(f"- generated on the workers, block by block, in every evaluation (seeds ({args.seed}, block)); "
          f"{warmup} warm-up + {repeat} timed evaluations per cluster")
    print(f"- native core alone, in memory, 1 thread: {native_block * 1e3:.1f} ms per block of {chunk_rows:,} rows "
          f"= {native_pass:.3f} s of compute per pass over all rows", flush=True)

    rows_out, all_results = [], []
    for w in args.workers:
        row, results = measure(w, X, y, Ws, bs, head, args.memory_limit, repeat, warmup, progress)
        rows_out.append(row)
        all_results.extend(results)
        facts = ", ".join(f"OMP_NUM_THREADS={f[0][1]} native threads per task={f[1][1]}"
                          for f in row["worker_facts"])
        print(f"- {w} worker(s): started in {row['startup_s']:.1f} s; in the workers: {facts}", flush=True)

    loss0, grad0 = all_results[0]
    identical = all(loss == loss0 and np.array_equal(grad, grad0) for loss, grad in all_results)
    print()
    print(format_table(rows_out, rows, nbytes, limit, n_blocks))
    print()
    print(f"- every evaluation on every cluster gave bit-identical loss and gradients: {'yes' if identical else 'NO'} "
          f"(loss {loss0:.10g})")
    two = {r["workers"]: r["median_s"] for r in rows_out}
    if 1 in two and 2 in two:
        print(f"- scaling 2 workers vs 1: {two[1] / two[2]:.2f}x")
    print(f"- client peak RSS: {_peak_rss() / 2**20:.0f} MiB (the data is never gathered on the client)")
    try:
        print("- load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    except OSError:  # pragma: no cover
        pass
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "rows": rows, "layers": list(layers), "dtype": dtype.name, "head": head,
                       "chunk_rows": chunk_rows, "memory_limit": limit, "bytes": nbytes,
                       "native_block_s": native_block, "identical": identical,
                       "results": [{k: v for k, v in r.items() if k != "worker_facts"} for r in rows_out]},
                      f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0 if identical else 1


def _layers(text):
    try:
        sizes = tuple(int(s) for s in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100-64-1, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two sizes >= 1, got {text!r}")
    return sizes


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _worker_list(text):
    try:
        counts = tuple(_positive(s) for s in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected worker counts like 1,2, got {text!r}") from None
    return counts


DESCRIPTION = """\
Time mlpgrad.dask.loss_and_grad on LocalClusters (processes, 1 thread per worker) of 1 and 2 workers over
data larger than one worker's memory limit, generated block by block on the workers. Needs the dask extra:
pip install "mlpgrad[dask]"."""
EPILOG = "Set OMP_NUM_THREADS explicitly (e.g. OMP_NUM_THREADS=1) and run on a quiet machine."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m mlpgrad bench-dask``."""
    d = DEFAULTS
    p.add_argument("--rows", type=_positive, metavar="N", help=f"rows of X (default {d['rows']:,}; --quick "
                   f"{QUICK['rows']:,})")
    p.add_argument("--layers", type=_layers, default=d["layers"], metavar="D0-D1-...",
                   help="layer sizes; d_0 is X's width (default 100-64-1)")
    p.add_argument("--head", choices=["sigmoid", "softmax"], default=d["head"], help="head (default sigmoid)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=d["dtype"], help="dtype (default float32)")
    p.add_argument("--chunk-rows", type=_positive, metavar="R",
                   help=f"rows per block (default {d['chunk_rows']:,}; --quick {QUICK['chunk_rows']:,})")
    p.add_argument("--memory-limit", default=d["memory_limit"], metavar="BYTES",
                   help="memory limit of each worker (default 512MiB)")
    p.add_argument("--workers", type=_worker_list, default=d["workers"], metavar="1,2",
                   help="cluster sizes to time, in worker processes (default 1,2)")
    p.add_argument("--repeat", type=_positive, metavar="R", help="timed evaluations per cluster (default 3)")
    p.add_argument("--warmup", type=_non_negative, metavar="W", help="untimed evaluations first (default 1)")
    p.add_argument("--seed", type=_non_negative, default=d["seed"], help="seed of the data and network (default 0)")
    p.add_argument("--quick", action="store_true", help="a small, fast run (a smoke test)")
    p.add_argument("--json", metavar="FILE", help="also write the settings and timings as JSON to FILE")
