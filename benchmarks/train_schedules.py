"""Training step (forward + backward) of the layer-wise schedule vs the naive block loop, paired.

    python benchmarks/train_schedules.py --tokens 8192 --out docs/train_schedules.md   # ~25 min, 1 thread

SmolLM2-135M shape (random weights), fam mode, block 1024, memory 3, FAM 64, float32. The naive
loop is "for each block: for each layer: Algorithm 2" with the graph kept across blocks (the
streaming path of the same model); the layer-wise schedule is one call over all T tokens
(rule X1). Both compute the same loss (checked below). One process, interleaved, best of N.
"""

import argparse
import resource
import sys
import time

import torch

from transformer_fam import FamCache
from transformer_fam.experiments.bench import SMOLLM2_SHAPE, _fam_model, machine, write_markdown
from transformer_fam.training.setup import set_activation_checkpointing


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--fam-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing per layer (both)")
    p.add_argument("--out", default="docs/train_schedules.md")
    p.add_argument("--append", action="store_true", help="add this run to --out instead of replacing it")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = argparse.Namespace(block_size=args.block_size, mem_segments=3, fam_length=args.fam_length)
    model = _fam_model("fam", cfg, torch.float32).train()
    if args.checkpointing:
        set_activation_checkpointing(model, True)
    T, L = args.tokens, cfg.block_size
    ids = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (1, T), generator=torch.Generator().manual_seed(1))

    def layerwise():
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.item()

    def naive():
        cache, total, count = FamCache(model.config), 0.0, 0
        for a in range(0, T, L):  # the loss over the same T-1 next-token targets, block by block
            chunk = ids[:, a: a + L]
            logits = model(chunk, past_key_values=cache, use_cache=True).logits
            target = ids[:, a + 1: a + L + 1]
            total = total + torch.nn.functional.cross_entropy(
                logits[0, : target.shape[1]], target[0], reduction="sum")
            count += target.shape[1]
        loss = total / count
        loss.backward()
        return loss.item()

    times, losses = {"layerwise": [], "naive": []}, {}
    for _ in range(args.reps):
        for name, fn in (("layerwise", layerwise), ("naive", naive)):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            losses[name] = fn()
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.1f}s loss {losses[name]:.6f}", flush=True)
    assert abs(losses["layerwise"] - losses["naive"]) < 1e-4, losses
    best = {k: min(v) for k, v in times.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = ["# Training step: layer-wise schedule vs naive block loop", "",
             f"`python {' '.join(sys.argv)}` — one process, interleaved, best of {args.reps}; "
             f"{machine()}; activation checkpointing "
             f"{'on' if args.checkpointing else 'off'}; same loss to 1e-4 ({losses['layerwise']:.5f}).", "",
             f"Block {cfg.block_size}, memory 3, FAM {cfg.fam_length}.", "",
             "| T | layer-wise tok/s | naive tok/s | layer-wise / naive | target | process peak RSS MB |",
             "|---|---|---|---|---|---|",
             f"| {T} | {T / best['layerwise']:.1f} | {T / best['naive']:.1f} | "
             f"{best['naive'] / best['layerwise']:.2f} | >= 1.3 at 8k | {peak:.0f} |"]
    write_markdown(lines[2:] if args.append else lines, args.out, append=args.append)  # no second title


if __name__ == "__main__":
    main()
