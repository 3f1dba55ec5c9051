"""The three attention patterns as token x token matrices, read off the model's own block mask
(drawn by ``transformer_fam.plots.draw_patterns``, the README figure)."""

from __future__ import annotations

import numpy as np
import torch

from .plan import BlockPlan


def token_pattern(mode: str, T: int, L: int, m: int, F: int) -> np.ndarray:
    """(T, F + T) matrix of what each query attends to: 0 nothing, 1 a token, 2 + b the FAM made
    from block b - 1 (column j < F is FAM vector j). Built from BlockPlan's mask for bswa / fam."""
    out = np.zeros((T, F + T), dtype=int)
    if mode == "full":
        out[:, F:] = np.tril(np.ones((T, T), dtype=int))
        return out
    plan = BlockPlan.make(L, m, F if mode == "fam" else 0, 0, T, 0, torch.device("cpu"))
    mask = plan.mask[:, 0].numpy()  # (nb, L, m*L + F' + L)
    Fp = plan.fam_length
    for b in range(plan.nb):
        for r in range(L):
            t = b * L + r
            if t >= T:
                break
            for s in range(m):  # memory slot s holds block b - m + s
                blk = b - m + s
                if blk >= 0:
                    cols = mask[b, r, s * L:(s + 1) * L]
                    out[t, F + blk * L: F + (blk + 1) * L] = cols[: min(L, T - blk * L)]
            if Fp:
                out[t, :F] = np.where(mask[b, r, m * L: m * L + F], 2 + b, 0)
            cur = mask[b, r, m * L + Fp:]
            n = min(L, T - b * L)
            out[t, F + b * L: F + b * L + n] = cur[:n]
    return out
