"""The PassKey demo's recipes: one typed dataclass, the named recipes, and FIELD=VALUE overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from ..errors import UserError


@dataclass
class DemoRecipe:
    """Everything that defines one demo run (sizes, curriculum, budget)."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    block_size: int = 16
    fam_length: int = 16
    train_max_filler: int = 128  # longest fully backpropagated filler (tokens): the key sits 8+ blocks before the question
    start_filler: int = 0
    filler_step: int = 16
    filler_multiple: int = 16  # curriculum fillers start as whole blocks: the answer sits at a fixed place in its block
    final_multiple: int | None = None  # the multiple halves down to this (1: any length; None: filler_multiple)
    #                                    once the filler reaches dealign_at; the carried and long phases use it
    dealign_at: int = 1 << 30  # (capped at train_max_filler); then the length curriculum goes on at final_multiple
    depth: float | None = 0.0  # key depth in training (0: the spec's format); None draws it per batch
    loss_on: str = "answer"  # "answer": the digits only; "all": every predictable token
    probe_weight: float = 1.0  # auxiliary key probe on the FAM entering the answer's block (training only)
    drift_weight: float = 0.0  # auxiliary: 1 - cos between the probe's FAM slots right after the key sentence
    #                            and entering the answer's block (training only; pushes a stationary key memory)
    drift_slots: int = 0  # FAM slots the drift loss covers (0: the probe's key slots, 5)
    drift_centered: bool = False  # the drift loss on the slots minus their mean over all F (what fam_center reads)
    read_weight: float = 0.0  # auxiliary: one head of the last layer must attend to FAM slot j when predicting
    #                           digit j (its own masked attention logits, cross-entropy; training only)
    write_weight: float = 0.0  # auxiliary: at the FAM update of the key's block, the last head of every layer must
    #                            attend key digit j from FAM slot j (its own attention logits; training only)
    promote_acc: float = 0.9  # running answer accuracy that lengthens the filler
    batch_size: int = 16
    lr: float = 3e-3
    steps: int = 800  # upper bound of curriculum steps (FAM stops earlier once it masters train_max_filler)
    seconds: float = 900.0  # safety time limit of the curriculum (per model)
    carry_steps: int = 0  # FAM steps with the state carried across steps (document-continuous)
    carry_seconds: float = 0.0
    carry_reset: float = 0.25  # probability that a carried step starts fresh
    phase_lr: float = 1e-3  # learning rate of the carried and the long-filler phases
    long_steps: int = 300  # FAM steps on long fillers with truncated backpropagation (after the curriculum)
    long_seconds: float = 600.0
    long_max_filler: int = 512  # fillers drawn log-uniformly up to this (forward only, except the tail)
    long_grad_tokens: int = 128  # backprop through the last this many tokens before the answer's block
    long_fraction: float = 0.5  # share of long episodes; the rest are curriculum-range episodes
    long_batch_size: int = 8
    long_lr_final: float = 1.0  # the long phase's lr falls from phase_lr to phase_lr * this on a cosine (1: constant)
    short_log_fraction: float = 0.0  # share of the long phase's short episodes with log-uniform fillers (0 included)
    long_carry: float = 0.0  # probability (after the ramp) that a long-phase episode starts from the FAM its row
    #                          ended the previous step with (the new key must overwrite the old one)
    long_carry_ramp: int = 0  # long-phase steps over which that probability ramps up linearly from 0
    long_fam_shrink: float = 1.0  # < 1: each long episode multiplies the FAM entering its backpropagated tail by s,
    #                               log-uniform in [long_fam_shrink, 1] (training only; 1: off). The FAM's RMS grows
    #                               with every block and readers normalise it, so each update moves it by ~1/blocks:
    #                               a shrunk FAM drifts in the tail's few blocks as much as in many more (issue 14)
    eval_lengths: list[int] = field(default_factory=lambda: [0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                                             8192, 16384, 32768])
    eval_samples: int = 50
    threads: int = 2
    fam_max_rms: float | None = None  # FAM model's FamConfig.fam_max_rms (None: the paper's additive update)
    fam_center: bool = False  # FAM model's FamConfig.fam_center (option O3: readers see the FAM minus its slot mean)
    fam_write_gate: bool = False  # FAM model's FamConfig.fam_write_gate (option O4: a learned gate on each increment)
    fam_mem_segments: int = 0  # FAM model's memory blocks (0: the paper's PassKey setup; BSWA always has 1)

    def __post_init__(self):
        if not 0.0 <= self.long_lr_final <= 1.0:
            raise ValueError(f"long_lr_final={self.long_lr_final}: must be in [0, 1] (1: a constant lr)")
        if not 0.0 < self.long_fam_shrink <= 1.0:
            raise ValueError(f"long_fam_shrink={self.long_fam_shrink}: must be in (0, 1] (1: off)")


