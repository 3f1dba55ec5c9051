"""benchmarks/paired_table.py: the rows of several paired evaluations side by side, with the minimum and
median over runs; a row a run lacks stays empty and is left out of its statistics; bad input is one line."""

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "paired_table.py"


def _paired(path: Path, live: float, reset: float, pair: float | None, bucket: float) -> str:
    """A JSON shaped as benchmarks/paired_compare.py writes it (baseline twin, from 128)."""
    res = {"twin": {"accuracy": 40.0},
           "fama": {"accuracy": 40.0 + live, "accuracy_minus_twin": live, "accuracy_se": 0.1},
           "fama-reset": {"accuracy": 40.0 + reset, "accuracy_minus_twin": reset, "accuracy_se": 0.2}}
    run = {"baseline": "twin", "from": 128, "results": res,
           "buckets": {"0-128": {"twin": {"accuracy": 41.0},
                                 "fama": {"accuracy_minus_twin": bucket, "accuracy_se": 0.5}}}}
    if pair is not None:
        run["pairs"] = {"fama:fama-reset": {"accuracy_minus_fama-reset": pair, "accuracy_se": 0.3}}
    path.write_text(json.dumps(run))
    return str(path)


def test_min_and_median_over_runs(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    a = _paired(tmp_path / "a.json", live=0.3, reset=-1.2, pair=1.5, bucket=-1.1)
    b = _paired(tmp_path / "b.json", live=-0.1, reset=-1.0, pair=None, bucket=-0.5)
    c = _paired(tmp_path / "c.json", live=0.5, reset=-2.0, pair=2.5, bucket=0.1)
    out = tmp_path / "t.json"
    main([f"A={a}", f"B={b}", f"C={c}", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    live = rows["fama minus twin, >= 128"]
    assert live["A"] == [0.3, 0.1] and live["B"] == [-0.1, 0.1]
    assert live["min"] == -0.1 and live["median"] == pytest.approx(0.3)
    assert rows["fama-reset minus twin, >= 128"]["median"] == pytest.approx(-1.2)
    pair = rows["fama minus fama-reset, >= 128"]  # B has no pair: not counted
    assert "B" not in pair and pair["min"] == 1.5 and pair["median"] == pytest.approx(2.0)
    assert rows["fama minus twin, 0-128"]["min"] == -1.1
    text = capsys.readouterr().out
    assert "| fama minus twin, >= 128 | +0.30 ± 0.10 | -0.10 ± 0.10 | +0.50 ± 0.10 | -0.10 | +0.30 |" in text


def test_bad_input_is_one_line(tmp_path):
    main = runpy.run_path(str(SCRIPT))["main"]
    with pytest.raises(SystemExit, match="expected LABEL=PAIRED_JSON"):
        main([str(tmp_path / "a.json")])
    with pytest.raises(SystemExit, match="cannot read a paired evaluation"):
        main([f"A={tmp_path / 'missing.json'}"])
    (tmp_path / "x.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match="not benchmarks/paired_compare.py's JSON"):
        main([f"A={tmp_path / 'x.json'}"])
