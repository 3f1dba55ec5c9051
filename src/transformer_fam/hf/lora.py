"""LoRA fine-tuning of a FamForCausalLM with peft, the FAM prompt training alongside.

The paper fine-tunes pretrained models into FAM with LoRA (rank 64 on attention and FFN, merged
for inference, docs/algorithm.md §7). peft wraps the linear layers; the FAM prompt is a bare
``nn.Parameter`` (``model.model.fam_prompt``), which peft's ``modules_to_save`` cannot hold (it
wraps modules) and its adapter checkpoints do not include. So:

- ``apply_lora`` freezes the base model (peft) and then marks the FAM prompt trainable again; it
  trains in place, in the base model.
- ``save_lora`` writes peft's adapter folder plus ``fam_prompt.safetensors`` next to it (the prompt
  and the options' read / write gates, also new parameters that LoRA trains);
  ``load_lora`` restores both onto a base model.
- ``merge_lora`` folds the adapters into the weights (``merge_and_unload``) and returns the plain
  FamForCausalLM, trained FAM prompt included; ``save_pretrained`` on it writes a normal FAM folder.

Example::

    peft_model = apply_lora(model, rank=64)          # model: a FamForCausalLM
    ... train peft_model(ids, labels=ids).loss ...
    save_lora(peft_model, "runs/lora")
    merged = merge_lora(peft_model)
"""

from __future__ import annotations

from pathlib import Path

import torch

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FAM_PROMPT_FILE = "fam_prompt.safetensors"


def _base(model):
    """The FamForCausalLM inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def apply_lora(model, rank: int = 64, alpha: float | None = None, targets=LORA_TARGETS, dropout: float = 0.0,
               train_fam_prompt: bool = True):
    """Wrap a FamForCausalLM in a peft LoRA model.

    Args:
        model: FamForCausalLM.
        rank: LoRA rank r (paper: 64).
        alpha: LoRA alpha (default: rank, i.e. scaling 1).
        targets: names of the linear layers to adapt.
        dropout: LoRA dropout.
        train_fam_prompt: keep the FAM prompt trainable (fam mode; it is the only new parameter).
    Returns:
        a ``peft.PeftModelForCausalLM``; only the adapters (and the FAM prompt) require grad.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, lora_dropout=dropout,
                        target_modules=list(targets), bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    prompt = _base(peft_model).fam_prompt
    if train_fam_prompt and prompt is not None:
        prompt.requires_grad_(True)
    for gate in fam_gates(peft_model).values():  # the options' gates: new parameters, trained
        gate.requires_grad_(True)
    return peft_model


def read_gates(model) -> dict:
    """{name: parameter} of the read-gate option's per-layer g (empty without the option)."""
    return {f"layers.{i}.fam_gate": layer.self_attn.fam_gate for i, layer in enumerate(_base(model).model.layers)
            if layer.self_attn.fam_gate is not None}


def write_gates(model) -> dict:
    """{name: parameter} of the write-gate option's per-layer w and c (empty without the option)."""
    return {f"layers.{i}.fam_write_gate.{n}": p for i, layer in enumerate(_base(model).model.layers)
            if layer.fam_write_gate is not None for n, p in layer.fam_write_gate.named_parameters()}


def fam_gates(model) -> dict:
    """The read and write gates: new parameters that LoRA trains and ``save_lora`` saves."""
    return {**read_gates(model), **write_gates(model)}


def save_lora(peft_model, folder) -> Path:
    """Save the adapters (peft format) and the FAM prompt (``fam_prompt.safetensors``) to ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    peft_model.save_pretrained(folder, save_embedding_layers=False)
    prompt = _base(peft_model).fam_prompt
    if prompt is not None:
        tensors = {"fam_prompt": prompt.detach().contiguous().cpu()}
        tensors.update({n: g.detach().contiguous().cpu() for n, g in fam_gates(peft_model).items()})
        save_file(tensors, folder / FAM_PROMPT_FILE)
    return folder


def load_lora(model, folder, is_trainable: bool = False):
    """Load adapters saved by ``save_lora`` onto a FamForCausalLM (its FAM prompt is replaced)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(f"{folder}: no adapter_config.json (not a LoRA folder written by save_lora)")
    peft_model = PeftModel.from_pretrained(model, folder, is_trainable=is_trainable)
    prompt = _base(peft_model).fam_prompt
    prompt_file = folder / FAM_PROMPT_FILE
    if prompt is not None and prompt_file.exists():
        tensors = load_file(prompt_file)
        saved = tensors["fam_prompt"]
        if saved.shape != prompt.shape:
            raise ValueError(f"{prompt_file}: FAM prompt of shape {tuple(saved.shape)}, the model expects "
                             f"{tuple(prompt.shape)}")
        with torch.no_grad():
            prompt.copy_(saved)
        prompt.requires_grad_(is_trainable)
        gates = fam_gates(peft_model)
        extra = sorted(n for n in tensors if n != "fam_prompt" and n not in gates)
        if extra:  # dropping them would silently load another model than the one trained
            option = "fam_write_gate" if ".fam_write_gate." in extra[0] else "fam_read_gate"
            raise ValueError(f"{prompt_file}: holds gates the model lacks ({extra[0]}, {len(extra)} in all); "
                             f"convert the model with {option}=True")
        for name, gate in gates.items():  # a gate the folder lacks keeps its initial value
            if name in tensors:
                with torch.no_grad():
                    gate.copy_(tensors[name])
            gate.requires_grad_(is_trainable)
    return peft_model


def merge_lora(peft_model):
    """Fold the LoRA weights into the linear layers; returns the plain FamForCausalLM."""
    merged = peft_model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(True)
    return merged
