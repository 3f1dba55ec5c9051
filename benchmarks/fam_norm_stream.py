"""Stream a long token sequence through trained FAM models (FamCache, no grad) and record how the
FAM's norm evolves: the paper's additive update (norm grows ~linearly with the number of blocks)
against the option ``fam_max_rms`` (each FAM vector rescaled to RMS <= c after every update).

    python benchmarks/fam_norm_stream.py                       # 1M tokens, 1 thread, ~5 minutes
    python benchmarks/fam_norm_stream.py --tokens 65536 --dtypes float32 --models runs/demo/fam

For each model and dtype: wall time to each checkpoint, the largest FAM L2 norm and RMS (over
layers, FAM vectors) at the checkpoints (64k, 256k, 1M tokens by default), and whether every
logit so far was finite. Writes --json and --md; prints the table.

A model is a folder, optionally with ``@C`` to load it with ``fam_max_rms=C`` (an inference-only
cap on weights trained without it). Tokens: the PassKey prompt's introduction and key sentence,
then its filler repeated (``--data filler``, the demo's training distribution), or uniformly
random token ids (``--data random``).
"""

import argparse
import json
import math
import platform
import random
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load(spec: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    import transformer_fam  # noqa: F401  (registers the fam model type)

    folder, _, cap = spec.partition("@")
    kwargs = {"fam_max_rms": float(cap)} if cap else {}
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).to(dtype).eval()


def token_stream(folder: str, n: int, kind: str, seed: int) -> torch.Tensor:
    """(1, n) token ids."""
    from transformers import AutoTokenizer

    from transformer_fam.data.passkey import FILLER, make_passkey_example

    tok = AutoTokenizer.from_pretrained(folder.partition("@")[0])
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.randint(4, len(tok), (1, n), generator=g)  # no special tokens
    ids, _ = make_passkey_example(0, 48213, 0.0, tok)
    head = ids[: ids.index(tok.convert_tokens_to_ids("What"))] if "What" in tok.get_vocab() else ids
    filler = tok(FILLER, add_special_tokens=False)["input_ids"]
    body = (filler * (n // len(filler) + 1))[: max(0, n - len(head))]
    return torch.tensor([(head + body)[:n]])


@torch.no_grad()
def stream(model, ids: torch.Tensor, chunk: int, checkpoints: list[int]) -> dict:
    from transformer_fam.core.streaming import stream_chunks

    finite, rows, t0 = True, [], time.perf_counter()
    marks = sorted(c for c in checkpoints if c <= ids.shape[1])
    seen = 0
    for piece, out in stream_chunks(model, ids, chunk):
        cache = out.past_key_values
        finite = finite and bool(torch.isfinite(out.logits).all())
        seen += piece.shape[1]
        while marks and seen >= marks[0]:
            fam = [f.float() for f in cache.fam_state()]
            rows.append({"tokens": marks.pop(0), "seconds": round(time.perf_counter() - t0, 1),
                         "max_l2": max(f.norm(dim=-1).max().item() for f in fam),
                         "max_rms": max(f.pow(2).mean(-1).sqrt().max().item() for f in fam),
                         "fam_finite": all(bool(torch.isfinite(f).all()) for f in fam),
                         "logits_finite": finite})
    return {"checkpoints": rows, "seconds": round(time.perf_counter() - t0, 1),
            "tokens_per_second": round(ids.shape[1] / (time.perf_counter() - t0))}


def fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else (f"{x:.4g}" if x < 1e5 else f"{x:.3g}")


def markdown(results: list[dict], tokens: int) -> str:
    marks = [r["tokens"] for r in results[0]["checkpoints"]]
    names = [f"{m // 1024}k" for m in marks]
    head = ("| model | fam_max_rms | dtype | " + " | ".join(f"max L2 / RMS @ {n}" for n in names)
            + " | logits finite | wall time (s) | tokens/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cells = " | ".join(f"{fmt(c['max_l2'])} / {fmt(c['max_rms'])}" for c in r["checkpoints"])
        finite = "yes" if all(c["logits_finite"] for c in r["checkpoints"]) else "NO"
        times = " / ".join(f"{c['seconds']:.0f}" for c in r["checkpoints"])
        lines.append(f"| {r['model']} | {r['fam_max_rms']} | {r['dtype']} | {cells} | {finite} | {times} | "
                     f"{r['tokens_per_second']} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="runs/demo/fam,runs/demo-cap186/fam,runs/demo-cap72/fam",
                   help="comma-separated model folders, each optionally FOLDER@C for fam_max_rms=C at load")
    p.add_argument("--tokens", type=int, default=1048576)
    p.add_argument("--checkpoints", default="65536,262144,1048576", help="token counts to record at")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--chunk-tokens", type=int, default=256, help="tokens per forward call")
    p.add_argument("--data", choices=("filler", "random"), default="filler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="docs/fam_norms.json")
    p.add_argument("--md", default="docs/fam_norms.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    checkpoints = sorted({min(int(c), args.tokens) for c in args.checkpoints.split(",")} | {args.tokens})
    results = []
    for spec in args.models.split(","):
        ids = token_stream(spec, args.tokens, args.data, args.seed)
        for dname in args.dtypes.split(","):
            model = load(spec, DTYPES[dname])
            r = stream(model, ids, args.chunk_tokens, checkpoints)
            r.update(model=spec.partition("@")[0], fam_max_rms=model.config.fam_max_rms, dtype=dname)
            results.append(r)
            last = r["checkpoints"][-1]
            print(f"{spec} {dname}: {r['seconds']:.0f}s, max L2 {fmt(last['max_l2'])}, max RMS "
                  f"{fmt(last['max_rms'])}, logits finite {last['logits_finite']}", flush=True)
    table = markdown(results, args.tokens)
    print(table)
    record = {"command": "python benchmarks/fam_norm_stream.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "torch": torch.__version__},
              "data": args.data, "chunk_tokens": args.chunk_tokens, "results": results}
    for path, text in ((args.json, json.dumps(record, indent=2)), (args.md, table + "\n")):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    print(f"wrote {args.json} and {args.md}")


if __name__ == "__main__":
    main()
