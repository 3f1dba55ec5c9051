"""What a training run is built from: processes (torchrun), tokenizer, model, optimiser, schedule.

Used by trainer.py; each function reads a Recipe (recipe.py).
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch

from ..core.config import FamConfig, parse_read_heads
from ..core.model import FamForCausalLM
from .recipe import PRESETS, Recipe


# ---------------------------------------------------------------------------------------------- processes
class Dist:
    """Rank / world size of this process; a process group when started by torchrun."""

    def __init__(self, recipe: Recipe):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available())
        if recipe.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("recipe key device=cuda: no CUDA device available")
        self.device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def close(self):
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- model
def fam_model(model):
    """The FamForCausalLM inside DDP / peft wrappers."""
    return next(m for m in model.modules() if isinstance(m, FamForCausalLM))


def set_activation_checkpointing(model, on: bool) -> None:
    """Per-layer activation checkpointing on / off (transformers 5 renamed gradient_ -> activation_)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def build_tokenizer(recipe: Recipe):
    from ..data.tokenizer import load_tokenizer

    spec = recipe.tokenizer
    if spec == "auto":
        spec = "base" if recipe.init == "pretrained" else "byte"
    if spec == "passkey":
        from ..data.passkey import passkey_tokenizer

        return passkey_tokenizer()
    if spec == "base":
        source = recipe.base_model
        if source == "smollm2" and not os.path.exists(source):
            from ..hf.smollm2 import smollm2_folder

            source = smollm2_folder()
        tok = load_tokenizer(source, required=False)
        if tok is None:
            raise ValueError(f"recipe key tokenizer: base model {recipe.base_model!r} has no tokenizer; set one")
        return tok
    return load_tokenizer(spec)


def _read_heads(recipe: Recipe) -> list | None:
    """Option O5's heads as FamConfig wants them; "retrieval" is set once the supervision has found them."""
    return None if recipe.fam_read_heads == "retrieval" else parse_read_heads(recipe.fam_read_heads)


def model_config(recipe: Recipe, vocab_size: int, tokenizer=None) -> FamConfig:
    """The FamConfig of a from-scratch run: the preset's sizes, else the recipe's."""
    fam = dict(attention_mode=recipe.attention_mode, block_size=recipe.block_size,
               mem_segments=recipe.mem_segments, fam_length=recipe.fam_length,
               fam_max_rms=recipe.fam_max_rms or None, fam_read_gate=recipe.fam_read_gate,
               fam_center=recipe.fam_center, fam_write_gate=recipe.fam_write_gate,
               fam_read_heads=_read_heads(recipe), fam_read_shift=recipe.fam_read_shift,
               fam_skip_initial_read=recipe.fam_skip_initial_read)
    if recipe.preset:
        sizes = dict(PRESETS[recipe.preset])
    else:
        sizes = dict(hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
                     num_hidden_layers=recipe.num_hidden_layers, num_attention_heads=recipe.num_attention_heads,
                     num_key_value_heads=recipe.num_key_value_heads or recipe.num_attention_heads,
                     tie_word_embeddings=recipe.tie_word_embeddings)
    sizes["vocab_size"] = vocab_size
    ids = {}
    if tokenizer is not None:
        ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                   bos_token_id=tokenizer.bos_token_id)
    return FamConfig(**sizes, **fam, **ids)


def build_model(recipe: Recipe, tokenizer):
    """From scratch, or a converted pretrained model (full fine-tuning or LoRA)."""
    if recipe.init == "scratch":
        return FamForCausalLM(model_config(recipe, len(tokenizer), tokenizer))
    try:
        from ..hf.loading import from_hf
    except ImportError as err:
        raise ValueError(f"recipe key init=pretrained: the conversion module is unavailable ({err})") from None
    model = from_hf(recipe.base_model, attention_mode=recipe.attention_mode, block_size=recipe.block_size,
                    mem_segments=recipe.mem_segments, fam_length=recipe.fam_length, dtype=torch.float32,
                    fam_read_gate=recipe.fam_read_gate, fam_center=recipe.fam_center,
                    fam_write_gate=recipe.fam_write_gate)
    model.config.fam_max_rms = recipe.fam_max_rms or None
    model.config.fam_read_heads = _read_heads(recipe)
    model.config.fam_read_shift = recipe.fam_read_shift
    model.config.fam_skip_initial_read = recipe.fam_skip_initial_read
    model.config._validate()
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"recipe key tokenizer: {len(tokenizer)} tokens, but the model has "
                         f"vocab_size={model.config.vocab_size}")
    if recipe.finetune == "lora":
        try:
            from ..hf.lora import apply_lora
        except ImportError as err:
            raise ValueError(f"recipe key finetune=lora: the LoRA module is unavailable ({err})") from None
        if recipe.init_adapter:  # continue a saved fine-tune (its own rank / alpha / targets)
            from ..hf.lora import load_lora

            return load_lora(model, recipe.init_adapter, is_trainable=True)
        model = apply_lora(model, rank=recipe.lora_rank, alpha=recipe.lora_alpha or None)
    return model


def param_groups(recipe: Recipe, model) -> list[dict]:
    """Trainable parameters in groups: "weights" (lr), "fam_prompt" (fam_lr), "gates" (gate_lr),
    "adapters" (LoRA A/B, lr). Empty groups are left out; no weight decay on the prompt / gates."""
    groups = {"weights": [], "adapters": [], "fam_prompt": [], "gates": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("fam_prompt"):
            groups["fam_prompt"].append(p)
        elif name.endswith("fam_gate") or ".fam_write_gate." in name:
            groups["gates"].append(p)
        elif "lora_" in name:
            groups["adapters"].append(p)
        else:
            groups["weights"].append(p)
    lrs = {"weights": recipe.lr, "adapters": recipe.lr, "fam_prompt": recipe.fam_lr or recipe.lr,
           "gates": recipe.gate_lr or recipe.lr}
    return [{"name": n, "params": ps, "lr": lrs[n],
             "weight_decay": 0.0 if n in ("fam_prompt", "gates") else recipe.weight_decay}
            for n, ps in groups.items() if ps]


def build_optimizer(recipe: Recipe, model, extra: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW, or torch's Adafactor. torch's Adafactor scales each update by max(eps2, RMS(param))
    (eps2 = 1e-3), so a parameter that starts at zero (LoRA's B, a read gate) moves by ~1e-3 * lr
    per step and never trains; its groups for LoRA adapters, the FAM prompt and the gates therefore
    take eps2 = 1 (an absolute step of lr for parameters of RMS below 1: the parameter-scale factor
    off). LoRA recipes use AdamW (the peft convention). ``extra``: a training-only module (the
    retrieval supervision's key probe), its own group "probe" at lr 1e-3, no weight decay."""
    groups = param_groups(recipe, model)
    if extra is not None:
        groups.append({"name": "probe", "params": list(extra.parameters()), "lr": 1e-3, "weight_decay": 0.0})
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                 weight_decay=recipe.weight_decay)
    # torch's Adafactor keeps no first moment (the paper's b1=0.9 has no equivalent here)
    for g in groups:
        if g["name"] != "weights":
            g["eps"] = (None, 1.0)
    return torch.optim.Adafactor(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_factor(recipe: Recipe):
    """Multiplier of the base lr at a step: linear warm-up, then constant or cosine to min_lr_ratio."""

    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        if recipe.schedule == "constant":
            return 1.0
        span = max(1, recipe.max_steps - recipe.warmup_steps)
        progress = min(1.0, (step - recipe.warmup_steps) / span)
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
