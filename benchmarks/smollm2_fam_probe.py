"""Issue 13 diagnosis: does the (converted, untrained or fine-tuned) FAM *write* the pass key?

A linear probe (ridge regression onto one-hot digits, closed form) decodes each digit of the key
from the FAM each layer holds after the key's block (mean over the F vectors, and all F vectors
concatenated), on held-out prompts. If the key is decodable there, the write side works and the
retrieval bottleneck is the read.

    PYTHONPATH=src python benchmarks/smollm2_fam_probe.py --n 240 [--adapter runs/x/adapter]
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from transformer_fam import from_hf
from transformer_fam.data.tokenizer import load_tokenizer
from transformer_fam.hf.smollm2 import smollm2_folder
from transformer_fam.data.passkey import _build, random_key


def ridge_acc(X, Y, ntr, lam):
    Xtr, Xte = X[:ntr], X[ntr:]
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    Xtr = torch.cat((Xtr, torch.ones(len(Xtr), 1)), 1)
    Xte = torch.cat((Xte, torch.ones(len(Xte), 1)), 1)
    # dual form (n << d): W = X^T (X X^T + lam I)^-1 Y
    K = Xtr @ Xtr.T
    alpha = torch.linalg.solve(K + lam * torch.eye(len(K)), Y[:ntr])
    pred = (Xte @ Xtr.T) @ alpha
    return float((pred.argmax(1) == Y[ntr:].argmax(1)).float().mean())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=240)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--F", type=int, default=16)
    p.add_argument("--extra-blocks", type=int, default=0, help="filler blocks after the key block")
    p.add_argument("--adapter", default=None)
    p.add_argument("--gate", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    tok = load_tokenizer(smollm2_folder())
    model = from_hf("smollm2", attention_mode="fam", block_size=a.block, mem_segments=0, fam_length=a.F,
                    dtype=torch.float32, **({"fam_read_gate": True} if a.gate else {}))
    if a.adapter:
        from transformer_fam.hf.lora import load_lora

        model = load_lora(model, a.adapter)
    model.eval()
    rng = random.Random(0)
    L = a.block
    n_tok = (1 + a.extra_blocks) * L
    feats_mean, feats_cat, keys = None, None, []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for s in range(0, a.n, 20):
            rows = []
            for _ in range(20):
                k = random_key(rng)
                ids, _ = _build(n_tok, k, 0.0, tok)
                rows.append(ids[:n_tok])
                keys.append(k)
            out = model(input_ids=torch.tensor(rows), use_cache=True, logits_to_keep=1)
            fams = [st.fam.float() for st in out.past_key_values.layers]  # FAM after the last complete block
            m = torch.stack([f.mean(1) for f in fams], 1)  # (B, layers, d)
            c = torch.stack([f.flatten(1) for f in fams], 1)
            feats_mean = m if feats_mean is None else torch.cat((feats_mean, m))
            feats_cat = c if feats_cat is None else torch.cat((feats_cat, c))
    ntr = int(0.75 * a.n)
    res = {}
    for digit in range(5):
        y = torch.tensor([int(str(k)[digit]) for k in keys])
        Y = torch.nn.functional.one_hot(y, 10).float()
        chance = float((y[ntr:] == y[:ntr].mode().values).float().mean())
        for name, X in (("mean", feats_mean), ("concat", feats_cat)):
            accs = [ridge_acc(X[:, layer], Y, ntr, lam=float(X.shape[-1]) * 0.1) for layer in range(X.shape[1])]
            res[f"digit{digit}_{name}"] = {"best_layer": int(torch.tensor(accs).argmax()), "best": max(accs),
                                          "layers_0_5_10_15_20_25_29": [round(accs[i], 2) for i in (0, 5, 10, 15, 20, 25, 29)]}
        res[f"digit{digit}_chance"] = chance
    print(json.dumps(res, indent=1))
    if a.out:
        open(a.out, "w").write(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
