"""Draw the three attention patterns from the model's own block plan (used for the README figure).

    python -m transformer_fam.patterns docs/attention_patterns.png
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from .attention import BlockPlan


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


def draw(path: str, T: int = 24, L: int = 6, m: int = 1, F: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    nb = -(-T // L)
    colors = ["white", "#3b6ea8"] + [plt.cm.autumn(i / max(1, nb)) for i in range(nb)]
    cmap = ListedColormap(colors)
    for ax, mode in zip(axes, ("full", "bswa", "fam")):
        pat = token_pattern(mode, T, L, m, F)
        ax.imshow(pat, cmap=cmap, vmin=0, vmax=len(colors) - 1, interpolation="nearest")
        ax.axvline(F - 0.5, color="black", lw=1.2)
        for b in range(1, nb):
            ax.axhline(b * L - 0.5, color="gray", lw=0.4)
            ax.axvline(F + b * L - 0.5, color="gray", lw=0.4)
        title = {"full": "full: causal", "bswa": f"bswa: block {L}, memory {m}",
                 "fam": f"fam: bswa + FAM of block b-1 (F={F})"}[mode]
        ax.set_title(title, fontsize=10)
        ax.set_xticks([F / 2 - 0.5, F + T / 2])
        ax.set_xticklabels(["FAM", "keys (tokens)"])
        ax.set_ylabel("queries (tokens)")
    fig.suptitle("Who attends to what (blue: tokens; orange shades: the FAM each block reads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    draw(sys.argv[1] if len(sys.argv) > 1 else "docs/attention_patterns.png")
