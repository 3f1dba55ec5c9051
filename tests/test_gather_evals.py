"""benchmarks/gather_evals.py: the results files in docs/ hold exactly what the eval outputs say."""

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gather_evals.py"


def _write(path: Path, record: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return str(path)


def test_rows_merge_passkey_lengths_depths_and_one_ppl_mode(tmp_path):
    main = runpy.run_path(str(SCRIPT))["main"]
    pk1 = _write(tmp_path / "a" / "passkey.json", {"accuracy": {"450": 0.85, "2000": 1.0}})
    pk2 = _write(tmp_path / "b" / "passkey.json", {"accuracy": {"8050": 0.7}})
    depth = _write(tmp_path / "c" / "passkey.json", {"accuracy_by_depth": {"0.5": {"450": 0.05}}})
    bucket = {"accuracy": 0.27333, "loss": 4.38641, "tokens": 14336}
    ppl = _write(tmp_path / "p" / "ppl.json", {"fam_read_heads": [[17, 3]],
                                               "modes": {"fam": {"2k+": bucket}, "fam-reset": {"2k+": {**bucket, "accuracy": 0.3}}}})
    out = tmp_path / "r.json"
    assert main(["--out", str(out), "--meta", "machine=x=y", "--row", "live", pk1, pk2, depth, ppl + ":fam",
                 "--row", "reset", ppl + ":fam-reset"]) == 0
    got = json.loads(out.read_text())
    assert got["machine"] == "x=y" and got["units"] == "percent"
    assert got["live"]["passkey"] == {"450": 85.0, "2000": 100.0, "8050": 70.0}
    assert got["live"]["passkey_depth"] == {"0.5": {"450": 5.0}}
    assert got["live"]["milton"] == {"2k+": {"accuracy": 27.33, "loss": 4.3864, "tokens": 14336}}
    assert got["live"]["fam_read_heads"] == [[17, 3]] and got["reset"]["milton"]["2k+"]["accuracy"] == 30.0
    with pytest.raises(SystemExit, match="holds modes fam, fam-reset; name one"):
        main(["--out", str(out), "--row", "x", ppl])
    with pytest.raises(SystemExit, match="no mode 'bswa'"):
        main(["--out", str(out), "--row", "x", ppl + ":bswa"])


def test_a_ppl_json_of_another_text_goes_under_its_data_name(tmp_path):
    """ppl.json records its --data: milton (or none, older files) under "milton", a folder under its name."""
    main = runpy.run_path(str(SCRIPT))["main"]
    bucket = {"accuracy": 0.25, "loss": 4.0, "tokens": 10}
    kjv = _write(tmp_path / "k" / "ppl.json", {"data": "runs/ev/kjv7", "modes": {"bswa": {"2k+": bucket}}})
    milton = _write(tmp_path / "m" / "ppl.json", {"data": "milton", "modes": {"bswa": {"2k+": {**bucket, "accuracy": 0.3}}}})
    out = tmp_path / "r.json"
    assert main(["--out", str(out), "--row", "twin", kjv, milton]) == 0
    row = json.loads(out.read_text())["twin"]
    assert row["kjv7"]["2k+"]["accuracy"] == 25.0 and row["milton"]["2k+"]["accuracy"] == 30.0
