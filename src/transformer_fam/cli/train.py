"""`fam train RECIPE [key=value ...] [--resume]` (training/trainer.py does the work).

    fam train passkey-tiny out_dir=runs/pk max_steps=300
    torchrun --nproc_per_node=2 -m transformer_fam.cli train passkey-tiny out_dir=runs/ddp   # DDP
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML file or a bundled recipe name (passkey-tiny, smollm2-fam-lora)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe keys to override")
    parser.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")


def run(args) -> int:
    from ..training.recipe import load_recipe
    from ..training.trainer import train

    return train(load_recipe(args.recipe, args.overrides), resume=args.resume)
