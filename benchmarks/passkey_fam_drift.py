"""Is the key lost, or is it read wrong? Linear probes on a demo model's FAM (issue 14).

    python benchmarks/passkey_fam_drift.py --model runs/demo-u/fam --lengths 128,512,2048,8192

For each filler length, N prompts with new keys (depth 0) are streamed up to the answer's block
and the FAM every layer hands that block is kept. A ridge probe decodes key digit j from FAM
slot j (RMS-normalised), per layer:
- "same length": trained and tested (3:1 split) at that length: is the key still in the FAM?
- "trained at REF": trained at the reference length, applied at this one: does a fixed read still work?
and the cosine of each slot's mean over prompts against the reference length's (the common drift).
Writes OUT (json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import torch

from transformer_fam import FamForCausalLM
from transformer_fam.core.streaming import stream
from transformer_fam.data.passkey import make_passkey_example, random_key
from transformer_fam.data.tokenizer import load_tokenizer


def fam_entering_answer(model, tok, filler: int, n: int, seed: int):
    rng = random.Random(seed)
    rows, digits = [], []
    for _ in range(n):
        key = random_key(rng)
        ids, (answer, _) = make_passkey_example(filler, key, 0.0, tok)
        rows.append(ids)
        digits.append([int(c) for c in str(key)])
    L = model.config.block_size
    cut = answer // L * L
    with torch.no_grad():
        cache = stream(model, torch.tensor(rows)[:, :cut], 16 * L).cache
    fams = [f / f.pow(2).mean(-1, keepdim=True).sqrt() for f in cache.fam_state()]  # per layer (N, F, d)
    return fams, torch.tensor(digits)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-2) -> torch.Tensor:
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.double)], 1)
    onehot = torch.nn.functional.one_hot(y, 10).double()
    return torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ onehot)


def accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.double)], 1)
    return round(float(((x @ w).argmax(-1) == y).double().mean()), 3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--lengths", default="128,512,2048,8192")
    p.add_argument("--reference", type=int, default=128, help="filler length the fixed probe is trained at")
    p.add_argument("--prompts", type=int, default=400)
    p.add_argument("--out", default=None, help="json file (default MODEL/fam_drift.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = FamForCausalLM.from_pretrained(a.model).eval()
    tok = load_tokenizer(a.model)
    lengths = [int(x) for x in a.lengths.split(",")]
    data = {n: fam_entering_answer(model, tok, n, a.prompts, seed=n) for n in sorted({a.reference, *lengths})}
    ref_f, ref_d = data[a.reference]
    split = a.prompts * 3 // 4
    result = {}
    for n in lengths:
        f, d = data[n]
        rows = {}
        for layer in range(len(f)):
            same = [accuracy(ridge(f[layer][:split, j], d[:split, j]), f[layer][split:, j], d[split:, j])
                    for j in range(5)]
            fixed = [accuracy(ridge(ref_f[layer][:, j], ref_d[:, j]), f[layer][:, j], d[:, j]) for j in range(5)]
            cos = torch.nn.functional.cosine_similarity(f[layer].mean(0), ref_f[layer].mean(0), dim=-1)[:5]
            rows[f"layer {layer}"] = {"same_length": same, f"trained_at_{a.reference}": fixed,
                                      "mean_slot_cos": [round(float(c), 3) for c in cos]}
            print(f"filler {n:6d} layer {layer}: same-length probe {min(same):.2f}-{max(same):.2f}, "
                  f"probe trained at {a.reference} {min(fixed):.2f}-{max(fixed):.2f}, "
                  f"cos(mean slot) {float(cos.min()):.2f}-{float(cos.max()):.2f}", flush=True)
        result[str(n)] = rows
    out = a.out or f"{a.model}/fam_drift.json"
    with open(out, "w") as fh:
        json.dump({"model": a.model, "reference": a.reference, "prompts": a.prompts, "lengths": result}, fh, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
