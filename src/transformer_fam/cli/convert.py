"""`fam convert SOURCE OUT`: a Llama-family HF folder, a GGUF file or "smollm2" -> a FAM folder.

    fam convert smollm2 runs/smollm2-fam --mode fam --block-size 1024 --mem-segments 3 --fam-length 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import UserError
from .common import read_heads_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help='a Hugging Face folder, a GGUF file, or "smollm2" (offline SmolLM2-135M-Instruct)')
    parser.add_argument("out", help="output folder (config.json with model_type fam, model.safetensors, tokenizer)")
    parser.add_argument("--mode", dest="attention_mode", choices=("full", "bswa", "fam"), default="fam")
    parser.add_argument("--block-size", type=int, default=1024, help="L, tokens per block")
    parser.add_argument("--mem-segments", type=int, default=3, help="m, previous blocks each block attends to")
    parser.add_argument("--fam-length", type=int, default=64, help="F, FAM vectors per layer")
    parser.add_argument("--fam-read-gate", action="store_true",
                        help="option (not the paper): block queries read the FAM through their own softmax, "
                             "added with a zero-initialised per-head gate tanh(g); starts equal to BSWA")
    parser.add_argument("--fam-write-gate", action="store_true",
                        help="option (not the paper): a learned gate on each FAM increment, zero-initialised "
                             "(the paper's update until fine-tuning moves it)")
    parser.add_argument("--fam-read-heads", default=None, metavar="HEADS",
                        help="option (not the paper): only these query heads read the FAM, LAYER.HEAD comma "
                             "separated (e.g. 17.3,18.6); the others attend as in BSWA")
    parser.add_argument("--fam-read-shift", action="store_true",
                        help="option (not the paper): block queries of layer l read the FAM of layer l-1 (the "
                             "layer's input space) instead of their own layer's")
    parser.add_argument("--fam-skip-initial-read", action="store_true",
                        help="option (not the paper): no block reads the initial FAM, so a stream's first block "
                             "is the BSWA model's; later blocks read the FAM as in the paper")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="parameter dtype (default: the source's; float32 for GGUF)")


def run(args) -> int:
    from ..hf.loading import convert

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: output folder exists and is not empty")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    heads = read_heads_argument("--fam-read-heads", args.fam_read_heads)
    if heads is not None and args.attention_mode != "fam":
        raise UserError(f"--fam-read-heads: acts on the FAM, but --mode is {args.attention_mode}")
    for flag in ("fam_read_shift", "fam_skip_initial_read"):
        if getattr(args, flag) and args.attention_mode != "fam":
            raise UserError(f"--{flag.replace('_', '-')}: acts on the FAM, but --mode is {args.attention_mode}")
    convert(args.source, out, attention_mode=args.attention_mode, block_size=args.block_size,
            mem_segments=args.mem_segments, fam_length=args.fam_length, dtype=dtype,
            **({"fam_read_gate": True} if args.fam_read_gate else {}),
            **({"fam_write_gate": True} if args.fam_write_gate else {}),
            **({"fam_read_shift": True} if args.fam_read_shift else {}),
            **({"fam_skip_initial_read": True} if args.fam_skip_initial_read else {}),
            **({"fam_read_heads": heads} if heads not in (None, "all") else {}))
    print(f"wrote {out} (mode={args.attention_mode}, block_size={args.block_size}, "
          f"mem_segments={args.mem_segments}, fam_length={args.fam_length})")
    return 0
