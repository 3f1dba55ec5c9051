"""Ratios measured in one process, interleaved, best of N (robust to a shared machine's noise).

    python benchmarks/paired_ratios.py --out docs/benchmarks_paired.md     # ~10 minutes, 1 thread

Prefill at T tokens: fam vs bswa vs Hugging Face Llama (same SmolLM2-135M shape, random weights,
block 1024, memory 3, FAM 64); decode latency of fam at 4k and at 512k context (a stream started
at position 508k: the state's size does not depend on how many tokens were read).
"""

import argparse
import statistics
import sys
import time

import torch

from transformer_fam import FamCache
from transformer_fam.bench import _fam_model, _hf_model, machine


def timed(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/benchmarks_paired.md")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = argparse.Namespace(block_size=1024, mem_segments=3, fam_length=64)
    models = {"fam": _fam_model("fam", cfg, torch.float32), "bswa": _fam_model("bswa", cfg, torch.float32),
              "hf": _hf_model(cfg, torch.float32)}
    ids = torch.randint(0, 49152, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    best = {k: float("inf") for k in models}
    with torch.no_grad():
        for _ in range(args.reps):  # interleaved: every model sees the same machine conditions
            for name, model in models.items():
                best[name] = min(best[name], timed(lambda: model(ids, logits_to_keep=1), 1))
        # decode latency at 4k and at 512k context (fam)
        fam = models["fam"]
        lat = {}
        for label, offset in (("4k", 0), ("512k", 512 * 1024 - 4096)):
            cache = FamCache(fam.config, position_offset=offset)
            fam(torch.randint(0, 49152, (1, 4096)), past_key_values=cache, use_cache=True, logits_to_keep=1)
            steps = []
            for i in range(12):  # stays inside one block: no FAM update in these steps
                t0 = time.perf_counter()
                fam(torch.tensor([[i + 5]]), past_key_values=cache, use_cache=True)
                steps.append(time.perf_counter() - t0)
            lat[label] = statistics.median(steps[2:])
    T = args.tokens
    lines = ["# Paired ratios", "", f"`python {' '.join(sys.argv)}` — one process, interleaved, best of "
             f"{args.reps}; {machine()}", "",
             "| measurement | value | target |", "|---|---|---|",
             f"| prefill T={T}: fam tok/s | {T / best['fam']:.0f} | |",
             f"| prefill T={T}: bswa tok/s | {T / best['bswa']:.0f} | |",
             f"| prefill T={T}: HF Llama tok/s | {T / best['hf']:.0f} | |",
             f"| fam / bswa prefill | {best['bswa'] / best['fam']:.2f} | >= 0.95 |",
             f"| fam / HF prefill | {best['hf'] / best['fam']:.2f}x | >= 0.9x at 2k |",
             f"| fam decode ms/token at 4k context | {1000 * lat['4k']:.1f} | |",
             f"| fam decode ms/token at 512k context | {1000 * lat['512k']:.1f} | |",
             f"| decode 512k / 4k | {lat['512k'] / lat['4k']:.2f} | <= 1.1 |"]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
