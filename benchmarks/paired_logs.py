"""Paired training-log comparison: a run minus its twin, step by step, over the steps both logged (the
twin saw the same rows at every step, so per-step differences are paired), per half of the run: mean
difference and its standard error over the steps.

    python benchmarks/paired_logs.py --out docs/paired_logs_r17.json \\
        f17-s5=benchmarks/adapters/smollm2-r17/f17-s5:benchmarks/adapters/smollm2-r17/twin-s5 ...

Each NAME=RUN:TWIN names two folders holding metrics.jsonl (`fam train`'s log); --keys picks the
logged values (text_loss, distill, answer_loss: the text / distillation / PassKey-answer parts).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def read_log(folder: str) -> dict[int, dict]:
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{folder}: no metrics.jsonl")
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def compare(run: dict[int, dict], twin: dict[int, dict], keys: list[str]) -> dict:
    """{key: {"steps A-B": {"mean", "se", "steps"}}} for the two halves of the steps both logged."""
    steps = sorted(set(run) & set(twin))
    if len(steps) < 4:
        raise SystemExit(f"{len(steps)} common steps: too few to compare")
    half = len(steps) // 2
    out = {}
    for key in keys:
        out[key] = {}
        for part in (steps[:half], steps[half:]):
            d = [run[s][key] - twin[s][key] for s in part if key in run[s] and key in twin[s]]
            if len(d) < 2:
                raise SystemExit(f"{key}: logged in {len(d)} of steps {part[0]}-{part[-1]}")
            out[key][f"steps {part[0]}-{part[-1]}"] = {"mean": round(statistics.mean(d), 5),
                                                       "se": round(statistics.stdev(d) / len(d) ** 0.5, 5),
                                                       "steps": len(d)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", metavar="NAME=RUN:TWIN")
    ap.add_argument("--keys", default="text_loss,distill,answer_loss")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    keys = [k for k in a.keys.split(",") if k]
    report = {"keys": keys, "pairs": {}, "results": {}}
    for item in a.pairs:
        name, _, spec = item.partition("=")
        run, sep, twin = spec.partition(":")
        if not (name and sep and run and twin):
            raise SystemExit(f"{item}: give NAME=RUN:TWIN")
        report["pairs"][name] = spec
        report["results"][name] = res = compare(read_log(run), read_log(twin), keys)
        for key, halves in res.items():
            print(f"{name} {key}: " + "  ".join(f"{h} {v['mean']:+.4f} ± {v['se']:.4f}" for h, v in halves.items()))
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
