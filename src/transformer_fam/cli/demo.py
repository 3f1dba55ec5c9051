"""`fam demo`: the main job, the PassKey demo (experiments/passkey_demo.py does the work).

    fam demo --recipe gated --out runs/demo   # `make demo`: options O3 + O4, ~9 minutes on a 2-core CPU
    fam demo --out runs/demo        # the paper's FAM form, any filler length; passkey.json/png, fam/, bswa/
    fam demo --quick                # <= 800 curriculum steps, fillers <= 48: ~2-4 minutes idle
    fam demo --recipe aligned --fam-only --threads 1 --seed 0     # the whole-block recipe (FAM m = 0)
    fam demo --fam-only --set drift_weight=0 --set eval_lengths=0,100,1000   # recipe fields changed
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

from ..errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a ~2-minute run with looser targets")
    parser.add_argument("--recipe", choices=["aligned", "unaligned", "centered", "gated"], default="unaligned",
                        help="unaligned (default): fillers of any token count, FAM m=1, drift loss and read "
                             "supervision; aligned: whole-block fillers, FAM m=0 (the paper's PassKey setup; fails "
                             "on fillers that are not whole blocks); centered: unaligned with option O3 fam_center (not the "
                             "paper's form: FAM readers see it minus its slot mean); gated (`make demo`): centered with "
                             "option O4 fam_write_gate (not the paper's form: a learned gate on each FAM increment, "
                             "so the memory holds still over filler); --quick is always aligned "
                             "(docs/results.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="run the demo once per seed (into OUT/seed-S) and report the minimum and median "
                        "accuracy over seeds in OUT/passkey.json / passkey.png")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    parser.add_argument("--fam-max-rms", type=float, default=None, metavar="C",
                        help="train the FAM model with FamConfig.fam_max_rms=C: every FAM vector is rescaled to "
                             "RMS <= C after each update (an option that bounds the FAM norm; NOT the paper's "
                             "form, which is the default)")
    parser.add_argument("--fam-only", action="store_true", help="train and evaluate the FAM model only (no BSWA)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one DemoRecipe field (repeatable), e.g. --set lr=2e-3 "
                             "--set eval_lengths=0,100,1000 --set depth=null; values are parsed as JSON, "
                             "lists as comma separated")


def run(args) -> int:
    from ..experiments.passkey_demo import run_demo, run_seeds
    from ..experiments.passkey_recipes import QUICK, RECIPES, apply_overrides
    from .common import int_list

    recipe = QUICK if args.quick else RECIPES[getattr(args, "recipe", "unaligned")]
    if args.fam_max_rms is not None:
        if not args.fam_max_rms > 0 or math.isinf(args.fam_max_rms):
            raise UserError("--fam-max-rms: give a finite number > 0")
        recipe = replace(recipe, fam_max_rms=args.fam_max_rms)
    recipe = apply_overrides(recipe, getattr(args, "set", None) or [])
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be >= 1")
    if args.seeds:
        run_seeds(recipe, int_list("--seeds", args.seeds), args.out, args.threads, args.fam_only)
    else:
        run_demo(recipe, args.seed, args.out, args.threads, args.fam_only)
    return 0
