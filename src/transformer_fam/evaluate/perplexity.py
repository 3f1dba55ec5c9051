"""Next-token loss and accuracy over whole texts, bucketed by position, for several attention modes.

    fam eval ppl --model runs/smollm-fam --data book.txt --modes full,bswa,fam
    fam eval ppl --model runs/demo/fam --data passkey:4096 --modes bswa,fam

Each text runs through the model's streaming state in chunks, so memory stays constant in bswa /
fam mode however long the text. The same weights are reloaded once per mode
(``from_pretrained(dir, attention_mode=...)``) and compared in one table and one plot.
Positions are bucketed 0-4k, 4k-16k, 16k-64k, 64k+ (the paper's PG-19 metric is the accuracy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..hardware import add_dtype_argument

BUCKETS = ((0, 4096, "0-4k"), (4096, 16384, "4k-16k"), (16384, 65536, "16k-64k"), (65536, None, "64k+"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (save_pretrained + tokenizer)")
    parser.add_argument("--data", required=True,
                        help="a text file, a folder of .txt files, or passkey:N (one PassKey prompt with N filler tokens)")
    parser.add_argument("--modes", default="full,bswa,fam", help="attention modes to compare, comma separated")
    parser.add_argument("--max-tokens", type=int, default=None, help="cut each text after this many tokens")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="tokens per streamed call (default 4 blocks)")
    parser.add_argument("--out", default=None, help="output folder for ppl.json / ppl.png (default: the model folder)")
    parser.add_argument("--threads", type=int, default=None)
    add_dtype_argument(parser)


def bucket_of(position: int) -> str:
    for lo, hi, name in BUCKETS:
        if position >= lo and (hi is None or position < hi):
            return name
    raise AssertionError(position)


def load_texts(data: str, tokenizer) -> list[tuple[str, list[int]]]:
    """(name, token ids) for each text of ``data``: a built-in corpus name, a .txt / .jsonl file, a
    folder (see ``data.corpora.read_documents``), or passkey:N (one PassKey prompt, N filler tokens)."""
    from ..cli import UserError

    if data.startswith("passkey:"):
        from ..data.passkey import make_passkey_example

        try:
            n = int(data.split(":", 1)[1])
        except ValueError as err:
            raise UserError(f"--data {data}: expected passkey:N with N an integer") from err
        ids, _ = make_passkey_example(n, 12345, 0.0, tokenizer)
        return [(data, ids)]
    from ..data.corpora import read_documents

    docs = read_documents(data)
    if not docs:
        raise UserError(f"--data {data}: no documents")
    return [(f"{Path(data).name}[{i}]", tokenizer.encode(doc, add_special_tokens=False)) for i, doc in enumerate(docs)]


@torch.no_grad()
def token_metrics(model, ids: list[int], chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token loss and correctness for one text, streamed in chunks.

    Returns (loss (T-1,), correct (T-1,)) for predicting token t+1 from tokens 0..t.
    """
    x = torch.tensor([ids], dtype=torch.long)
    cache, losses, correct, prev = None, [], [], None
    for chunk in x.split(chunk_tokens, dim=1):
        out = model(chunk, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[0].float()  # (c, V)
        if prev is not None:  # the previous chunk's last position predicts this chunk's first token
            logits = torch.cat((prev, logits), dim=0)
            targets = chunk[0]
        else:
            targets = chunk[0, 1:]
        pred_logits = logits[: len(targets)]
        losses.append(torch.nn.functional.cross_entropy(pred_logits, targets, reduction="none"))
        correct.append(pred_logits.argmax(-1) == targets)
        prev = logits[-1:]
    return torch.cat(losses), torch.cat(correct)


def evaluate_texts(model, texts: list[tuple[str, list[int]]], chunk_tokens: int, progress: bool = True) -> dict:
    """{bucket: {"loss": mean, "accuracy": mean, "tokens": n}} over all texts (position = target index)."""
    from tqdm.auto import tqdm

    sums: dict[str, list[float]] = {}
    for _, ids in tqdm(texts, desc=f"ppl {model.config.attention_mode}", disable=not progress, leave=False):
        if len(ids) < 2:
            continue
        loss, correct = token_metrics(model, ids, chunk_tokens)
        positions = torch.arange(1, len(ids))
        for lo, hi, name in BUCKETS:
            sel = (positions >= lo) & (positions < (hi if hi is not None else len(ids) + 1))
            if sel.any():
                s = sums.setdefault(name, [0.0, 0.0, 0])
                s[0] += loss[sel].sum().item()
                s[1] += correct[sel].float().sum().item()
                s[2] += int(sel.sum())
    return {name: {"loss": s[0] / s[2], "accuracy": s[1] / s[2], "tokens": s[2]} for name, s in sums.items()}


def format_ppl_table(results: dict[str, dict]) -> str:
    buckets = [name for _, _, name in BUCKETS if any(name in r for r in results.values())]
    lines = [f"{'mode':>6s} " + " ".join(f"{b + ' loss':>13s} {b + ' acc':>12s}" for b in buckets)]
    for mode, r in results.items():
        cells = []
        for b in buckets:
            cells.append(f"{r[b]['loss']:13.3f} {100 * r[b]['accuracy']:11.1f}%" if b in r else f"{'-':>13s} {'-':>12s}")
        lines.append(f"{mode:>6s} " + " ".join(cells))
    return "\n".join(lines)


def plot_ppl(results: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = [name for _, _, name in BUCKETS if any(name in r for r in results.values())]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / max(1, len(results))
    for i, (mode, r) in enumerate(results.items()):
        xs = [j + i * width for j, b in enumerate(buckets) if b in r]
        axes[0].bar(xs, [r[b]["loss"] for b in buckets if b in r], width, label=mode)
        axes[1].bar(xs, [100 * r[b]["accuracy"] for b in buckets if b in r], width, label=mode)
    for ax, label in zip(axes, ("next-token loss", "next-token accuracy (%)")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(buckets))], buckets)
        ax.set_xlabel("position")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    from ..cli import UserError
    from .passkey import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("full", "bswa", "fam")]
    if not modes or bad:
        raise UserError(f"--modes {args.modes}: choose from full, bswa, fam")
    out = Path(args.out or args.model)
    out.mkdir(parents=True, exist_ok=True)
    results, t0, texts = {}, time.time(), None
    for mode in modes:
        model, tokenizer = load_model(args.model, mode, args.dtype)
        if texts is None:
            texts = load_texts(args.data, tokenizer)
            if args.max_tokens:
                texts = [(n, ids[: args.max_tokens]) for n, ids in texts]
        cfg = model.config
        chunk = args.chunk_tokens or (4 * cfg.block_size if mode != "full" else 2048)
        results[mode] = evaluate_texts(model, texts, chunk)
    print(format_ppl_table(results))
    plot_ppl(results, out / "ppl.png", f"{Path(args.model).name} on {Path(args.data).name}")
    record = {"model": str(args.model), "data": args.data, "texts": len(texts),
              "tokens": sum(len(ids) for _, ids in texts), "seconds": round(time.time() - t0, 1), "modes": results}
    (out / "ppl.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'ppl.json'} and {out / 'ppl.png'}")
    return 0
