"""Every figure the project draws (matplotlib, Agg backend; nothing else imports matplotlib).

    fam plot runs/passkey-tiny                       # a training run's loss / lr curves -> loss.png
    fam plot --patterns docs/attention_patterns.png  # the three attention patterns (README figure)

PassKey accuracy curves and heat maps, and loss by position, are drawn by ``fam eval`` and ``fam demo``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .core.patterns import token_pattern
from .evaluation.perplexity import buckets_in


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a training run's out_dir?)")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    if not records:
        raise ValueError(f"{path}: holds no metrics yet")
    return records


def plot_run(run_dir, out=None, smooth: int = 20) -> Path:
    """Draw loss (raw and moving average) and lr against the step; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(run_dir)
    steps = [r["step"] for r in recs]
    loss = [r["loss"] for r in recs]
    k = max(1, min(smooth, len(loss) // 5 or 1))
    avg = [sum(loss[max(0, i - k + 1): i + 1]) / len(loss[max(0, i - k + 1): i + 1]) for i in range(len(loss))]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps, avg, label=f"loss, mean of {k}")
    ax.set_ylabel("loss")
    ax.set_title(str(run_dir))
    ax.legend()
    ax.grid(alpha=0.3)
    if "lr" in recs[0]:
        ax_lr.plot(steps, [r["lr"] for r in recs])
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    out = Path(out) if out else Path(run_dir) / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def draw_patterns(path: str, T: int = 24, L: int = 6, m: int = 1, F: int = 2) -> None:
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


def plot_ppl(results: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = buckets_in(results)
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
