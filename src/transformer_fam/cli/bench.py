"""`fam bench`: side-by-side speed and memory (experiments/bench.py does the work).

    fam bench                      # writes docs/bench.json, docs/bench.png, docs/benchmarks.md
    fam bench --out /tmp/b --lengths 2048 8192 --dtypes float32 --skip-train   # a few minutes
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="docs", help="folder for bench.json, bench.png and benchmarks.md")
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384, 32768])
    parser.add_argument("--long-lengths", type=int, nargs="*", default=[65536, 131072],
                        help="extra prefill lengths for the streaming modes only")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--bf16-lengths", type=int, nargs="+", default=[8192],
                        help="prefill lengths measured in bfloat16 (float32 uses --lengths)")
    parser.add_argument("--full-max", type=int, default=8192,
                        help="longest prompt for this project's own full mode (HF is the full-attention peer)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per measurement (0: torch default)")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--mem-segments", type=int, default=3)
    parser.add_argument("--fam-length", type=int, default=64)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--skip-train", action="store_true", help="skip the training-step comparison")
    parser.add_argument("--skip-hf", action="store_true", help="skip Hugging Face Llama")
    parser.add_argument("--stream-tokens", type=int, default=1 << 20,
                        help="tokens for the long-stream memory test (tiny model; 0 skips)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per measurement")


def run(args) -> int:
    from ..experiments.bench import run as run_bench

    return run_bench(args)
