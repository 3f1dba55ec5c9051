"""PassKey accuracy of a trained FAM model with the FAM RMS cap (``fam_max_rms``) applied at
inference only, against the same weights uncapped, in one process (same prompts for every column).

    python benchmarks/fam_cap_passkey.py --model runs/demo/fam --out docs/fam_cap_passkey.json   # ~20 min, 1 thread

The caps are chosen from the model itself: the largest FAM RMS (over layers, FAM vectors and
prompts) after streaming the prompt of a ``--train-filler``-token sample (the demo's longest
training filler, 512), times each ``--factors`` entry. ``fam_max_rms`` is an option, not the
paper's form (rule F3): the paper's additive update is the default.
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch


def fam_rms_after(model, tokenizer, filler: int, samples: int, seed: int) -> list[float]:
    """Largest FAM RMS per layer after streaming the prompts (key at depth 0) of ``samples`` examples."""
    from transformer_fam.data.passkey import make_passkey_example, random_key
    from transformer_fam.core.streaming import stream

    rng = random.Random(seed)
    rows = [make_passkey_example(filler, random_key(rng), 0.0, tokenizer) for _ in range(samples)]
    a0 = rows[0][1][0]
    cache = stream(model, torch.tensor([r[0][:a0] for r in rows]), 16 * model.config.block_size).cache
    return [f.float().pow(2).mean(-1).sqrt().max().item() for f in cache.fam_state()]


def main():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import transformer_fam  # noqa: F401  (registers the fam model type)
    from transformer_fam.evaluation.passkey import evaluate_passkey, format_table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/demo/fam")
    p.add_argument("--train-filler", type=int, default=512, help="filler length the caps are measured at")
    p.add_argument("--factors", default="1,2", help="caps = factor x measured max RMS, comma separated")
    p.add_argument("--caps", default=None, help="explicit caps instead of --factors (comma separated)")
    p.add_argument("--lengths", default="0,16,32,64,128,256,512,1024,2048,4096,8192,16384,32768")
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--seed", type=int, default=1000, help="evaluation seed (the demo evaluates with seed 0 + 1000)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/fam_cap_passkey.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    t0 = time.time()
    base = AutoModelForCausalLM.from_pretrained(args.model, fam_max_rms=None).eval()  # whatever it was saved with
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with torch.no_grad():
        rms = fam_rms_after(base, tokenizer, args.train_filler, args.samples, args.seed)
    print(f"max FAM RMS per layer after a {args.train_filler}-token filler: {[round(r, 1) for r in rms]}")
    if args.caps:
        caps = [float(x) for x in args.caps.split(",")]
    else:
        caps = [round(float(f) * max(rms)) for f in args.factors.split(",")]
    columns, seconds = {}, {}
    for cap in [None] + caps:
        name = "uncapped" if cap is None else f"cap {cap:g}"
        model = base if cap is None else AutoModelForCausalLM.from_pretrained(args.model, fam_max_rms=cap).eval()
        t1 = time.time()
        columns[name] = evaluate_passkey(model, tokenizer, lengths, samples=args.samples, seed=args.seed,
                                         batch_size=args.samples, desc=name)
        seconds[name] = round(time.time() - t1, 1)
        print(f"{name}: {seconds[name]:.0f}s", flush=True)
    table = format_table(columns)
    print(table)
    record = {"model": args.model, "train_filler": args.train_filler, "max_rms_per_layer": rms, "caps": caps,
              "samples": args.samples, "seed": args.seed, "threads": args.threads, "seconds": seconds,
              "accuracy": columns, "total_seconds": round(time.time() - t0, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
