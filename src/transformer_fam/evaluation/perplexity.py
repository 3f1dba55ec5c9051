"""Next-token loss and accuracy over whole texts, bucketed by position, for several attention modes.

    fam eval ppl --model runs/smollm-fam --data book.txt --modes full,bswa,fam
    fam eval ppl --model runs/demo/fam --data passkey:4096 --modes bswa,fam

Each text runs through the model's streaming state in chunks, so memory stays constant in bswa /
fam mode however long the text. The same weights are reloaded once per mode
(``from_pretrained(dir, attention_mode=...)``) and compared in one table and one plot.
Positions are bucketed 0-4k, 4k-16k, 16k-64k, 64k+ by default (the paper's PG-19 metric is the
accuracy); ``--buckets 0,512,2048,8192`` sets the edges, e.g. to see a 512-token window.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.streaming import stream_chunks

def _label(n: int) -> str:
    return f"{n // 1024}k" if n and n % 1024 == 0 else str(n)


def make_buckets(edges: list[int]) -> tuple[tuple[int, int | None, str], ...]:
    """Position buckets from ascending edges: [0, 512, 2048] -> 0-512, 512-2k, 2k+."""
    if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"buckets {edges}: give ascending position edges starting at 0, e.g. 0,512,2048,8192")
    his = list(edges[1:]) + [None]
    return tuple((lo, hi, f"{_label(lo)}-{_label(hi)}" if hi is not None else f"{_label(lo)}+")
                 for lo, hi in zip(edges, his))


BUCKETS = make_buckets([0, 4096, 16384, 65536])  # 0-4k, 4k-16k, 16k-64k, 64k+


def bucket_of(position: int, buckets=BUCKETS) -> str:
    for lo, hi, name in buckets:
        if position >= lo and (hi is None or position < hi):
            return name
    raise AssertionError(position)


def load_texts(data: str, tokenizer) -> list[tuple[str, list[int]]]:
    """(name, token ids) for each text of ``data``: a built-in corpus name, a .txt / .jsonl file, a
    folder (see ``data.corpora.read_documents``), or passkey:N (one PassKey prompt, N filler tokens)."""
    from ..errors import UserError

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
    x = torch.tensor([ids], dtype=torch.long, device=getattr(model, "device", None))
    losses, correct, prev = [], [], None
    for chunk, out in stream_chunks(model, x, chunk_tokens):
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
    return torch.cat(losses).cpu(), torch.cat(correct).cpu()


def evaluate_texts(model, texts: list[tuple[str, list[int]]], chunk_tokens: int, progress: bool = True,
                   buckets=BUCKETS) -> dict:
    """{bucket: {"loss": mean, "accuracy": mean, "tokens": n}} over all texts (position = target index),
    buckets in order."""
    from tqdm.auto import tqdm

    sums: dict[str, list[float]] = {}
    for _, ids in tqdm(texts, desc=f"ppl {model.config.attention_mode}", disable=not progress, leave=False):
        if len(ids) < 2:
            continue
        loss, correct = token_metrics(model, ids, chunk_tokens)
        positions = torch.arange(1, len(ids))
        for lo, hi, name in buckets:
            sel = (positions >= lo) & (positions < (hi if hi is not None else len(ids) + 1))
            if sel.any():
                s = sums.setdefault(name, [0.0, 0.0, 0])
                s[0] += loss[sel].sum().item()
                s[1] += correct[sel].float().sum().item()
                s[2] += int(sel.sum())
    order = [name for _, _, name in buckets if name in sums]
    return {name: {"loss": sums[name][0] / sums[name][2], "accuracy": sums[name][1] / sums[name][2],
                   "tokens": sums[name][2]} for name in order}


def buckets_in(results: dict[str, dict]) -> list[str]:
    names: list[str] = []
    for r in results.values():
        names += [b for b in r if b not in names]
    return names


def format_ppl_table(results: dict[str, dict]) -> str:
    buckets = buckets_in(results)
    lines = [f"{'mode':>6s} " + " ".join(f"{b + ' loss':>13s} {b + ' acc':>12s}" for b in buckets)]
    for mode, r in results.items():
        cells = []
        for b in buckets:
            cells.append(f"{r[b]['loss']:13.3f} {100 * r[b]['accuracy']:11.1f}%" if b in r else f"{'-':>13s} {'-':>12s}")
        lines.append(f"{mode:>6s} " + " ".join(cells))
    return "\n".join(lines)
