"""The benchmark's machinery runs and validates (timings themselves are never asserted).

The peers (torch, jax) and matplotlib are optional: tests that need one skip when it is absent,
and nothing here requires torch to be installed.
"""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import math

from mlpgrad import _bench_curvature as curvature
from mlpgrad import _bench_per_sample as per_sample
from mlpgrad import _bench_sparse as sparse
from mlpgrad import _bench_training as training
from mlpgrad import bench, cli

QUIET = dict(settle=0, log=lambda *a, **k: None)


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def test_bench_smoke_rows_validate(tmp_path):
    rows = bench.run(["smoke", "smoke_sigmoid"], "both", None, 3, settle=0, log=lambda *a, **k: None)
    assert len(rows) == 4
    for row in rows:
        assert row["ok"], row
        assert row["ms"]["native"] > 0 and row["ms"]["reference"] > 0


@pytest.mark.slow  # the default GEMM measurement: a 2048^3 matmul
def test_bench_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--config", "smoke", "--repeat", "2", "--settle", "0", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "rows" in data and data["rows"][0]["config"] == "smoke"
    assert "| smoke" in capsys.readouterr().out


def test_bench_smoke_with_importable_peers():
    """Whatever peers are installed run and agree with the reference; absent ones are left out."""
    peers = bench.available_peers()
    rows = bench.run(["smoke", "smoke_sigmoid"], "both", 1, 2, peers="auto", **QUIET)
    assert len(rows) == 4
    for row in rows:
        assert row["ok"], row
        present = set(row["ms"])
        assert {"reference", "native"} <= present <= {"reference", "native", *bench.PEERS}
        for name in present - {"reference", "native"}:
            assert name in peers
            assert row["max_rel_err"][name] <= row["tolerance"]
            assert row["speedup_vs"][name] > 0
    table = bench.format_table(rows)
    assert "vs ref" in table and "native GFLOP/s" in table


@pytest.mark.parametrize("peer", bench.PEERS)
def test_bench_peer_matches_reference(peer):
    if not _installed(peer):
        pytest.skip(f"{peer} is not installed")
    rows = bench.run(["smoke", "smoke_sigmoid"], "both", None, 1, peers=[peer], **QUIET)
    if any(peer not in r["ms"] for r in rows):
        pytest.skip(f"{peer} is installed but not importable: {bench._PEER_STATE.get(peer)}")
    for row in rows:
        assert row["ok"] and row["max_rel_err"][peer] <= row["tolerance"], row


