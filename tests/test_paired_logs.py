"""benchmarks/paired_logs.py: per-half mean and standard error of a run's logged values minus its twin's,
over the steps both logged; too short or missing logs are one clear line."""

import json
import runpy
import statistics
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "paired_logs.py"


def _log(folder: Path, rows: list[dict]) -> str:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def test_halves_of_the_common_steps(tmp_path):
    main = runpy.run_path(str(SCRIPT))["main"]
    twin = _log(tmp_path / "t", [{"step": s, "text_loss": 4.0} for s in range(1, 9)])
    diffs = [0.1, 0.3, 0.2, 0.2, -0.1, -0.3, -0.2]  # steps 1-7; the run has no step 8
    run = _log(tmp_path / "r", [{"step": s, "text_loss": 4.0 + d} for s, d in enumerate(diffs, 1)])
    out = tmp_path / "o.json"
    assert main(["--keys", "text_loss", "--out", str(out), f"x={run}:{twin}"]) == 0
    res = json.loads(out.read_text())["results"]["x"]["text_loss"]
    assert list(res) == ["steps 1-3", "steps 4-7"]
    for (name, part) in (("steps 1-3", diffs[:3]), ("steps 4-7", diffs[3:])):
        assert res[name]["mean"] == pytest.approx(statistics.mean(part), abs=1e-5)
        assert res[name]["se"] == pytest.approx(statistics.stdev(part) / len(part) ** 0.5, abs=1e-5)
        assert res[name]["steps"] == len(part)
    with pytest.raises(SystemExit, match="distill: logged in 0 of steps 1-3"):
        main(["--keys", "distill", f"x={run}:{twin}"])
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        main([f"x={run}:{tmp_path / 'none'}"])
    with pytest.raises(SystemExit, match="give NAME=RUN:TWIN"):
        main([f"x={run}"])
