"""Next-token loss by position inside the block, beyond the first block: one model in BSWA mode, in
FAM mode and with the FAM reset every block, on the same texts. Shows where (early or late in a
block) the memory helps or costs.

    python benchmarks/inblock_loss.py --model smollm2-fam --data milton --fam-read-heads 4.4,4.5,8.1 \
        --out docs/inblock_loss.json

Positions t >= block_size are grouped by t mod block_size into --bins (edges); per group: mean loss
(nats) and accuracy (percent) of each mode, over all texts, each cut to --max-tokens. With
``--by target`` they are grouped instead by what is predicted: a digit token, or anything else (a
FAM trained on PassKey may leak stored digits into numbers in prose).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from transformer_fam.core.config import parse_read_heads
from transformer_fam.evaluation.ablation import load_in_mode
from transformer_fam.evaluation.perplexity import load_texts, token_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="milton")
    ap.add_argument("--fam-read-heads", default="", help="option O5 readers for the fam modes (default: the model's)")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--bins", default="0,8,32,64", help="edges inside the block; the last group runs to its end")
    ap.add_argument("--by", choices=("in-block", "target"), default="in-block",
                    help="group by the position inside the block, or by the target (digit / other)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    heads = parse_read_heads(a.fam_read_heads) if a.fam_read_heads else None
    per_mode, texts, block = {}, None, None
    for mode in ("bswa", "fam", "fam-reset"):
        model, tokenizer = load_in_mode(a.model, mode, "float32")
        block = model.config.block_size
        if mode != "bswa" and heads is not None:
            model.config.fam_read_heads = heads
        if texts is None:
            texts = [ids[: a.max_tokens] for _, ids in load_texts(a.data, tokenizer)]
        losses, correct, positions = [], [], []
        for ids in texts:
            loss, ok = token_metrics(model, ids, 4 * block)
            losses.append(loss)
            correct.append(ok.float())
            positions.append(torch.arange(1, len(ids)))  # the position of the predicted token
        per_mode[mode] = (torch.cat(losses), torch.cat(correct), torch.cat(positions))
        if a.by == "target" and "digit" not in per_mode:
            is_digit = [tokenizer.decode([t]).strip().isdigit() for t in range(len(tokenizer))]
            per_mode["digit"] = torch.tensor([is_digit[t] for ids in texts for t in ids[1:]])
        print(f"{mode}: done", flush=True)
    digit = per_mode.pop("digit", None)
    edges = [int(x) for x in a.bins.split(",")] + [block]
    keys = [("target", "digit"), ("target", "other")] if a.by == "target" else \
        [("in_block", f"{lo}-{hi}") for lo, hi in zip(edges, edges[1:])]
    groups = []
    for key, name in keys:
        row = {key: name}
        for mode, (loss, ok, pos) in per_mode.items():
            if key == "target":
                sel = (pos >= block) & (digit if name == "digit" else ~digit)
            else:
                lo, hi = (int(x) for x in name.split("-"))
                sel = (pos >= block) & (pos % block >= lo) & (pos % block < hi)
            if not sel.any():
                raise SystemExit(f"--data {a.data}: no target of group {name!r} beyond the first block")
            row[mode] = {"loss": round(loss[sel].mean().item(), 4), "accuracy": round(100 * ok[sel].mean().item(), 2),
                         "tokens": int(sel.sum())}
        groups.append(row)
        print(f"{key} {name:>7s}: " + "  ".join(f"{m} {row[m]['loss']:.3f} / {row[m]['accuracy']:.1f}%"
                                                       for m in per_mode)
              + f"  (fam - bswa {row['fam']['loss'] - row['bswa']['loss']:+.3f} nats, "
                f"reset - bswa {row['fam-reset']['loss'] - row['bswa']['loss']:+.3f})")
    if a.out:
        extra = {"by": "target"} if a.by == "target" else {}  # (in-block files stay as they were)
        a.out.write_text(json.dumps({"model": a.model, "data": a.data, "fam_read_heads": heads,
                                     "max_tokens": a.max_tokens, "block_size": block, **extra, "groups": groups}, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