def test_bench_missing_peer_is_left_out(monkeypatch):
    """A peer that cannot be imported is not an error: its column is absent (torch not needed)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    monkeypatch.setattr(bench, "_PEER_STATE", {})
    rows = bench.run(["smoke"], "float32", None, 1, peers=["torch"], **QUIET)
    assert rows[0]["ok"] and "torch" not in rows[0]["ms"]
    assert "error" in bench._PEER_STATE["torch"]
    info = bench.setup_peers(["torch"], None)
    assert "not importable" in "\n".join(bench.format_header(bench.header_info(None, info)))


def test_bench_no_reference_and_none_peers(capsys):
    assert cli.main(["bench", "--config", "smoke", "--repeat", "1", "--settle", "0", "--peers", "none",
                       "--no-reference", "--gemm", "none"]) == 0
    out = capsys.readouterr().out
    assert "| smoke" in out and "ref ms" not in out and "torch ms" not in out


TINY_GEMM = [("square", 16, 16, 16, False), ("t", 8, 16, 4, True)]
PEAK = {"float32": 100.0, "float64": 50.0}  # a stand-in for measure_peak where its value does not matter


def test_bench_gemm_numpy_tiny():
    gemm = bench.measure_gemm("both", 1, "numpy", shapes=TINY_GEMM, repeat=2, settle=0)
    assert gemm["backend"] == "numpy.matmul" and gemm["backends"] == ["numpy.matmul"] and len(gemm["results"]) == 4
    assert set(gemm["peak"]) == {"float32", "float64"} and all(g > 0 for g in gemm["peak"].values())
    assert gemm["best"] == {"float32": "numpy.matmul", "float64": "numpy.matmul"}
    assert bench.gemm_rate(gemm, "float64") == gemm["peak"]["float64"] and bench.gemm_rate(gemm, "float64", "x") is None
    rows = bench.run(["smoke"], "float32", None, 1, gemm_peak=gemm["peak"], **QUIET)
    assert rows[0]["native_pct_gemm"] > 0 and "% of best GEMM" in bench.format_table(rows)
    assert "best GEMM" in "\n".join(bench.format_gemm(gemm))


def test_bench_gemm_auto_keeps_the_best_backend():
    """auto: NumPy's matmul and torch.mm when importable; a shape's rate is the best of them."""
    gemm = bench.measure_gemm("float32", 1, "auto", shapes=TINY_GEMM, repeat=2, settle=0)
    torch_ok = bench._setup_torch(1) is not None
    assert gemm["backends"] == ["numpy.matmul"] + (["torch.mm"] if torch_ok else [])
    assert len(gemm["results"]) == 2 * len(gemm["backends"])
    square = [r for r in gemm["results"] if r["label"] == "square"]
    assert gemm["peak"]["float32"] == max(r["gflops"] for r in square)
    assert gemm["best"]["float32"] == max(square, key=lambda r: r["gflops"])["backend"]
    text = "\n".join(bench.format_gemm(gemm))
    assert all(f"float32 {b}:" in text for b in gemm["backends"])


def test_bench_gemm_auto_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(bench, "_PEER_STATE", {})
    gemm = bench.measure_gemm("float32", 1, "auto", shapes=TINY_GEMM, repeat=1, settle=0)
    assert gemm["backends"] == ["numpy.matmul"] and gemm["best"] == {"float32": "numpy.matmul"}
    with pytest.raises(RuntimeError, match="torch is not importable"):
        bench.measure_gemm("float32", 1, "torch", shapes=TINY_GEMM, repeat=1, settle=0)


def test_bench_fma_peak_and_header():
    """The FMA peak is a positive rate per dtype; the header names the CPU and prints the peak."""
    peak = bench.measure_peak("both", 1)
    assert set(peak) == {"float32", "float64"}
    assert all(math.isfinite(g) and g > 0 for g in peak.values())
    assert bench.cpu_model()
    lines = "\n".join(bench.format_header(bench.header_info(1, {}, peak)))
    assert f"CPU: {bench.cpu_model()}" in lines and "FMA peak" in lines and "float64" in lines


def test_bench_table_shows_peak_and_best_gemm():
    """Every row of the main table has "% of peak" and "% of best GEMM", '-' when a yardstick was not measured."""
    rows = bench.run(["smoke", "smoke_sigmoid"], "both", 1, 1, gemm_peak=PEAK, fma_peak=PEAK, **QUIET)
    for r in rows:
        assert r["native_pct_peak"] == pytest.approx(100 * r["gflops"]["native"] / PEAK[r["dtype"]])
        assert r["native_pct_gemm"] == pytest.approx(r["native_pct_peak"])
    table = bench.format_table(rows)
    assert "| % of peak | % of best GEMM |" in table
    bare = bench.format_table(bench.run(["smoke"], "float32", 1, 1, **QUIET))
    assert bare.splitlines()[-1].endswith("|         - |              - |")


def test_bench_scaling_and_linear_tiny():
    srows = bench.scaling(["smoke"], "float32", (1, 2), 2, **QUIET)
    assert srows[0]["ok"] and srows[0]["speedup"] > 0 and "meets" in bench.format_scaling(srows)
    lrows = bench.linear("smoke", "float32", 1, (64, 128, 256), 2, settle=0)
    assert [r["n"] for r in lrows] == [64, 128, 256] and lrows[-1]["per_row_vs_largest"] == 1.0
    assert "ns/row" in bench.format_linear(lrows)


def test_bench_cli_modes_json(tmp_path, capsys):
    out = tmp_path / "modes.json"
    assert cli.main(["bench", "--scaling", "--config", "smoke", "--linear", "smoke", "--quick",
                       "--repeat", "1", "--settle", "0", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["scaling"][0]["config"] == "smoke" and data["linear"][0]["config"] == "smoke"
    assert "rows" not in data  # the modes replace the main table
    assert "thread scaling" in capsys.readouterr().out


def test_bench_plot_sizes():
    assert bench.plot_sizes("mnist")[0] == 64 and bench.plot_sizes("mnist")[-1] == 2 ** 16
    assert bench.plot_sizes("seed1_small")[-1] == 2 ** 20
    assert bench.plot_sizes("smoke", 256) == [64, 128, 256]


@pytest.mark.slow  # matplotlib and a 1024^3 GEMM measurement
def test_bench_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    assert cli.main(["bench", "--plot", str(png), "--plot-config", "smoke", "--plot-max-n", "256",
                       "--dtype", "both", "--peers", "none", "--gemm", "numpy", "--quick", "--repeat", "1",
                       "--settle", "0"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


def test_python_m_mlpgrad_lists_the_commands():
    """The command root as a user runs it: no command prints the usage (exit 0), naming every command; an
    unknown command is a usage error (exit 2)."""
    out = subprocess.run([sys.executable, "-m", "mlpgrad"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m mlpgrad" in out.stdout
    for name in cli.COMMANDS:
        assert f"    {name}" in out.stdout, name
    bad = subprocess.run([sys.executable, "-m", "mlpgrad", "no-such-command"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'no-such-command'" in bad.stderr


def test_bench_cli_errors_are_usage_errors(capsys):
    """An inconsistent bench command line is reported by the bench command's own parser (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--n", "5"])
    assert exc.value.code == 2
    assert "python -m mlpgrad bench: error: --n and --head describe the --layers network" in capsys.readouterr().err


