"""The benchmark's machinery runs and validates (timings themselves are never asserted)."""

import json

from mlpgrad import bench


def test_bench_smoke_rows_validate(tmp_path):
    rows = bench.run(["smoke", "smoke_sigmoid"], "both", None, 3, settle=0, log=lambda *a, **k: None)
    assert len(rows) == 4
    for row in rows:
        assert row["ok"], row
        assert row["ms"]["native"] > 0 and row["ms"]["reference"] > 0


def test_bench_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["bench", "--config", "smoke", "--repeat", "2", "--settle", "0", "--json", str(out)]) in (0, None)
    data = json.loads(out.read_text())
    assert "rows" in data and data["rows"][0]["config"] == "smoke"
    assert "| smoke" in capsys.readouterr().out
