"""Stream 1M tokens through a SmolLM2-135M-shaped fam model: wall time, peak memory, FAM norm.

    python benchmarks/stream_1m.py --dtype bfloat16 --out docs/stream_1m.md    # ~1 h, 1 thread

Random weights and random tokens, block 1024, memory 3, FAM 64, read in 8k chunks through one
FamCache (no grad). Peak RSS is sampled after every chunk, so the table shows whether memory
stays flat as the stream grows (the state has a constant size).
"""

import argparse
import resource
import sys
import time

import torch

from transformer_fam import FamCache
from transformer_fam.experiments.bench import SMOLLM2_SHAPE, _fam_model, machine, write_markdown


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=1 << 20)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/stream_1m.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = argparse.Namespace(block_size=1024, mem_segments=3, fam_length=64)
    model = _fam_model("fam", cfg, getattr(torch, args.dtype))
    gen = torch.Generator().manual_seed(0)
    cache, rows, t0 = FamCache(model.config), [], time.perf_counter()
    marks = {1 << 16, 1 << 18, args.tokens}
    with torch.no_grad():
        for done in range(args.chunk, args.tokens + 1, args.chunk):
            ids = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (1, args.chunk), generator=gen)
            logits = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            if done in marks:
                norm = max(float(st.fam.float().norm(dim=-1).max()) for st in cache.layers)
                rows.append((done, time.perf_counter() - t0, rss_mb(), cache.num_elements(), norm,
                             bool(torch.isfinite(logits).all())))
                print(f"{done} tokens: {rows[-1][1]:.0f}s, peak RSS {rows[-1][2]:.0f} MB, max FAM norm {norm:.1f}",
                      flush=True)
    lines = ["# A 1M-token stream (fam, SmolLM2-135M shape)", "",
             f"`python {' '.join(sys.argv)}` — {machine()}; {args.dtype}, random weights and tokens, "
             f"block 1024, memory 3, FAM 64, {args.chunk}-token chunks through one FamCache.", "",
             "| tokens read | wall time s | tok/s | process peak RSS MB | cache elements | max FAM L2 norm | logits finite |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {s:.0f} | {n / s:.0f} | {r:.0f} | {e} | {f:.1f} | {ok} |" for n, s, r, e, f, ok in rows]
    first, last = rows[0], rows[-1]
    lines += ["", f"Peak memory at {last[0]} / at {first[0]} tokens: {last[2] / first[2]:.2f} (target <= 1.1)."]
    write_markdown(lines, args.out)


if __name__ == "__main__":
    main()
