"""How stable option O5's ``fam_read_distant`` choice is: the heads that lose most under BSWA in the
original SmolLM2-135M-Instruct (training/retrieval.py distant_heads), ranked on the first N text rows
of the recipe's batches, for several data seeds and N.

    python benchmarks/distant_heads.py --seeds 0,4,5 --rows 2,8 --top 16 --out docs/distant_heads.json

Ranks in float32 (as a recipe with bf16=false; bf16 rounding can swap neighbours). Prints, per
(seed, rows), the top-K heads (the JSON: the first 40, with their scores), and for each
N the overlap of the top-K sets between seeds (|A & B| / K) and the ranks of the retrieval
supervision's heads (17.3, 17.4, 18.6, 18.7).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from transformer_fam.training.recipe import load_recipe
from transformer_fam.training.retrieval import distant_heads, retrieval_batches
from transformer_fam.training.setup import build_model, build_tokenizer, seed_everything

SUPERVISED = [(17, 3), (17, 4), (18, 6), (18, 7)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="smollm2-fam")
    ap.add_argument("--seeds", default="0,4,5", help="data seeds (recipe key seed)")
    ap.add_argument("--rows", default="2,8", help="text rows that rank the heads (fam_read_distant_rows)")
    ap.add_argument("--top", type=int, default=16, help="K (fam_read_distant)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    seeds, counts = [int(s) for s in a.seeds.split(",")], [int(n) for n in a.rows.split(",")]
    base = load_recipe(a.recipe, {"retrieval_text": "shakespeare", "seq_len": 1024, "batch_size": 2, "grad_accum": 2})
    tokenizer = build_tokenizer(base)
    seed_everything(0)
    model = build_model(base, tokenizer).eval()  # distant_heads reads the original model (adapters off)
    block, mem = base.block_size, base.mem_segments
    ranked: dict[tuple[int, int], list[tuple[float, int, int]]] = {}
    start = time.time()
    for seed in seeds:
        text = retrieval_batches(load_recipe(a.recipe, {"retrieval_text": "shakespeare", "seq_len": 1024,
                                                       "batch_size": 2, "grad_accum": 2, "seed": seed}), tokenizer).text
        rows = torch.cat([text.batch(i)[0] for i in range((max(counts) + 1) // 2)])
        for n in counts:
            ranked[seed, n] = distant_heads(model, rows[:n], block, mem, 10 ** 6)  # every head: ranks
            top = ", ".join(f"{layer}.{h}" for _, layer, h in ranked[seed, n][: a.top])
            print(f"seed {seed}, {n} rows: {top}  ({time.time() - start:.0f} s)", flush=True)
    report = {"recipe": a.recipe, "top": a.top,
              "block_size": block, "mem_segments": mem, "seeds": seeds, "rows": counts,
              "ranked": {f"{s}/{n}": [[layer, h, round(score, 5)] for score, layer, h in r[:40]]  # the first 40
                         for (s, n), r in ranked.items()},
              "overlap": {}, "supervised_ranks": {}}
    for n in counts:
        tops = {s: {(layer, h) for _, layer, h in ranked[s, n][: a.top]} for s in seeds}
        pairs = {f"{s}-{t}": len(tops[s] & tops[t]) / a.top for s, t in itertools.combinations(seeds, 2)}
        report["overlap"][str(n)] = pairs
        ranks = {s: [1 + [(layer, h) for _, layer, h in ranked[s, n]].index(x) for x in SUPERVISED] for s in seeds}
        report["supervised_ranks"][str(n)] = {str(s): r for s, r in ranks.items()}
        print(f"{n} rows: top-{a.top} overlap between seeds {pairs}; ranks of "
              f"{', '.join(f'{x}.{y}' for x, y in SUPERVISED)}: {ranks}")
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
