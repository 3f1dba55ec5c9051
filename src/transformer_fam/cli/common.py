"""Arguments and parsers shared by several subcommands."""

from __future__ import annotations

import argparse

from ..core.config import parse_read_heads
from ..errors import UserError


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """``--dtype`` of the commands that load a model folder (fam generate, fam eval ...)."""
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="dtype to run in (auto: the checkpoint's, but float32 instead of bfloat16 on a CPU "
                        "where bfloat16 is slower)")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the evaluation commands."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="where to run (auto: cuda when a GPU is present, else cpu)")


def resolve_device(value: str) -> str:
    """"auto" -> "cuda" when a GPU is present, else "cpu"; "cuda" without one is a UserError."""
    import torch

    if value == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device available (torch.cuda.is_available() is False)")
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return value


def int_list(option: str, text: str, minimum: int = 0) -> list[int]:
    """'0,256,4096' -> [0, 256, 4096]; a UserError naming ``option`` otherwise."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise UserError(f"{option} {text}: give comma-separated integers ({err})") from None
    if not values or min(values) < minimum:
        raise UserError(f"{option} {text}: give integers >= {minimum}, e.g. 0,256,4096")
    return values


def float_list(option: str, text: str, lo: float, hi: float) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise UserError(f"{option} {text}: give comma-separated numbers ({err})") from None
    if not values or not all(lo <= v <= hi for v in values):
        raise UserError(f"{option} {text}: values must lie in [{lo:g}, {hi:g}]")
    return values


def read_heads_argument(option: str, text: str | None):
    """``--fam-read-heads`` parsed before any model is loaded: None when not given, "all" for every
    head (the paper), else the [layer, head] pairs (option O5); a UserError naming ``option``."""
    if text is not None and not text.strip():
        raise UserError(f"{option}: empty; give LAYER.HEAD pairs (e.g. 17.3,18.6) or all")
    if text is None or text.strip() == "all":
        return text and "all"
    try:
        return parse_read_heads(text)
    except ValueError as err:
        raise UserError(f"{option} {text}: {err}") from None


def restrict_fam_reads(model, option: str, heads) -> None:
    """Apply a parsed ``--fam-read-heads`` (``read_heads_argument``) to a loaded model in fam mode."""
    if heads is None:
        return
    if model.config.attention_mode != "fam":
        raise UserError(f"{option}: acts on the FAM, but the model runs in {model.config.attention_mode} mode")
    model.config.fam_read_heads = None if heads == "all" else heads
    try:
        model.config._validate()
    except ValueError as err:
        raise UserError(f"{option}: {err}") from None


READ_SHIFT_HELP = ("option O6 (not the paper): on = block queries of layer l read the FAM of layer l-1, off = their "
                   "own layer's (the paper); default: as the model was saved")


SKIP_INITIAL_HELP = ("option O7 (not the paper): on = no block reads the initial FAM (a stream's first block is "
                     "BSWA's), off = block 0 reads it (the paper); default: as the model was saved")


MEM_SEGMENTS_HELP = ("memory blocks each block attends to, replacing the saved number (same weights; the window "
                     "becomes (M + 1) blocks); default: as saved")


def set_mem_segments(model, option: str, value: int | None) -> None:
    """Apply ``--mem-segments M`` to a loaded model in bswa / fam mode: m is read at run time, so the same
    weights attend to M previous blocks (a converted checkpoint trained with m = 0 read with m = 1, ...)."""
    if value is None:
        return
    if value < 0:
        raise UserError(f"{option} {value}: give a number of memory blocks >= 0")
    if model.config.attention_mode == "full":
        raise UserError(f"{option}: sets the blocks a block attends to, but the model runs in full mode")
    model.config.mem_segments = value


def set_fam_switch(model, option: str, value: str | None, key: str) -> None:
    """Apply an ``on|off`` command-line switch (``option``, e.g. ``--fam-read-shift``) to the boolean
    FamConfig option ``key`` read at run time (O6 ``fam_read_shift``, O7 ``fam_skip_initial_read``) of a
    loaded model in fam mode; None leaves it as saved."""
    if value is None:
        return
    if model.config.attention_mode != "fam":
        raise UserError(f"{option}: acts on the FAM, but the model runs in {model.config.attention_mode} mode")
    setattr(model.config, key, value == "on")
