"""What the write gate (option O4, FamConfig.fam_write_gate) does on PassKey prompts: per layer, the
gate z of every FAM update, grouped by what the updated block holds (the key's digits, filler, the
question), over several new keys.

    python benchmarks/fam_write_gates.py --model runs/demo/seed-0/fam --filler 2048 --keys 20 \
        --out docs/fam_write_gates_seed0.json

z = 2 sigmoid(w . u / rms(u) + c) scales each FAM vector's increment u (z = 1: the paper's update;
z near 0: the vector is left as it was). The first update of a stream (zero residual) is not gated.
Prints, per layer and block kind, the median over keys of the minimum / median / maximum z over the
F vectors, and (JSON) the same per block.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch

from transformer_fam.data.passkey import QUESTION, make_passkey_example, passkey_spans, random_key
from transformer_fam.hf.loading import load_model


def block_kinds(n_blocks: int, block: int, spans: dict, question_tokens: int) -> list[str]:
    """What each block holds: "key" (a key digit), "question" (the question or answer), "intro", "key
    sentence" (the rest of it), or "filler"."""
    k0, k1 = spans["key_digits"]
    q0 = spans["answer"][0] - question_tokens
    kinds = []
    for b in range(n_blocks):
        lo, hi = b * block, (b + 1) * block
        if lo < k1 and hi > k0:
            kinds.append("key")
        elif hi > q0:
            kinds.append("question")
        elif hi <= k0:
            kinds.append("intro")
        else:
            kinds.append("filler" if lo >= spans["key_sentence_end"] else "key sentence")
    return kinds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a FAM model folder trained with fam_write_gate")
    p.add_argument("--filler", type=int, default=2048, help="filler tokens")
    p.add_argument("--keys", type=int, default=20, help="new keys (prompts)")
    p.add_argument("--depth", type=float, default=0.0, help="the key's depth in the filler, 0 (the spec) .. 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON output file")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load_model(a.model, dtype="float32")
    layers = model.model.layers
    if layers[0].fam_write_gate is None:
        raise SystemExit(f"--model {a.model}: has no write gate (FamConfig.fam_write_gate is false)")
    seen: list[tuple[int, torch.Tensor]] = []
    for i, layer in enumerate(layers):
        layer.fam_write_gate.register_forward_hook(
            lambda mod, inp, out, i=i: seen.append((i, mod.gate(inp[0]).squeeze(-1))))  # (B, F)
    rng = random.Random(a.seed)
    examples = [make_passkey_example(a.filler, random_key(rng), a.depth, tok) for _ in range(a.keys)]
    ids = torch.tensor([e[0] for e in examples])
    with torch.no_grad():
        model(ids)
    L = model.config.block_size
    kinds = block_kinds(ids.shape[1] // L, L, passkey_spans(a.filler, a.depth, tok),
                        len(tok(QUESTION, add_special_tokens=False).input_ids))
    per_layer: dict[int, list[torch.Tensor]] = {}
    for i, z in seen:
        per_layer.setdefault(i, []).append(z)
    result = {"model": a.model, "filler": a.filler, "depth": a.depth, "keys": a.keys, "block_size": L, "layers": []}
    print(f"write gate z by block kind ({a.keys} keys, filler {a.filler} tokens; median over keys of the "
          f"min / median / max over the {model.config.fam_length} FAM vectors)")
    for i in sorted(per_layer):
        z = torch.stack(per_layer[i], dim=1)  # (B, updates, F); update u follows block u + 1 (block 0: ungated)
        stats = torch.stack([z.min(-1).values, z.median(-1).values, z.max(-1).values], -1).median(0).values
        blocks = [{"block": u + 1, "kind": kinds[u + 1], "min": float(s[0]), "median": float(s[1]),
                   "max": float(s[2])} for u, s in enumerate(stats) if u + 1 < len(kinds)]
        result["layers"].append(blocks)
        for kind in ("intro", "key", "key sentence", "filler", "question"):
            rows = [b for b in blocks if b["kind"] == kind]
            if rows:
                med = {k: statistics.median(b[k] for b in rows) for k in ("min", "median", "max")}
                print(f"  layer {i}, {kind:12s} ({len(rows):4d} blocks): z {med['min']:.2g} / {med['median']:.2g} "
                      f"/ {med['max']:.2g}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
