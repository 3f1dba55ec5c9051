"""One markdown table from several paired evaluations (benchmarks/paired_compare.py's JSON), one column per
run, plus the minimum and median over them: the numbers target 2 and 3 of issue 13 ask for, from runs of
different seeds or chains side by side.

    python benchmarks/paired_table.py R19=docs/paired_r19_kjv.json R19b=docs/paired_r19b_kjv.json \
        --live fama --reset fama-reset --out docs/chains_kjv.json

Rows (points of next-token accuracy minus the baseline, ± the standard error over pieces): each model
beyond the window (positions from the evaluation's `from` on), the live FAM minus its reset where the JSON
has that pair (`--pair LIVE:RESET`), and each bucket of the JSON's `buckets` for the live model.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def cells(run: dict, live: str, reset: str) -> dict[str, tuple[float, float]]:
    """{row name: (accuracy difference in points, its standard error)} of one paired evaluation."""
    base, start = run["baseline"], run["from"]
    out = {}
    for name, r in run["results"].items():
        if name != base:
            out[f"{name} minus {base}, >= {start}"] = (r[f"accuracy_minus_{base}"], r["accuracy_se"])
    pair = run.get("pairs", {}).get(f"{live}:{reset}")
    if pair:
        out[f"{live} minus {reset}, >= {start}"] = (pair[f"accuracy_minus_{reset}"], pair["accuracy_se"])
    for bucket, models in run.get("buckets", {}).items():
        if live in models:
            out[f"{live} minus {base}, {bucket}"] = (models[live][f"accuracy_minus_{base}"], models[live]["accuracy_se"])
    return out


def table(runs: dict[str, dict], live: str, reset: str) -> tuple[str, dict]:
    """(markdown, {row: {run: [diff, se], "min": m, "median": m}}) over runs, rows in first-seen order."""
    per_run = {label: cells(run, live, reset) for label, run in runs.items()}
    rows: list[str] = []
    for c in per_run.values():
        rows += [r for r in c if r not in rows]
    labels = list(runs)
    lines = ["| | " + " | ".join(labels) + " | min | median |", "|---|" + "--:|" * (len(labels) + 2)]
    data = {}
    for row in rows:
        have = {lab: per_run[lab][row] for lab in labels if row in per_run[lab]}
        diffs = [d for d, _ in have.values()]
        data[row] = {lab: list(v) for lab, v in have.items()}
        data[row].update(min=min(diffs), median=statistics.median(diffs))
        shown = [f"{have[lab][0]:+.2f} ± {have[lab][1]:.2f}" if lab in have else "" for lab in labels]
        lines.append(f"| {row} | " + " | ".join(shown) + f" | {min(diffs):+.2f} | {statistics.median(diffs):+.2f} |")
    return "\n".join(lines), data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=PAIRED_JSON")
    ap.add_argument("--live", default="fama", help="the live FAM model's name in the JSONs (fama)")
    ap.add_argument("--reset", default="fama-reset", help="its reset's name (fama-reset)")
    ap.add_argument("--out", type=Path, help="also write the table's numbers as JSON")
    a = ap.parse_args(argv)
    runs = {}
    for spec in a.runs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            sys.exit(f"paired_table: {spec!r}: expected LABEL=PAIRED_JSON, e.g. R19=docs/paired_r19_kjv.json")
        try:
            runs[label] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            sys.exit(f"paired_table: {path}: cannot read a paired evaluation ({e})")
        if "results" not in runs[label] or "baseline" not in runs[label]:
            sys.exit(f"paired_table: {path}: not benchmarks/paired_compare.py's JSON (no results / baseline)")
    text, data = table(runs, a.live, a.reset)
    print(text)
    if a.out:
        a.out.write_text(json.dumps({"runs": {lab: spec.partition("=")[2] for lab, spec in zip(runs, a.runs)},
                                     "unit": "accuracy points minus the baseline, [difference, standard error]",
                                     "rows": data}, indent=1) + "\n")


if __name__ == "__main__":
    main()
