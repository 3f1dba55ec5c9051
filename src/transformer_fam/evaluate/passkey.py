"""PassKey retrieval accuracy of any loadable model, streamed at constant memory.

    fam eval passkey --model runs/demo/fam --lengths 128,1024,8192 --samples 50
    fam eval passkey --model runs/demo/fam --lengths 256,2048 --depths 0,0.5,1 --out runs/eval-pk

The prompt (FAM_SPEC §8 format) runs through the model's FamCache in chunks of whole blocks, so a
256k-token prompt needs no more memory than a short one in bswa / fam mode; then the answer is
decoded greedily and counts as right only when every digit of the key is right.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import torch

from ..data.passkey import make_passkey_example, random_key
from ..hardware import add_dtype_argument, to_run_dtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (save_pretrained + tokenizer)")
    parser.add_argument("--lengths", default="0,64,256,1024,4096", help="filler lengths in tokens, comma separated")
    parser.add_argument("--depths", default=None, help="key depths in [0,1], comma separated (heat map)")
    parser.add_argument("--samples", type=int, default=50, help="prompts per (length, depth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--chunk-tokens", type=int, default=None, help="tokens per streamed call (default 16 blocks)")
    parser.add_argument("--attention-mode", default=None, help="reload the weights in another mode (full/bswa/fam)")
    parser.add_argument("--out", default=None, help="output folder for passkey.json / passkey.png (default: the model folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    add_dtype_argument(parser)


def _chunk_size(model, chunk_tokens: int | None) -> int:
    if chunk_tokens:
        return chunk_tokens
    cfg = model.config
    return 16 * cfg.block_size if getattr(cfg, "attention_mode", "full") != "full" else 4096


@torch.no_grad()
def stream_prompt(model, ids: torch.Tensor, chunk_tokens: int):
    """Feed ids (B, T) through the model in chunks; returns (last logits (B, V), cache)."""
    cache, out = None, None
    for chunk in ids.split(chunk_tokens, dim=1):
        out = model(chunk, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
    return out.logits[:, -1], cache


@torch.no_grad()
def greedy_answer(model, ids: torch.Tensor, n_tokens: int, chunk_tokens: int) -> torch.Tensor:
    """Greedy continuation of n_tokens tokens after the prompts ids (B, T) -> (B, n_tokens)."""
    logits, cache = stream_prompt(model, ids, chunk_tokens)
    out = []
    for i in range(n_tokens):
        tok = logits.argmax(-1)  # (B,)
        out.append(tok)
        if i + 1 < n_tokens:
            res = model(tok[:, None], past_key_values=cache, use_cache=True)
            logits, cache = res.logits[:, -1], res.past_key_values
    return torch.stack(out, dim=1)


def answer_is_right(tokenizer, answer_ids: list[int], key: int) -> bool:
    """True when the first 5 digits of the decoded answer are the key."""
    digits = re.sub(r"\D", "", tokenizer.decode(answer_ids, skip_special_tokens=True))
    return digits[:5] == str(key)


@torch.no_grad()
def passkey_accuracy(model, tokenizer, filler_tokens: int, depth: float = 0.0, samples: int = 50, seed: int = 0,
                     batch_size: int = 25, chunk_tokens: int | None = None) -> float:
    """Fraction of ``samples`` PassKey prompts whose key the model decodes exactly (greedy).

    Keys are drawn from ``random.Random(seed)``; prompts of one length are batched together.
    """
    model.eval()
    rng = random.Random(f"{seed}-{filler_tokens}-{depth}")
    chunk = _chunk_size(model, chunk_tokens)
    right = 0
    for start in range(0, samples, batch_size):
        keys = [random_key(rng) for _ in range(min(batch_size, samples - start))]
        rows = [make_passkey_example(filler_tokens, k, depth, tokenizer) for k in keys]
        a0, a1 = rows[0][1]
        ids = torch.tensor([r[0][:a0] for r in rows], dtype=torch.long)
        pred = greedy_answer(model, ids, a1 - a0, chunk)
        right += sum(answer_is_right(tokenizer, p.tolist(), k) for p, k in zip(pred, keys))
    return right / samples


def evaluate_passkey(model, tokenizer, lengths: list[int], depths: list[float] | None = None, samples: int = 50,
                     seed: int = 0, batch_size: int = 25, chunk_tokens: int | None = None,
                     progress: bool = True, desc: str = "passkey", position: int = 0) -> dict:
    """Accuracy per filler length (and per depth): {"<length>": acc} or {"<depth>": {"<length>": acc}}."""
    from tqdm.auto import tqdm

    grid = [(d, n) for d in (depths or [0.0]) for n in lengths]
    results: dict = {}
    for d, n in tqdm(grid, desc=desc, disable=not progress, leave=False, position=position):
        acc = passkey_accuracy(model, tokenizer, n, d, samples, seed, batch_size, chunk_tokens)
        if depths is None:
            results[str(n)] = acc
        else:
            results.setdefault(str(d), {})[str(n)] = acc
    return results


def format_table(columns: dict[str, dict[str, float]], title: str = "filler tokens") -> str:
    """A plain-text table: one row per length, one column per model."""
    lengths = sorted({int(k) for col in columns.values() for k in col})
    names = list(columns)
    lines = [f"{title:>14s} " + " ".join(f"{n:>8s}" for n in names)]
    for n in lengths:
        cells = " ".join(f"{100 * columns[name][str(n)]:7.1f}%" if str(n) in columns[name] else f"{'-':>8s}"
                         for name in names)
        lines.append(f"{n:>14d} " + cells)
    return "\n".join(lines)


def plot_accuracy(columns: dict[str, dict[str, float]], path: Path, title: str, train_max: int | None = None,
                  backprop_max: int | None = None) -> None:
    """Accuracy vs filler length, log x-axis, one line per model (paper Fig. 3a in kind); filler 0
    is drawn at x=1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, col in columns.items():
        xs = sorted(int(k) for k in col)
        ax.plot([max(x, 1) for x in xs], [100 * col[str(x)] for x in xs], marker="o", label=name)
    if train_max:
        ax.axvline(train_max, color="grey", linestyle="--", linewidth=1, label=f"longest training filler ({train_max})")
    if backprop_max and backprop_max != train_max:
        ax.axvline(backprop_max, color="grey", linestyle=":", linewidth=1,
                   label=f"longest fully backpropagated filler ({backprop_max})")
    ax.set_xscale("log")
    ax.set_xlabel("filler tokens (0 drawn at 1)")
    ax.set_ylabel("PassKey accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmap(results: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Accuracy by depth (rows) x filler length (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted(results, key=float)
    lengths = sorted({int(k) for row in results.values() for k in row})
    grid = [[100 * results[d].get(str(n), float("nan")) for n in lengths] for d in depths]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(lengths), 1.2 + 0.5 * len(depths)))
    im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], rotation=45)
    ax.set_yticks(range(len(depths)), depths)
    ax.set_xlabel("filler tokens")
    ax.set_ylabel("key depth")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_model(folder: str, attention_mode: str | None = None, dtype: str = "auto"):
    """Any model folder the project can load, with its tokenizer; in eval mode, in ``dtype``
    (hardware.resolve_dtype)."""
    import transformer_fam  # noqa: F401  (registers the fam model type)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..cli import UserError

    if not Path(folder).is_dir():
        raise UserError(f"--model {folder}: no such folder")
    kwargs = {"attention_mode": attention_mode} if attention_mode else {}
    model = to_run_dtype(AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval(), dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def run(args) -> int:
    from ..cli import UserError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        depths = _floats(args.depths) if args.depths else None
    except ValueError as err:
        raise UserError(f"--lengths / --depths: {err}") from err
    if not lengths or min(lengths) < 0:
        raise UserError("--lengths: give non-negative integers, e.g. 0,256,4096")
    if depths and not all(0 <= d <= 1 for d in depths):
        raise UserError("--depths: values must lie in [0, 1]")
    model, tokenizer = load_model(args.model, args.attention_mode, args.dtype)
    out = Path(args.out or args.model)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.model).name + (f" ({args.attention_mode})" if args.attention_mode else "")
    t0 = time.time()
    results = evaluate_passkey(model, tokenizer, lengths, depths, args.samples, args.seed, args.batch_size,
                               args.chunk_tokens)
    if depths is None:
        print(format_table({name: results}))
        plot_accuracy({name: results}, out / "passkey.png", f"PassKey: {name}")
    else:
        print(format_table({f"depth {d}": row for d, row in results.items()}))
        plot_heatmap(results, out / "passkey.png", f"PassKey: {name}")
    record = {"model": str(args.model), "attention_mode": model.config.attention_mode, "samples": args.samples,
              "seed": args.seed, "seconds": round(time.time() - t0, 1),
              "accuracy" if depths is None else "accuracy_by_depth": results}
    (out / "passkey.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'passkey.json'} and {out / 'passkey.png'}")
    return 0
