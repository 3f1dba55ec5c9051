"""`fam plot RUN_DIR`: loss (and lr) curves of a training run's metrics.jsonl, to a PNG.

    fam plot runs/passkey-tiny              # writes runs/passkey-tiny/loss.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a training run's out_dir (holds metrics.jsonl)")
    parser.add_argument("--out", default=None, help="PNG path (default RUN_DIR/loss.png)")
    parser.add_argument("--smooth", type=int, default=20, help="moving-average window")


def run(args) -> int:
    print(plot_run(args.run_dir, args.out, args.smooth))
    return 0
