"""What several test modules share: tiny models, token ids, a word tokenizer, tiny HF models, a
tiny training recipe and its metrics. Test modules import this module, never each other."""

import json
from pathlib import Path

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from transformer_fam import FamConfig, FamForCausalLM

TOL = 1e-4


def tiny(mode="fam", L=8, m=1, F=2, heads=4, kv_heads=2, hidden=32, layers=2, seed=0, vocab=61, prompt_std=1.0,
         **kw):
    """A tiny FamForCausalLM in eval mode (seeded); ``prompt_std`` None keeps the default FAM prompt init."""
    torch.manual_seed(seed)
    cfg = FamConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                    num_attention_heads=heads, num_key_value_heads=kv_heads, attention_mode=mode,
                    block_size=L, mem_segments=m, fam_length=F, **kw)
    model = FamForCausalLM(cfg).eval()
    if model.fam_prompt is not None and prompt_std is not None:  # a prompt of the scale of the hidden states
        torch.nn.init.normal_(model.fam_prompt, std=prompt_std)
    return model


def ids_for(model, B, T, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (B, T), generator=g)


VOCAB = 97
SIZES = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(attention_bias=True, mlp_bias=True)),
    "llama3-rope": (LlamaConfig, LlamaForCausalLM, dict(rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16))),
    "linear-rope": (LlamaConfig, LlamaForCausalLM, dict(rope_parameters=dict(rope_type="linear", factor=4.0,
                                                                             rope_theta=10000.0))),
    "smollm2-like": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=True, num_key_value_heads=1,
                                                         rope_parameters=dict(rope_type="default",
                                                                              rope_theta=100000.0))),
    "mistral": (MistralConfig, MistralForCausalLM, dict(sliding_window=None)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(tie_word_embeddings=False)),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(head_dim=16, tie_word_embeddings=False)),
}


@torch.no_grad()
def randomize(model, seed=0):
    """Random values for every parameter (biases and norm weights too, which HF initialises to 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.08 * torch.randn(p.shape, generator=g))
    return model


def hf_tiny(family, seed=0, **extra):
    config_cls, model_cls, kw = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**SIZES, **kw, **extra}))
    return randomize(model, seed).eval()


def hf_ids(B, T, seed=1):
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def word_tokenizer(vocab_size=VOCAB):
    """A tiny word-level tokenizer built locally: words w0..w{V-3}, then <unk> and <eos>."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(vocab_size - 2)} | {"<unk>": vocab_size - 2, "<eos>": vocab_size - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def make_docs(folder: Path) -> Path:
    import random

    rnd = random.Random(1)
    words = "the quick brown fox jumps over a lazy dog while birds sing in green trees".split()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (folder / f"doc{i}.txt").write_text(" ".join(rnd.choice(words) for _ in range(600 + 50 * i)))
    return folder


def tiny_recipe(tmp_path: Path, **kw) -> dict:
    """Recipe values of a tiny from-scratch run on a few local documents (byte tokenizer)."""
    values = dict(data=str(make_docs(tmp_path / "docs")), tokenizer="byte", seq_len=32, batch_size=4,
                  hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  block_size=8, mem_segments=1, fam_length=2, max_steps=6, save_every=2, keep_last_n=10,
                  lr=3e-3, warmup_steps=2, progress=False, tensorboard=False, out_dir=str(tmp_path / "run"))
    values.update(kw)
    return values


def read_metrics(out_dir) -> list[dict]:
    """The records a training run logged to ``out_dir/metrics.jsonl``, in order."""
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
