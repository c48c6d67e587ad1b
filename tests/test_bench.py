"""The benchmark's machinery runs and validates (timings themselves are never asserted).

The peers (torch, jax) and matplotlib are optional: tests that need one skip when it is absent,
and nothing here requires torch to be installed.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

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


def test_bench_gemm_numpy_tiny():
    gemm = bench.measure_gemm("both", 1, "numpy", shapes=[("square", 16, 16, 16, False), ("t", 8, 16, 4, True)],
                              repeat=2, settle=0)
    assert gemm["backend"] == "numpy.matmul" and len(gemm["results"]) == 4
    assert set(gemm["peak"]) == {"float32", "float64"} and all(g > 0 for g in gemm["peak"].values())
    rows = bench.run(["smoke"], "float32", None, 1, gemm_peak=gemm["peak"], **QUIET)
    assert rows[0]["native_pct_gemm"] > 0 and "% of GEMM" in bench.format_table(rows)
    assert bench.format_gemm(gemm)


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