FULL = DemoRecipe()  # the block-aligned recipe (FAM m = 0, whole-block fillers): every seed leaves its plateau
ALIGNED = FULL
# Issue 14's any-length recipe: fillers of any token count (the answer anywhere in its block), FAM
# with one memory block like BSWA, the drift loss on every FAM slot, and the read supervision (one
# head of the last layer attends FAM slot j for digit j; without it seeds 1 and 2 never left the
# 0-16 filler plateau). Bounded by steps, not seconds, so a busy machine gives the same model.
# docs/results.md has its three seeds.
UNALIGNED = replace(DemoRecipe(), fam_mem_segments=1, filler_multiple=1, final_multiple=1, steps=2500,
                    seconds=3600.0, long_seconds=1800.0, drift_weight=10.0, drift_slots=16, short_log_fraction=0.2,
                    read_weight=1.0,
                    eval_lengths=[0, 16, 37, 100, 128, 250, 512, 777, 1000, 2048, 3001, 5000, 8192, 16384])
# UNALIGNED with option O3 (fam_center, not the paper's form): every FAM reader sees the FAM minus its
# mean over the F slots, which hides the drift the slots share on long fillers. docs/results.md.
CENTERED = replace(UNALIGNED, fam_center=True)
# CENTERED with option O4 (fam_write_gate, not the paper's form): a learned gate scales each FAM
# increment, so the memory can hold still over filler (the gate closes to ~1e-4 there and opens at
# the key's block) instead of drifting with every block. 600 long-phase steps (300 left seed 2 at
# 88-98% at every length: a digit confusion, not the reach) with the lr annealed to 0 (at a constant
# lr, seed 0's last steps hit a loss spike: 20-52% everywhere). Evaluated to 64x the longest training filler.
GATED = replace(CENTERED, fam_write_gate=True, long_steps=600, long_lr_final=0.0,
                eval_lengths=[*CENTERED.eval_lengths, 32768])
# The quick recipe (`fam demo --quick`, the slow test): the block-aligned one to filler 48 with the
# write supervision, without which seed 0 stayed at 15% at filler 48 on two machines (AMX Xeon
# and CI's); with it seeds 0-3 score 85-100% there (docs/results.md).
QUICK = replace(FULL, train_max_filler=48, steps=800, seconds=600.0, long_steps=0, write_weight=1.0,
                eval_lengths=[0, 16, 48, 192, 768, 3072], eval_samples=20)
RECIPES = {"aligned": ALIGNED, "unaligned": UNALIGNED, "centered": CENTERED, "gated": GATED}


def apply_overrides(recipe: DemoRecipe, items: list[str]) -> DemoRecipe:
    """DemoRecipe with FIELD=VALUE overrides (`fam demo --set`): values parsed as JSON (null: None),
    list fields as comma-separated JSON values; raises UserError on an unknown field or a bad value."""

    fields = {f.name: f for f in DemoRecipe.__dataclass_fields__.values()}
    changes = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise UserError(f"--set {item}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        current = getattr(recipe, name)
        try:
            if isinstance(current, list):
                kind = type(current[0]) if current else int
                value = [kind(json.loads(x)) for x in text.split(",") if x.strip()]
            else:
                value = json.loads(text)
                if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
        except (ValueError, TypeError) as err:
            raise UserError(f"--set {item}: {err}") from err
        changes[name] = value
    try:
        return replace(recipe, **changes)
    except (ValueError, TypeError) as err:  # DemoRecipe.__post_init__
        raise UserError(f"--set: {err}") from err


def final_multiple(recipe: DemoRecipe) -> int:
    """The filler multiple after dealigning (and of the carried and long phases)."""
    return recipe.filler_multiple if recipe.final_multiple is None else recipe.final_multiple
