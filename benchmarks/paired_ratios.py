"""The performance issue's ratios, measured in one process, interleaved, best of N.

    python benchmarks/paired_ratios.py --out docs/benchmarks_paired.md     # ~35 minutes, 1 thread

Every ratio compares runs made back to back in the same process on the same inputs, so a shared
machine's slow phases hit both sides alike (separate processes minutes apart, as in `fam bench`,
can disagree by 2x here). SmolLM2-135M shape, random weights, block 1024, memory 3, FAM 64.

- prefill at each --tokens: fam vs bswa vs Hugging Face LlamaForCausalLM (SDPA, its default
  cache, logits_to_keep=1), every model returning its cache;
- decode latency at the longest prefill: HF (its cache) vs fam (its FamCache);
- decode latency of fam at 4k and at 512k context (a stream started at position 508k: the
  state's size does not depend on how many tokens were read);
- fam prefill at 8k in bfloat16 vs float32.

Each prefill ratio comes with its *bound*: the ratio the FLOP counts allow if both sides ran at
the same FLOP/s (fam's F rows per block go through every layer, and its tokens attend to F more
keys). ``--prefill-only --tokens 2048 --reps 7 --append`` adds a steadier short-prompt reading.
"""

import argparse
import statistics
import sys
import time

import torch

from transformer_fam import FamCache
from transformer_fam.experiments.bench import _fam_model, _hf_model, machine, matmul_peak, prefill_flops, write_markdown
from transformer_fam.hardware import bf16_speedup

VOCAB = 49152


def prefill(model, ids):
    """Seconds to read ids with the cache returned, and the cache."""
    t0 = time.perf_counter()
    if hasattr(model.config, "fam_length"):  # this project's model: a FamCache
        out = model(ids, past_key_values=FamCache(model.config), use_cache=True, logits_to_keep=1)
    else:
        out = model(ids, use_cache=True, logits_to_keep=1)
    return time.perf_counter() - t0, out.past_key_values


def decode_ms(model, cache, steps=10):
    """Median ms per greedy step over ``steps`` single tokens appended to ``cache``."""
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        out = model(torch.tensor([[i + 5]]), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[2:])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/benchmarks_paired.md")
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--reps", type=int, default=3, help="repetitions per length (1 above 16k)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prefill-only", action="store_true", help="only the prefill ratios (no decode, no bfloat16)")
    p.add_argument("--append", action="store_true", help="add this run to --out instead of replacing it")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = argparse.Namespace(block_size=1024, mem_segments=3, fam_length=64)
    models = {"fam": _fam_model("fam", cfg, torch.float32), "bswa": _fam_model("bswa", cfg, torch.float32),
              "hf": _hf_model(cfg, torch.float32)}
    peak = max(matmul_peak("float32") for _ in range(3))  # the best of a few: a busy core measures low
    rows = []
    with torch.no_grad():
        for T in args.tokens:
            ids = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(T))
            best, caches = {k: float("inf") for k in models}, {}
            for _ in range(args.reps if T <= 16384 else 1):  # interleaved: same machine conditions
                for name, model in models.items():
                    s, caches[name] = prefill(model, ids)
                    best[name] = min(best[name], s)
                    print(f"T={T} {name}: {T / s:.0f} tok/s", flush=True)
            flops = {name: prefill_flops(name, T, cfg) for name in models}
            mfu = flops["fam"] / best["fam"] / 1e9 / peak
            rows += [(f"prefill T={T}: fam / bswa bswa {T / best['bswa']:.0f} tok/s, fam {T / best['fam']:.0f} "
                      f"tok/s (fam MFU {mfu:.0%})", f"{best['bswa'] / best['fam']:.2f}", ">= 0.95",
                      f"{flops['bswa'] / flops['fam']:.3f}"),
                     (f"prefill T={T}: fam / HF Llama (HF {T / best['hf']:.0f} tok/s)",
                      f"{best['hf'] / best['fam']:.2f}x",
                      {2048: ">= 0.9x", 32768: ">= 2.5x"}.get(T, ""), f"{flops['hf'] / flops['fam']:.3f}x")]
            if T == max(args.tokens) and not args.prefill_only:
                hf_ms, fam_ms = decode_ms(models["hf"], caches["hf"]), decode_ms(models["fam"], caches["fam"])
                rows.append((f"decode at {T} context: HF {hf_ms:.1f} ms/token, fam {fam_ms:.1f}",
                             f"{hf_ms / fam_ms:.2f}x", ">= 2.5x at 32k", ""))
            del caches
        if args.prefill_only:
            return write_markdown(table(args, peak, rows), args.out, args.append)
        fam = models["fam"]
        lat = {}
        for label, offset in (("4k", 0), ("512k", 512 * 1024 - 4096)):
            cache = FamCache(fam.config, position_offset=offset)
            fam(torch.randint(0, VOCAB, (1, 4096)), past_key_values=cache, use_cache=True, logits_to_keep=1)
            lat[label] = decode_ms(fam, cache, steps=12)  # stays inside one block: no FAM update
        rows.append((f"fam decode at 512k / 4k context ({lat['512k']:.1f} / {lat['4k']:.1f} ms/token)",
                     f"{lat['512k'] / lat['4k']:.2f}", "<= 1.1", ""))
        ids = torch.randint(0, VOCAB, (1, 8192), generator=torch.Generator().manual_seed(0))
        half = _fam_model("fam", cfg, torch.bfloat16)
        best = {"float32": float("inf"), "bfloat16": float("inf")}
        for _ in range(2):
            for name, model in (("float32", fam), ("bfloat16", half)):
                best[name] = min(best[name], prefill(model, ids)[0])
        rows.append((f"fam prefill 8k bfloat16 / float32 ({8192 / best['bfloat16']:.0f} / "
                     f"{8192 / best['float32']:.0f} tok/s)", f"{best['float32'] / best['bfloat16']:.2f}", ">= 1.7",
                     f"linear layer {bf16_speedup():.2f}"))
    write_markdown(table(args, peak, rows), args.out, args.append)


def table(args, peak: float, rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["# Paired ratios", "", f"`python {' '.join(sys.argv)}` — one process, interleaved, best of "
             f"{args.reps} (1 above 16k); {machine()}; float32 matmul peak {peak:.0f} GFLOP/s", "",
             "*bound*: the ratio if both sides ran at the same FLOP/s (their FLOP counts, "
             "`transformer_fam.experiments.bench.prefill_flops`); for bf16/fp32, the speed ratio of a linear layer "
             "(`transformer_fam.hardware.bf16_speedup`).", "",
             "| measurement | ratio | target | bound |", "|---|---|---|---|"]
    return lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]


if __name__ == "__main__":
    main()