# -- the per-sample section (bench --per-sample, issue 12) ---------------------------------------------------------


def test_per_sample_flop_formulas_by_hand():
    """4-3-2, n = 10: products 12 and 6. Forward 2*10*18 = 360, deltas of layer 1 2*10*6 = 120; dW 360."""
    sizes = (4, 3, 2)
    assert per_sample.forward_backward_flops(sizes, 10) == 480
    assert per_sample.gradient_flops(sizes, 10) == 840 == bench.flop_count(sizes, 10, input_grad=False)
    assert per_sample.grad_dot_flops(sizes, 10, 1) == 480 + 2 * 10 * (5 * 3 + 4 * 2)
    assert per_sample.grad_dot_flops(sizes, 10, 16) == 480 + 16 * 2 * 10 * (5 * 3 + 4 * 2)
    assert per_sample.grad_gram_flops(sizes, 10) == 480 + 2 * 10 * 10 * (4 + 3 + 3 + 2)
    assert per_sample.grad_gram_flops(sizes, 10, 5) == 480 + 240 + 2 * 10 * 5 * 12
    assert per_sample.n_params(sizes) == 12 + 6 + 3 + 2


def test_per_sample_targets_met_and_gap():
    fmt = bench._fmt_ratio
    assert per_sample._target("a", 0.5, "<=", 0.8, fmt)["met"] is True
    t = per_sample._target("a", 1.6, "<=", 0.8, fmt)
    assert t["met"] is False and t["gap"] == pytest.approx(2.0)
    t = per_sample._target("b", 2.5, ">=", 5.0, fmt)
    assert t["met"] is False and t["gap"] == pytest.approx(2.0)
    assert per_sample._target("b", None, ">=", 5.0, fmt)["met"] is None


