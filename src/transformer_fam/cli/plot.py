"""`fam plot RUN_DIR` (a training run's loss / lr curves) and `fam plot --patterns PNG` (the figure of
the three attention patterns, drawn from the model's own block mask)."""

from __future__ import annotations

import argparse

from ..errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", help="a training run's out_dir (holds metrics.jsonl)")
    parser.add_argument("--out", default=None, help="PNG path (default RUN_DIR/loss.png)")
    parser.add_argument("--smooth", type=int, default=20, help="moving-average window")
    parser.add_argument("--patterns", default=None, metavar="PNG",
                        help="draw the full / bswa / fam attention patterns (T=24, block 6, memory 1, F=2) to PNG")


def run(args) -> int:
    from ..plots import draw_patterns, plot_run

    if args.patterns:
        draw_patterns(args.patterns)
        print(args.patterns)
    if args.run_dir:
        print(plot_run(args.run_dir, args.out, args.smooth))
    elif not args.patterns:
        raise UserError("give a RUN_DIR (loss curves) or --patterns PNG")
    return 0
