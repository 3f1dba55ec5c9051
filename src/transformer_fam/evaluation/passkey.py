"""PassKey retrieval accuracy of any loadable model, streamed at constant memory.

    fam eval passkey --model runs/demo/fam --lengths 128,1024,8192 --samples 50
    fam eval passkey --model runs/demo/fam --lengths 256,2048 --depths 0,0.5,1 --out runs/eval-pk

    from transformer_fam.evaluation.passkey import evaluate_passkey
    evaluate_passkey(model, tokenizer, lengths=[128, 1024], samples=20)   # {"128": 1.0, "1024": 0.95}

The prompt (docs/algorithm.md §10 format) runs through the model's FamCache in chunks of whole blocks, so a
256k-token prompt needs no more memory than a short one in bswa / fam mode; then the answer is
decoded greedily and counts as right only when every digit of the key is right.
"""

from __future__ import annotations

import random
import re

import torch

from ..core.streaming import default_chunk_size, stream
from ..data.passkey import make_passkey_example, random_key


@torch.no_grad()
def greedy_answer(model, ids: torch.Tensor, n_tokens: int, chunk_tokens: int) -> torch.Tensor:
    """Greedy continuation of n_tokens tokens after the prompts ids (B, T) -> (B, n_tokens)."""
    read = stream(model, ids, chunk_tokens)
    logits, cache = read.logits, read.cache
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
                     batch_size: int = 25, chunk_tokens: int | None = None, jitter: int = 0) -> float:
    """Fraction of ``samples`` PassKey prompts whose key the model decodes exactly (greedy).

    Keys are drawn from ``random.Random(seed)``; prompts of one length are batched together. ``jitter``
    > 0 gives each prompt ``filler_tokens`` plus its own offset drawn uniformly from 0 .. jitter - 1 (after
    the keys, from the same generator): with jitter = the block size the answer falls anywhere in a block,
    so the accuracy is over all block alignments, not one (a block-boundary answer is a FAM model's hard case).
    """
    if jitter < 0:
        raise ValueError(f"jitter={jitter}: must be >= 0")
    model.eval()
    rng = random.Random(f"{seed}-{filler_tokens}-{depth}")
    chunk = chunk_tokens or default_chunk_size(model.config)
    keys = [random_key(rng) for _ in range(samples)]
    fillers = [filler_tokens + rng.randrange(jitter) if jitter else filler_tokens for _ in keys]
    right = 0
    for n in sorted(set(fillers)):  # one batch shape per filler length
        group = [k for k, f in zip(keys, fillers) if f == n]
        for start in range(0, len(group), batch_size):
            batch = group[start: start + batch_size]
            rows = [make_passkey_example(n, k, depth, tokenizer) for k in batch]
            a0, a1 = rows[0][1]
            ids = torch.tensor([r[0][:a0] for r in rows], dtype=torch.long, device=getattr(model, "device", None))
            pred = greedy_answer(model, ids, a1 - a0, chunk)
            right += sum(answer_is_right(tokenizer, p.tolist(), k) for p, k in zip(pred, batch))
    return right / samples


def evaluate_passkey(model, tokenizer, lengths: list[int], depths: list[float] | None = None, samples: int = 50,
                     seed: int = 0, batch_size: int = 25, chunk_tokens: int | None = None,
                     progress: bool = True, desc: str = "passkey", position: int = 0, jitter: int = 0) -> dict:
    """Accuracy per filler length (and per depth): {"<length>": acc} or {"<depth>": {"<length>": acc}};
    with ``jitter`` each prompt's filler is the length plus 0 .. jitter - 1 tokens (``passkey_accuracy``)."""
    from tqdm.auto import tqdm

    grid = [(d, n) for d in (depths or [0.0]) for n in lengths]
    results: dict = {}
    for d, n in tqdm(grid, desc=desc, disable=not progress, leave=False, position=position):
        acc = passkey_accuracy(model, tokenizer, n, d, samples, seed, batch_size, chunk_tokens, jitter)
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
