"""The shipped `smollm2-fam` in one figure, drawn from committed result files (no model is run):
PassKey accuracy by filler length (the original model in full attention, a fine-tuned BSWA twin,
smollm2-fam as shipped (R20b with option O7; fillers drawn over a whole block, `--jitter 128`, where
measured so), R19 as shipped before it, and smollm2-fam with its FAM reset every block), and
next-token accuracy by position on the held-out Bible books (Genesis .. Judges) against its BSWA
twin, with standard errors over 128-token pieces.

    python benchmarks/shipped_plot.py                   # -> docs/smollm2_shipped.png (+ .json: the plotted numbers)

Every curve names its file; the commands that made each file are in docs/smollm2_memory.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# (label, [(file, key path to a {length: accuracy} dict, scale to percent), ...]) per PassKey curve; where two
# sources share a length the first (the one with more keys) is kept
PASSKEY = [
    ("original SmolLM2, full attention (3-5 keys at 6000-8000, 1 at 32000)",
     [("smollm2_retrieval.json", ["results", "original (full attention)", "passkey"], 100),
      ("smollm2_r7.json", ["original, full attention, 3 keys"], 100),
      ("smollm2_r7.json", ["original, full attention, 5 keys"], 100),
      ("smollm2_r7.json", ["original, full attention, 32000, 1 key"], 100)]),
    ("BSWA, fine-tuned (R10's twin)", [("smollm2_r10.json", ["BSWA + R7 twin (R10's twin)", "passkey"], 1)]),
    ("smollm2-fam as shipped (R20b + O7; filler + 0..127 from 450 on)",
     [("smollm2_r20b_passkey.json", ["fama (R20B), O7, filler + 0..127", "passkey"], 1),
      ("smollm2_r20b_passkey.json", ["fama (R20B), option O7 at evaluation", "passkey"], 1)]),
    ("R19 + O7, shipped before (fixed fillers)", [("smollm2_o7_passkey.json", ["fama (R19), option O7 at evaluation", "passkey"], 1),
                                                  ("smollm2_bundled_o7.json", ["smollm2-fam, 32000 (10 keys)", "passkey"], 1)]),
    ("smollm2-fam, FAM reset every block", [("smollm2_r20b_passkey.json", ["fama (R20B), O7, filler + 0..127, FAM reset",
                                                                           "passkey"], 1)]),
]
# position buckets on the held-out Bible: (label, file, model name); the baseline is each file's twin
POSITION = [
    ("smollm2-fam as shipped (R20b + O7)", "paired_r20b_kjv.json", "fama-o7"),
    ("R20b, the paper's read", "paired_r20b_kjv.json", "fama"),
    ("smollm2-fam, FAM reset every block (with O7: its weights in BSWA mode)", "paired_r20b_kjv.json", "fama-bswa"),
]
ABSOLUTE = [("original, full attention", "paired_r20b_kjv.json", "full"), ("BSWA twin (R20b's)", "paired_r20b_kjv.json", "twin"),
            ("smollm2-fam as shipped", "paired_r20b_kjv.json", "fama-o7")]


def load(docs: Path, name: str) -> dict:
    path = docs / name
    if not path.is_file():
        raise SystemExit(f"{path}: no such result file (the commands that write it are in docs/smollm2_memory.md)")
    return json.loads(path.read_text())


def dig(d: dict, path: list[str], name: str):
    for k in path:
        if k not in d:
            raise SystemExit(f"{name}: no entry {k!r} (of {' / '.join(path)})")
        d = d[k]
    return d


def passkey_curves(docs: Path) -> dict:
    curves = {}
    for label, sources in PASSKEY:
        points = {}
        for name, path, scale in sources:
            for length, acc in dig(load(docs, name), path, name).items():
                if length.isdigit():
                    points.setdefault(int(length), round(acc * scale, 2))
        curves[label] = {"sources": sorted({s[0] for s in sources}), "passkey": dict(sorted(points.items()))}
    return curves


def position_curves(docs: Path) -> tuple[dict, dict]:
    diff, absolute = {}, {}
    for label, name, model in POSITION:
        buckets = load(docs, name)["buckets"]
        diff[label] = {"source": name, "minus_twin": {b: [v[model]["accuracy_minus_twin"], v[model]["accuracy_se"]]
                                                      for b, v in buckets.items()}}
    for label, name, model in ABSOLUTE:
        buckets = load(docs, name)["buckets"]
        absolute[label] = {"source": name, "accuracy": {b: v[model]["accuracy"] for b, v in buckets.items()}}
    return diff, absolute


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=Path, default=DOCS, help="where the result files are (docs/)")
    ap.add_argument("--out", type=Path, default=DOCS / "smollm2_shipped.png")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pk = passkey_curves(a.docs)
    diff, absolute = position_curves(a.docs)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
    for (label, c), style in zip(pk.items(), ["k-o", "C7-s", "C0-o", "C1--^", "C3:x"]):
        xs = list(c["passkey"])
        ax1.plot(xs, [c["passkey"][x] for x in xs], style, label=label)
    ax1.axvline(128, color="grey", lw=0.8, ls=":")
    ax1.set(xscale="log", xlabel="filler tokens (key at depth 0; window 128)", ylabel="PassKey accuracy (%)",
            ylim=(-5, 105), title="PassKey, new keys (40 at 450 and 2000, 20 at 60 and 4000, 10 past 8000)")
    ax1.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.1, 0.07))
    for (label, c), style in zip(absolute.items(), ["k-o", "C7-s", "C0-o"]):
        bs = list(c["accuracy"])
        ax2.plot(bs, [c["accuracy"][b] for b in bs], style, label=label)
    ax2.set(xlabel="position bucket (tokens)", ylabel="next-token accuracy (%)",
            title="held-out Bible (Genesis .. Judges), 7 x 4096 tokens")
    ax2.legend(fontsize=7)
    for i, ((label, c), color) in enumerate(zip(diff.items(), ["C0", "C1", "C3"])):
        bs = list(c["minus_twin"])
        xs = [j + (i - 1) * 0.12 for j in range(len(bs))]
        ax3.errorbar(xs, [c["minus_twin"][b][0] for b in bs], yerr=[c["minus_twin"][b][1] for b in bs], fmt="o",
                     color=color, capsize=3, label=label)
    ax3.axhline(0, color="C7", lw=1)
    ax3.set_xticks(range(len(bs)), bs)
    ax3.set(xlabel="position bucket (tokens)", ylabel="accuracy minus the BSWA twin (points, ± SE)",
            title="the same, against the BSWA twin")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    a.out.with_suffix(".json").write_text(json.dumps({"passkey": pk, "position_minus_twin": diff,
                                                      "position_accuracy": absolute}, indent=1) + "\n")
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
