"""Feeding a sequence through a FamCache in chunks: the one loop every reader of long inputs uses.

In ``bswa`` / ``fam`` mode both the state and the per-chunk activations have a constant size, so
the sequence length is unbounded; any chunking gives the same logits (rule S2).

    from transformer_fam.core.streaming import stream, stream_chunks

    result = stream(model, ids, chunk_size=1024)          # .cache, .logits (B, vocab) of the last position
    for chunk, out in stream_chunks(model, ids, 1024):    # every chunk's full output, e.g. for a loss
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .cache import FamCache


@dataclass
class StreamResult:
    """What ``stream`` returns: the state after the last token, and that token's logits (B, vocab)."""

    cache: FamCache
    logits: torch.Tensor


def default_chunk_size(config) -> int:
    """Tokens per call when the caller does not say: 16 blocks in bswa / fam mode, 4096 in full."""
    return 16 * config.block_size if getattr(config, "attention_mode", "full") != "full" else 4096


def stream_chunks(model, ids: torch.LongTensor, chunk_size: int | None = None, cache: FamCache | None = None,
                  logits_to_keep: int = 0, progress: bool = False,
                  desc: str = "reading") -> Iterator[tuple[torch.LongTensor, object]]:
    """Yield ``(chunk, output)`` for each chunk of ``ids`` (B, T) fed through the model's cache.

    The cache (``cache``, or a new one) is continued in place: after the loop,
    ``output.past_key_values`` holds the whole sequence. Autograd follows the caller's mode.

    Args:
        chunk_size: tokens per call (default ``default_chunk_size``).
        logits_to_keep: 0 for every position's logits, N for the last N of each chunk.
        progress: a tqdm bar (on stderr) counting tokens.
    """
    from tqdm.auto import tqdm

    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(f"stream: expected non-empty ids of shape (batch, seq_len), got {tuple(ids.shape)}")
    chunk_size = chunk_size or default_chunk_size(model.config)
    if chunk_size < 1:
        raise ValueError(f"stream: chunk_size must be >= 1, got {chunk_size}")
    with tqdm(total=ids.shape[1], unit="tok", desc=desc, disable=not progress) as bar:
        for chunk in ids.split(chunk_size, dim=1):
            out = model(chunk, past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep)
            cache = out.past_key_values
            bar.update(chunk.shape[1])
            yield chunk, out


def stream(model, ids: torch.LongTensor, chunk_size: int | None = None, cache: FamCache | None = None,
           progress: bool = False, grad: bool = False, desc: str = "reading") -> StreamResult:
    """Read ``ids`` (B, T) into a FamCache in chunks; returns the cache and the last logits.

    ``grad=False`` (default) runs without autograd, as reading a prompt does; with ``grad=True``
    the caller's autograd mode applies.
    """
    out = None
    with torch.no_grad() if not grad else contextlib.nullcontext():
        for _, out in stream_chunks(model, ids, chunk_size, cache, logits_to_keep=1, progress=progress,
                                    desc=desc):
            pass
    return StreamResult(out.past_key_values, out.logits[:, -1])
