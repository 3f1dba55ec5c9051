"""GGUF (llama.cpp) files -> a Hugging Face-like config dict and a Hugging Face-named state dict.

Read with the ``gguf`` package: every tensor is dequantised to float32, and for the ``llama``
architecture (Llama, Mistral, SmolLM2) the rows of q/k weights are un-permuted from llama.cpp's
interleaved rotary layout back to Hugging Face's rotate-half layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SUPPORTED_GGUF_ARCHS = ("llama", "mistral", "qwen2", "qwen3")

_GGUF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _gguf_field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's ``permute`` of q/k rows (interleaved rotary pairs -> rotate-half halves).

    w: (n_head * hd, ...) with each head's rows stored as (hd/2, 2); returns (n_head * hd, ...)
    with each head's rows as (2, hd/2), i.e. Hugging Face's layout.
    """
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def read_gguf(path: str | os.PathLike):
    """(hf-like config dict, Hugging Face-named float32 state dict) from a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = _gguf_field(reader, "general.architecture")
    name = str(_gguf_field(reader, "general.name", "") or "").lower()
    if arch == "llama" and "mistral" in name:
        arch = "mistral"
    if arch not in SUPPORTED_GGUF_ARCHS:
        raise ValueError(f"{path}: unsupported GGUF architecture {arch!r}: supported are "
                         f"{', '.join(SUPPORTED_GGUF_ARCHS)}")
    prefix = "llama" if arch == "mistral" else arch

    def meta(key, default=None):
        return _gguf_field(reader, f"{prefix}.{key}", default)

    tensor_names = {t.name for t in reader.tensors}
    heads = int(meta("attention.head_count"))
    kv_heads = int(meta("attention.head_count_kv", heads))
    hidden = int(meta("embedding_length"))
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens")
    vocab = meta("vocab_size") or (len(tokens) if tokens is not None else None)
    if vocab is None:
        embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
        vocab = int(embd.shape[1])
    cfg = dict(
        model_type=arch, vocab_size=int(vocab), hidden_size=hidden,
        intermediate_size=int(meta("feed_forward_length")), num_hidden_layers=int(meta("block_count")),
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=int(meta("attention.key_length", hidden // heads)), hidden_act="silu",
        max_position_embeddings=int(meta("context_length", 8192)),
        rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_parameters={"rope_type": "default", "rope_theta": float(meta("rope.freq_base", 10000.0))},
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_output.bias" in tensor_names,
        bos_token_id=_gguf_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_gguf_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_gguf_field(reader, "tokenizer.ggml.padding_token_id"),
    )
    scaling = meta("rope.scaling.type")
    if scaling not in (None, "none"):
        cfg["rope_parameters"].update(rope_type=scaling, factor=float(meta("rope.scaling.factor")))
    sd = {}
    for t in reader.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk":
            layer, base, suffix = parts[1], parts[2], parts[3]
            if base not in _GGUF_NAMES:
                raise ValueError(f"{path}: unexpected GGUF tensor {t.name}")
            hf_name = f"model.layers.{layer}.{_GGUF_NAMES[base]}.{suffix}"
        elif parts[0] in _GGUF_TOP:
            hf_name = f"{_GGUF_TOP[parts[0]]}.{parts[1]}"
        elif parts[0] == "rope_freqs":
            raise ValueError(f"{path}: per-frequency RoPE factors (rope_freqs, Llama 3.1 scaling) are not read "
                             f"from GGUF; convert the Hugging Face folder instead")
        else:
            raise ValueError(f"{path}: unexpected GGUF tensor {t.name}")
        w = torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).copy()).float()
        if prefix == "llama" and parts[0] == "blk" and parts[2] in ("attn_q", "attn_k"):
            w = unpermute_rotary(w, heads if parts[2] == "attn_q" else kv_heads)
        sd[hf_name] = w
    return cfg, sd


def find_gguf(folder: Path) -> Path | None:
    """The one .gguf file in ``folder`` (None if there is none; several are an error)."""
    files = sorted(Path(folder).glob("*.gguf"))
    if len(files) > 1:
        raise ValueError(f"{folder}: several GGUF files ({', '.join(f.name for f in files)}); pass one file")
    return files[0] if files else None
