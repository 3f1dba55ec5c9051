"""Is the key lost, or is it read wrong? Linear probes on a demo model's FAM (issue 14).

    python benchmarks/passkey_fam_drift.py --model runs/demo-u/fam --lengths 128,512,2048,8192

For each filler length, N prompts with new keys (depth 0) are streamed up to the answer's block
and the FAM every layer hands that block is kept. A ridge probe decodes key digit j from FAM
slot j (RMS-normalised), per layer:
- "same length": trained and tested (3:1 split) at that length: is the key still in the FAM?
- "trained at REF": trained at the reference length(s) (``--reference 512,2048``: on all of them),
  applied at this one: does a fixed read still work?
and the cosine of each slot's mean over prompts against the (first) reference length's (the common
drift), the share of that drift (the change of the slot means since then, squared) that all F
slots have in common (the part option O3, fam_center, hides from the readers), and the "key share":
the share of each key slot's mean square that varies between prompts (is the key diluted?).
``--centred`` probes the FAM as O3's readers see it (each slot minus the slot mean, then
RMS-normalised), for a model trained with the option or, for comparison, without it.
Writes OUT (json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import torch

from transformer_fam import FamForCausalLM
from transformer_fam.core.layers import center_slots
from transformer_fam.core.streaming import stream
from transformer_fam.data.passkey import make_passkey_example, random_key
from transformer_fam.data.tokenizer import load_tokenizer


def rms_normalised(f: torch.Tensor) -> torch.Tensor:
    return f / f.pow(2).mean(-1, keepdim=True).sqrt()


def shared_share(f: torch.Tensor, ref: torch.Tensor) -> float:
    """Share of the change of the slot means (over prompts; f, ref (N, F, d)) that all slots share."""
    delta = f.mean(0) - ref.mean(0)  # (F, d)
    return float(delta.mean(0).pow(2).sum() * delta.shape[0] / delta.pow(2).sum())


def key_share(f: torch.Tensor) -> list[float]:
    """Per slot (f (N, S, d)): the share of the slot's mean square that varies between prompts (the
    part that can hold the key; the rest is the same for every prompt)."""
    spread = (f - f.mean(0)).pow(2).sum(-1).mean(0)
    return [round(float(x), 4) for x in spread / f.pow(2).sum(-1).mean(0)]


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
    return [rms_normalised(f) for f in cache.fam_state()], torch.tensor(digits)  # per layer (N, F, d)


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
    p.add_argument("--reference", default="128",
                   help="filler length(s) the fixed probe is trained at (comma-separated: on all of them; "
                        "the drift is measured against the first)")
    p.add_argument("--prompts", type=int, default=400)
    p.add_argument("--centred", action="store_true",
                   help="probe the slots minus their mean over the F slots (what fam_center's readers see)")
    p.add_argument("--out", default=None, help="json file (default MODEL/fam_drift[_centred].json)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = FamForCausalLM.from_pretrained(a.model).eval()
    tok = load_tokenizer(a.model)
    lengths = [int(x) for x in a.lengths.split(",")]
    refs = [int(x) for x in a.reference.split(",")]
    ref_name = "+".join(map(str, refs))
    raw = {n: fam_entering_answer(model, tok, n, a.prompts, seed=n) for n in sorted({*refs, *lengths})}
    view = (lambda f: rms_normalised(center_slots(f))) if a.centred else (lambda f: f)
    data = {n: ([view(f) for f in fams], d) for n, (fams, d) in raw.items()}
    ref_f, ref_d = data[refs[0]]
    fit_f = [torch.cat([data[n][0][layer] for n in refs]) for layer in range(len(ref_f))]
    fit_d = torch.cat([data[n][1] for n in refs])
    split = a.prompts * 3 // 4
    result = {}
    for n in lengths:
        f, d = data[n]
        rows = {}
        for layer in range(len(f)):
            same = [accuracy(ridge(f[layer][:split, j], d[:split, j]), f[layer][split:, j], d[split:, j])
                    for j in range(5)]
            fixed = [accuracy(ridge(fit_f[layer][:, j], fit_d[:, j]), f[layer][:, j], d[:, j]) for j in range(5)]
            cos = torch.nn.functional.cosine_similarity(f[layer].mean(0), ref_f[layer].mean(0), dim=-1)[:5]
            shared = shared_share(raw[n][0][layer], raw[refs[0]][0][layer])
            key = key_share(f[layer][:, :5])
            rows[f"layer {layer}"] = {"same_length": same, f"trained_at_{ref_name}": fixed,
                                      "mean_slot_cos": [round(float(c), 3) for c in cos],
                                      "shared_drift_share": round(shared, 3), "key_share": key}
            print(f"filler {n:6d} layer {layer}: same-length probe {min(same):.2f}-{max(same):.2f}, "
                  f"probe trained at {ref_name} {min(fixed):.2f}-{max(fixed):.2f}, "
                  f"cos(mean slot) {float(cos.min()):.2f}-{float(cos.max()):.2f}, "
                  f"drift shared by all slots {shared:.2f}, key share {min(key):.3f}-{max(key):.3f}", flush=True)
        result[str(n)] = rows
    out = a.out or f"{a.model}/fam_drift{'_centred' if a.centred else ''}.json"
    with open(out, "w") as fh:
        json.dump({"model": a.model, "reference": refs[0] if len(refs) == 1 else refs, "prompts": a.prompts, "centred": a.centred,
                   "lengths": result}, fh, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
