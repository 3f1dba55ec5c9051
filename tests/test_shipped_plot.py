"""benchmarks/shipped_plot.py: the figure of the shipped smollm2-fam plots the committed result files'
numbers, each source in percent (some files hold fractions), merged by length; a missing file or entry
is one line naming it."""

import json
import runpy
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "shipped_plot.py"


def test_the_plotted_numbers_are_the_result_files(tmp_path):
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "shipped.png"
    assert main(["--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    plotted = json.loads(out.with_suffix(".json").read_text())
    original = plotted["passkey"]["original SmolLM2, full attention (3-5 keys at 6000-8000, 1 at 32000)"]["passkey"]
    retrieval = json.loads((ROOT / "docs" / "smollm2_retrieval.json").read_text())["results"]
    assert original["60"] == 100 * retrieval["original (full attention)"]["passkey"]["60"]  # a fraction there
    assert original["8000"] == 0.0 and original["6000"] == 100.0  # docs/smollm2_r7.json, merged in
    r20b = json.loads((ROOT / "docs" / "smollm2_r20b_passkey.json").read_text())
    jittered, fixed = r20b["fama (R20B), O7, filler + 0..127"]["passkey"], r20b["fama (R20B), option O7 at evaluation"]["passkey"]
    shipped = plotted["passkey"]["smollm2-fam as shipped (R20b + O7; filler + 0..127 from 450 on)"]["passkey"]
    assert {k: shipped[k] for k in jittered} == jittered and "32000" in shipped  # the jittered run kept where both are
    assert shipped["60"] == fixed["60"] and set(shipped) == set(jittered) | set(fixed)
    o7 = json.loads((ROOT / "docs" / "smollm2_o7_passkey.json").read_text())["fama (R19), option O7 at evaluation"]
    before = plotted["passkey"]["R19 + O7, shipped before (fixed fillers)"]["passkey"]
    assert {k: before[k] for k in o7["passkey"]} == o7["passkey"]
    paired = json.loads((ROOT / "docs" / "paired_r20b_kjv.json").read_text())["buckets"]
    diff = plotted["position_minus_twin"]["smollm2-fam as shipped (R20b + O7)"]["minus_twin"]
    assert diff["2k+"] == [paired["2k+"]["fama-o7"]["accuracy_minus_twin"], paired["2k+"]["fama-o7"]["accuracy_se"]]


def test_a_missing_result_is_one_line(tmp_path):
    main = runpy.run_path(str(SCRIPT))["main"]
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("*.png"))
    (docs / "smollm2_r10.json").unlink()
    with pytest.raises(SystemExit, match="smollm2_r10.json: no such result file"):
        main(["--docs", str(docs), "--out", str(tmp_path / "x.png")])
    (docs / "smollm2_r10.json").write_text("{}")
    with pytest.raises(SystemExit, match="smollm2_r10.json: no entry \"BSWA \\+ R7 twin"):
        main(["--docs", str(docs), "--out", str(tmp_path / "x.png")])