def test_per_sample_quick_validates_and_formats():
    """mlpgrad's per-sample functions on the tiny shapes, both dtypes, no peers (torch not needed): each agrees
    with mlpgrad.reference, every op is timed, every target has a value, the tables print."""
    result = per_sample.run(quick=True, dtypes="both", threads=1, settle=0, log=pytest.fail, peak=PEAK)
    rows = result["rows"]
    assert [(r["config"], r["dtype"]) for r in rows] == [
        ("smoke", "float32"), ("smoke", "float64"), ("smoke_sigmoid", "float32"), ("smoke_sigmoid", "float64")]
    for r in rows:
        assert r["ok"], r["max_rel_err"]
        assert set(r["ms"]) == set(per_sample.OPS) | {"copyto", "fill"} and all(v > 0 for v in r["ms"].values())
        assert r["ratio"]["norms"] == pytest.approx(r["ms"]["norms"] / r["ms"]["grad"])
        assert r["gb_s"]["psg"] > 0 and r["bytes"]["psg"] == r["n"] * r["n_params"] * (4 if r["dtype"] == "float32"
                                                                                         else 8)
        ratio_targets = [t for t in r["targets"] if "/ loss_and_grad" in t["measure"]]
        assert len(ratio_targets) == 4 and all(t["met"] in (True, False) for t in ratio_targets)
    text = (per_sample.format_times(rows) + per_sample.format_targets(rows) + per_sample.format_rates(rows))
    assert "| smoke_sigmoid" in text and "norms / loss_and_grad" in text and "GB/s written" in text
    assert all(r["fma_peak_gflops"] == PEAK[r["dtype"]] for r in rows) and "% of peak" in per_sample.format_rates(rows)
    assert per_sample.format_peers(rows) == ""


def test_per_sample_cli_quick_json(tmp_path, capsys):
    out = tmp_path / "ps.json"
    assert cli.main(["bench", "--per-sample", "--quick", "--peers", "none", "--gemm", "numpy", "--repeat", "2",
                     "--settle", "0", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "rows" not in data  # the mode replaces the main table
    section = data["per_sample"]
    assert [r["config"] for r in section["rows"]] == ["smoke", "smoke_sigmoid"]
    labels = [g["label"] for g in section["gemm"]["results"]]
    assert labels[0] == "square" and "smoke dot" in labels and "smoke_sigmoid gram" in labels
    for r in section["rows"]:
        assert set(r["gemm_gflops"]) == {"square", "dot", "gram"}
        assert r["calls"]["grad"] == 2
    text = capsys.readouterr().out
    assert "per-sample gradients (issue 12)" in text and "% of square GEMM" in text and "% of peak" in text
    assert all(r["fma_peak_gflops"] > 0 for r in section["rows"])


def test_per_sample_shapes():
    """The issue's shapes at their per-sample N; another config's N is cut to keep its (N, P) array bounded."""
    names = {s.name: (s.config.layers, s.config.n, s.gram_n) for s in per_sample.resolve_shapes(None)}
    assert names == {"mnist": ("784-256-256-10", 1024, 1024), "seed1_small": ("32-64-64-1", 8192, 1024),
                     "mid_sigmoid": ("100-50-50-1", 8192, 1024), "wide": ("1024-1024-1024-10", 128, 512)}
    (deep,) = per_sample.resolve_shapes(["deep_narrow"])
    assert deep.config.n * per_sample.n_params(deep.config.sizes) * 8 <= per_sample.PSG_MAX_BYTES
    (quick,) = per_sample.resolve_shapes(["mnist"], quick=True)
    assert quick.config.n == 1024 // bench.QUICK_FACTOR


def test_per_sample_missing_torch_leaves_peers_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(bench, "_PEER_STATE", {})
    result = per_sample.run(["smoke"], quick=True, settle=0, repeat=1, peers=["vmap_grads"], log=pytest.fail)
    assert result["rows"][0]["ok"] and "vmap_grads" not in result["rows"][0]["ms"]
    assert any("torch is not importable" in note for note in result["notes"])


def test_per_sample_peers_match_mlpgrad():
    """Whatever per-sample peers are installed (torch.func, Opacus, BackPACK) agree with mlpgrad."""
    peers = per_sample.available_peers()
    if not peers:
        pytest.skip("torch is not installed")
    result = per_sample.run(quick=True, dtypes="both", settle=0, repeat=1, peers="auto", log=pytest.fail)
    assert not result["notes"], result["notes"]
    for r in result["rows"]:
        assert r["ok"], r["max_rel_err"]
        assert set(peers) <= set(r["ms"])
    assert "BackPACK" in per_sample.format_peers(result["rows"]) or "backpack_l2" not in peers


# -- the curvature section (bench --curvature, issue 13) -----------------------------------------------------------


def test_curvature_flop_formulas_by_hand():
    """4-3-2, n = 10: products 12 and 6 (S = 18, S2 = 6). Forward 2*10*18 = 360, deltas 2*10*6 = 120. Per vector:
    hvp 2*10*(2*18 + 4*6) = 1200; ggn_vp 2*10*(2*18 + 2*6) = 960; ggn_diag per head column the deltas 2*10*6 = 120,
    then one squares' product 2*10*18 = 360."""
    sizes = (4, 3, 2)
    assert curvature.hvp_flops(sizes, 10, 1) == 360 + 120 + 1200
    assert curvature.hvp_flops(sizes, 10, 16) == 360 + 120 + 16 * 1200
    assert curvature.ggn_vp_flops(sizes, 10, 1) == 360 + 960
    assert curvature.ggn_vp_flops(sizes, 10, 16) == 360 + 16 * 960
    assert curvature.ggn_diag_flops(sizes, 10) == 360 + 2 * 120 + 360
    # the statement: on its shapes one hvp needs 1.9-2.4x the gradient's flops, one ggn_vp about 1.6x
    for config in curvature.SHAPES.values():
        grad = per_sample.gradient_flops(config.sizes, config.n)
        assert 1.85 < curvature.hvp_flops(config.sizes, config.n, 1) / grad < 2.4
        assert 1.5 < curvature.ggn_vp_flops(config.sizes, config.n, 1) / grad < 1.65


def test_curvature_quick_validates_and_formats():
    """mlpgrad's curvature functions on the tiny shapes, both dtypes, no peers (torch not needed): each agrees with
    mlpgrad.reference, every op is timed, every target without a peer or GEMM has a value, the tables print."""
    result = curvature.run(quick=True, dtypes="both", threads=1, settle=0, log=pytest.fail, peak=PEAK)
    rows = result["rows"]
    assert [(r["config"], r["n"], r["dtype"]) for r in rows] == [
        ("smoke", 100, "float32"), ("smoke", 100, "float64"), ("smoke_sigmoid", 100, "float32"),
        ("smoke_sigmoid", 100, "float64")]
    for r in rows:
        assert r["ok"], r["max_rel_err"]
        assert set(r["ms"]) == set(curvature.OPS) and all(v > 0 for v in r["ms"].values())
        assert r["ratio"]["hvp1"] == pytest.approx(r["ms"]["hvp1"] / r["ms"]["grad"])
        assert r["flops"]["hvp16"] == curvature.hvp_flops(r["sizes"], r["n"], curvature.VECTORS)
        targets = {t["measure"]: t for t in r["targets"]}
        assert targets["hvp(1) / loss_and_grad"]["met"] in (True, False)
        assert targets["ggn_vp(1) / loss_and_grad"]["met"] in (True, False)
        assert targets["BackPACK DiagGGNExact / ggn_diag"]["value"] is None  # no peers asked for
    text = curvature.format_times(rows) + curvature.format_targets(rows) + curvature.format_rates(rows)
    assert "| smoke_sigmoid" in text and "hvp(16) ms" in text and "- (peer absent)" in text
    assert all(r["fma_peak_gflops"] == PEAK[r["dtype"]] for r in rows) and "% of peak" in curvature.format_rates(rows)
    assert curvature.format_peers(rows) == ""


def test_curvature_cli_quick_json(tmp_path, capsys):
    out = tmp_path / "curv.json"
    assert cli.main(["bench", "--curvature", "--quick", "--peers", "none", "--gemm", "numpy", "--repeat", "2",
                     "--settle", "0", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "rows" not in data and "per_sample" not in data  # the mode replaces the main table
    section = data["curvature"]
    assert [(r["config"], r["n"]) for r in section["rows"]] == [("smoke", 100), ("smoke_sigmoid", 100)]
    assert [g["label"] for g in section["gemm"]["results"]] == ["square"]
    for r in section["rows"]:
        assert r["gemm_gflops"]["square"] > 0 and r["calls"]["grad"] == 2
        assert any(t["measure"] == "hvp(16) % of square GEMM" and t["value"] > 0 for t in r["targets"])
    text = capsys.readouterr().out
    assert "curvature (issue 13)" in text and "% square GEMM" in text and "R{dh}" in text and "% of peak" in text


def test_curvature_shapes():
    """The issue's shapes at the per-sample section's N; --quick divides a named shape's N as the bench does."""
    names = {c.name: (c.layers, c.n, c.head) for c in curvature.resolve_shapes(None)}
    assert names == {"mnist": ("784-256-256-10", 1024, "softmax"), "seed1_small": ("32-64-64-1", 8192, "sigmoid"),
                     "mid_sigmoid": ("100-50-50-1", 8192, "sigmoid")}
    (quick,) = curvature.resolve_shapes(["mnist"], quick=True)
    assert quick.n == 1024 // bench.QUICK_FACTOR
    assert [c.n for c in curvature.resolve_shapes(None, quick=True)] == [100, 100]


def test_curvature_missing_torch_leaves_peers_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(bench, "_PEER_STATE", {})
    result = curvature.run(["smoke"], quick=True, settle=0, repeat=1, peers=["func_hvp"], log=pytest.fail)
    assert result["rows"][0]["ok"] and "func_hvp" not in result["rows"][0]["ms"]
    assert any("torch is not importable" in note for note in result["notes"])


def test_curvature_peers_match_mlpgrad():
    """Whatever curvature peers are installed (torch.func, curvlinops, BackPACK) agree with mlpgrad."""
    peers = curvature.available_peers()
    if not peers:
        pytest.skip("torch is not installed")
    result = curvature.run(quick=True, dtypes="both", settle=0, repeat=1, peers="auto", log=pytest.fail)
    assert not result["notes"], result["notes"]
    for r in result["rows"]:
        assert r["ok"], r["max_rel_err"]
        assert set(peers) <= set(r["ms"])
    if "backpack_diag" in peers:
        assert all(t["value"] > 0 for r in result["rows"] for t in r["targets"] if "BackPACK" in t["measure"])


# -- the training section (bench --training, issue 14) -------------------------------------------------------------


def test_training_step_flops_by_hand():
    """64-100-10, B = 200: products 6400 and 1000 (S = 7400, S2 = 1000). Forward 2*200*7400, dW the same, deltas of
    layer 1 2*200*1000 (no dL/dX): 6.32 MFLOP per step."""
    (digits,) = training.resolve_shapes(["digits"])
    assert (digits.config.sizes, digits.config.n, digits.batch, digits.steps) == ((64, 100, 10), 1797, 200, 9)
    assert bench.flop_count(digits.config.sizes, 200, input_grad=False) == 2 * 200 * (2 * 7400 + 1000) == 6_320_000


def test_training_shapes():
    """The issue's shapes at their batch sizes; --quick divides N (at least two batches); other configs take
    scikit-learn's batch_size "auto"."""
    shapes = {s.name: (s.config.layers, s.config.head, s.config.n, s.batch) for s in training.resolve_shapes(None)}
    assert shapes == {"digits": ("64-100-10", "softmax", 1797, 200), "tabular": ("60-128-64-4", "softmax", 48000, 256),
                      "mnist": ("784-256-256-10", "softmax", 4096, 128),
                      "binary_100": ("100-100-1", "sigmoid", 20000, 200)}
    quick = {s.name: (s.config.n, s.batch) for s in training.resolve_shapes(list(training.SHAPES), quick=True)}
    assert quick == {"digits": (400, 200), "tabular": (3000, 256), "mnist": (256, 128), "binary_100": (1250, 200)}
    (other,) = training.resolve_shapes(["seed1_small"])
    assert other.batch == 200 and other.config.n == 65536
    assert [s.name for s in training.resolve_shapes(None, quick=True)] == ["smoke", "smoke_sigmoid"]


def test_training_targets_met_and_gap():
    """The 75% target on the issue's shapes (gap = target / value), shown without a target elsewhere, absent
    without a GEMM."""
    adam, sgd = training._targets({"config": "tabular", "pct_gemm_bound": {"adam": 50.0, "sgd": 80.0}})
    assert adam["met"] is False and adam["gap"] == pytest.approx(1.5) and sgd["met"] is True
    assert all(t["target"] == "-" for t in training._targets({"config": "mnist", "pct_gemm_bound": {"adam": 90.0,
                                                                                                 "sgd": 91.0}}))
    assert all(t["value"] is None for t in training._targets({"config": "digits", "pct_gemm_bound": {}}))


def _check_training_rows(rows, names):
    assert [(r["config"], r["dtype"]) for r in rows] == [
        ("smoke", "float32"), ("smoke", "float64"), ("smoke_sigmoid", "float32"), ("smoke_sigmoid", "float64")]
    for r in rows:
        assert r["ok"], r["first_loss"]
        assert set(r["ms"]) == set(names) and all(v > 0 for v in r["step_us"].values())
        assert r["steps"] == 7 and r["batch"] == 16 and r["n"] == 100
        assert r["step_flops"] == bench.flop_count(r["sizes"], 16, input_grad=False)
        assert r["step_us"]["adam"] == pytest.approx(1e3 * r["ms"]["adam"] / 7)
        assert r["pct_gemm_bound"]["sklearn"] == pytest.approx(100 * r["gflops"]["sklearn"] / r["gemm_gflops"])
        assert r["pct_peak"]["adam"] == pytest.approx(100 * r["gflops"]["adam"] / PEAK[r["dtype"]])
        assert [t["measure"] for t in r["targets"]] == ["native adam step % of GEMM-bound",
                                                       "native sgd step % of GEMM-bound"]


def test_training_quick_validates_and_formats():
    """Native adam and sgd epochs, scikit-learn's and (when asked for and importable) torch's on the tiny shapes, both
    dtypes: every loss finite, every implementation timed, the rates and targets computed, the tables print."""
    gemm = bench.measure_gemm("both", 1, "numpy", shapes=TINY_GEMM, repeat=1, settle=0)
    result = training.run(quick=True, dtypes="both", threads=1, repeat=1, settle=0, log=pytest.fail, gemm=gemm,
                          peak=PEAK)
    _check_training_rows(result["rows"], ["adam", "sgd", "sklearn"])
    text = (training.format_times(result["rows"]) + training.format_rates(result["rows"])
            + training.format_targets(result["rows"]))
    assert "| smoke_sigmoid" in text and "GEMM-bound us" in text and "sklearn adam" in text and "% of peak" in text
    assert "torch adam" not in text and not result["notes"]


def test_training_with_torch():
    if not _installed("torch"):
        pytest.skip("torch is not installed")
    gemm = bench.measure_gemm("both", 1, "numpy", shapes=TINY_GEMM, repeat=1, settle=0)
    result = training.run(quick=True, dtypes="both", threads=1, repeat=1, settle=0, log=pytest.fail, gemm=gemm,
                          peak=PEAK, peers="auto")
    if result["notes"]:
        pytest.skip(f"torch is installed but not importable: {result['notes']}")
    _check_training_rows(result["rows"], ["adam", "sgd", "sklearn", "torch"])
    assert "torch adam" in training.format_rates(result["rows"])


def test_training_missing_torch_is_left_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(bench, "_PEER_STATE", {})
    result = training.run(["smoke"], quick=True, settle=0, repeat=1, peers=["torch"], log=pytest.fail)
    row = result["rows"][0]
    assert row["ok"] and "torch" not in row["ms"] and any("torch left out" in note for note in result["notes"])
    assert row["pct_gemm_bound"] == {} and all(t["value"] is None for t in row["targets"])  # no GEMM measured


def test_training_cli_quick_json(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert cli.main(["bench", "--training", "--quick", "--config", "smoke", "--peers", "none", "--gemm", "numpy",
                     "--repeat", "2", "--settle", "0", "--threads", "1", "--dtype", "both", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "rows" not in data and "per_sample" not in data  # the mode replaces the main table
    assert set(data["header"]["fma_peak"]) == {"float32", "float64"} and data["header"]["cpu"]
    section = data["training"]
    assert [(r["config"], r["dtype"]) for r in section["rows"]] == [("smoke", "float32"), ("smoke", "float64")]
    assert [g["label"] for g in section["gemm"]["results"]] == ["square", "square"]
    for r in section["rows"]:
        assert set(r["ms"]) == {"adam", "sgd", "sklearn"} and r["calls"]["adam"] == 2
        assert r["gemm_gflops"] > 0 and r["fma_peak_gflops"] > 0
    text = capsys.readouterr().out
    assert "training steps (issue 14)" in text and "% of GEMM-bound" in text and "FMA peak" in text


# -- the sparse section (bench --sparse, issue 15) -----------------------------------------------------------------


def test_sparse_problem_is_text_like():
    """A canonical float32 CSR with int64 indices (mlpgrad takes its arrays as they are), unit rows, about density
    d_0 nonzeros per row, the popular columns first, every class present."""
    rng = np.random.default_rng(0)
    X, y = sparse.text_like_csr(3000, 5000, 0.01, 5, rng)
    assert X.format == "csr" and X.dtype == np.float32 and X.indices.dtype == X.indptr.dtype == np.int64
    assert X.has_canonical_format and 40 <= X.nnz / 3000 <= 50
    np.testing.assert_allclose(np.sqrt(np.asarray(X.multiply(X).sum(axis=1))).ravel(), 1.0, rtol=1e-5)
    counts = np.bincount(X.indices, minlength=5000)
    assert counts[:100].sum() > counts[-1000:].sum()  # Zipf-like: the head of the vocabulary is drawn most
    assert set(np.unique(y)) == set(range(5)) and y.dtype == np.int64


def _check_sparse_result(result, names):
    row = result["row"]
    assert row["ok"], row["max_rel_err"]
    assert set(row["ms"]) == set(names) and all(v > 0 for v in row["ms"].values())
    assert row["rows"]["dense"] == sparse.QUICK.dense_n and row["rows"]["sparse"] == sparse.QUICK.n
    assert row["ms_at_n"]["dense"] == pytest.approx(row["ms"]["dense"] * sparse.QUICK.n / sparse.QUICK.dense_n)
    assert row["vs_sparse"]["sparse"] == 1.0 and row["nnz"] > 0
    theirs = row["fit"]["sklearn"]
    assert theirs["seconds"] > 0 and 0 <= theirs["accuracy"] <= 1 and theirs["epochs"] == sparse.QUICK.epochs
    mine = row["fit"]["mlpgrad"]
    assert ("seconds" in mine) != ("error" in mine)  # fitted, or the estimator's refusal of a sparse X
    assert [t["measure"] for t in row["targets"]] == ["scikit-learn fit time / mlpgrad's",
                                                      "held-out accuracy, mlpgrad - scikit-learn"]
    text = sparse.format_calls(row) + sparse.format_fit(row) + sparse.format_targets(row)
    assert "mlpgrad, CSR X" in text and "sklearn MLPClassifier (logistic)" in text
    assert ("n/a" in sparse.format_fit(row)) == ("error" in mine)


def test_sparse_quick_validates_and_formats():
    """The quick problem: mlpgrad on the CSR X and on dense rows agree and are timed, both estimators fit (or
    mlpgrad's says why not), the tables print."""
    result = sparse.run(quick=True, threads=1, repeat=1, settle=0, log=pytest.fail)
    _check_sparse_result(result, ["sparse", "dense"])
    assert "torch.sparse" not in sparse.format_calls(result["row"])


def test_sparse_with_torch():
    if not _installed("torch"):
        pytest.skip("torch is not installed")
    result = sparse.run(quick=True, threads=1, repeat=1, settle=0, log=pytest.fail, peers="auto", fit=False)
    row = result["row"]
    assert row["ok"] and "torch" in row["ms"] and row["max_rel_err"]["torch"] <= bench.TOLERANCE["float32"]
    assert "torch.sparse CSR X" in sparse.format_calls(row) and "fit" not in row


def test_sparse_cli_quick_json(tmp_path, capsys):
    out = tmp_path / "sparse.json"
    assert cli.main(["bench", "--sparse", "--quick", "--peers", "none", "--repeat", "1", "--settle", "0",
                     "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "rows" not in data  # the mode replaces the main table
    _check_sparse_result(data["sparse"], ["sparse", "dense"])
    text = capsys.readouterr().out
    assert "sparse X (issue 15)" in text and "fit on the sparse X" in text
