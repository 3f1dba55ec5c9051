"""Conversion: Hugging Face Llama-family models (object, folder, GGUF) -> FamForCausalLM.

The reference is the Hugging Face model itself: in ``full`` mode the converted model must give
its logits; in ``bswa`` mode the Hugging Face model run with an explicit block-sliding 4-D mask.
"""

import json

import numpy as np
import pytest
import torch
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel)

from helpers import FAMILIES, TOL, hf_ids, hf_tiny, word_tokenizer
from reference import reference_bswa_mask, reference_fam
from transformer_fam import FamForCausalLM, from_hf
from transformer_fam.cli import main
from transformer_fam.hf.convert import init_fam_prompt
from transformer_fam.hf.gguf import unpermute_rotary

def hf_logits(model, ids, allowed=None):
    """HF logits; ``allowed`` (T, T) bool becomes a 4-D additive mask, which HF uses as given."""
    if allowed is None:
        return model(ids).logits
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return model(ids, attention_mask=mask[None, None].expand(ids.shape[0], 1, -1, -1)).logits


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_mode_gives_the_hf_logits(family):
    hf = hf_tiny(family)
    fam = from_hf(hf, attention_mode="full")
    ids = hf_ids(2, 45)
    with torch.no_grad():
        expected, got = hf_logits(hf, ids), fam(ids).logits
    assert (got - expected).abs().max() <= TOL
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
@pytest.mark.parametrize("L,m,T", [(8, 1, 37), (5, 2, 23), (16, 0, 40)])
def test_bswa_mode_equals_hf_with_a_block_sliding_mask(family, L, m, T):
    hf = hf_tiny(family)
    fam = from_hf(hf, attention_mode="bswa", block_size=L, mem_segments=m)
    ids = hf_ids(2, T)
    with torch.no_grad():
        expected = hf_logits(hf, ids, reference_bswa_mask(T, L, m))
        got = fam(ids).logits
        causal = hf_logits(hf, ids)
    assert (got - expected).abs().max() <= TOL
    assert (got - causal).abs().max() > 1e-2  # the window does cut something


def test_fam_mode_runs_algorithm2_with_the_converted_weights():
    hf = hf_tiny("llama", attention_bias=False, mlp_bias=False)
    fam = from_hf(hf, attention_mode="fam", block_size=8, mem_segments=1, fam_length=3)
    ids = hf_ids(1, 29)
    with torch.no_grad():
        torch.testing.assert_close(fam(ids).logits[0], reference_fam(fam, ids[0]), atol=TOL, rtol=0)
    # the only new parameter, drawn from the embedding statistics
    extra = set(fam.state_dict()) - set(hf.state_dict())
    assert extra == {"model.fam_prompt"}


def test_fam_prompt_follows_the_embedding_statistics():
    g = torch.Generator().manual_seed(0)
    emb = 3.0 + 0.5 * torch.randn(5000, 16, generator=g) * torch.linspace(0.5, 2, 16)
    prompt = init_fam_prompt(emb, 4000)
    torch.testing.assert_close(prompt.mean(0), emb.mean(0), atol=0.06, rtol=0)
    torch.testing.assert_close(prompt.std(0), emb.std(0), atol=0, rtol=0.06)
    assert torch.equal(prompt, init_fam_prompt(emb, 4000))  # deterministic
    hf = hf_tiny("qwen2")
    fam = from_hf(hf, fam_length=4, block_size=8)
    torch.testing.assert_close(fam.fam_prompt, init_fam_prompt(hf.model.embed_tokens.weight, 4))


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="gpt2.*llama, mistral, qwen2, qwen3"):
        from_hf(gpt2)
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="supported are"):
        from_hf(tmp_path / "gpt2")


def test_unknown_override_and_missing_path_fail_loudly(tmp_path):
    with pytest.raises(TypeError, match="fam_lenght"):
        from_hf(hf_tiny("llama"), fam_lenght=4)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        from_hf(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: neither"):
        from_hf(tmp_path / "empty")


def test_hf_folder_to_fam_folder_with_the_cli(tmp_path, capsys):
    hf = hf_tiny("qwen3")
    hf.save_pretrained(tmp_path / "hf")
    word_tokenizer().save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "fam"), "--mode", "bswa", "--block-size", "8",
                 "--mem-segments", "2"]) == 0
    assert json.loads((tmp_path / "fam" / "config.json").read_text())["model_type"] == "fam"
    assert (tmp_path / "fam" / "model.safetensors").exists() and (tmp_path / "fam" / "tokenizer.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "fam").eval()
    assert type(loaded) is FamForCausalLM and loaded.config.attention_mode == "bswa"
    ids = hf_ids(1, 30)
    with torch.no_grad():
        expected = hf_logits(hf, ids, reference_bswa_mask(30, 8, 2))
        assert (loaded(ids).logits - expected).abs().max() <= TOL
    # a user error is one line on stderr and exit status 2
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- GGUF
def permute_like_llama_cpp(w, n_head):
    """llama.cpp convert_hf_to_gguf.py `permute` (HF rotate-half rows -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
              "self_attn.k_norm": "attn_k_norm", "input_layernorm": "attn_norm",
              "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def write_gguf(hf, path, arch):
    """Write a float32 GGUF of ``hf`` the way llama.cpp's converter lays it out."""
    import gguf

    c = hf.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for name, t in hf.state_dict().items():
        t = t.float().numpy()
        if name == "lm_head.weight":
            if c.tie_word_embeddings:
                continue
            out = "output.weight"
        elif name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        else:
            parts = name.split(".")  # model.layers.i.<module...>.weight|bias
            module = ".".join(parts[3:-1])
            out = f"blk.{parts[2]}.{GGUF_NAMES[module]}.{parts[-1]}"
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = c.num_attention_heads if module == "self_attn.q_proj" else c.num_key_value_heads
                t = permute_like_llama_cpp(t, heads)
        w.add_tensor(out, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unpermute_inverts_llama_cpp_permute():
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rotary(torch.from_numpy(permute_like_llama_cpp(w.numpy(), 3)), 3), w)


@pytest.mark.parametrize("family,arch", [("smollm2-like", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3")])
def test_gguf_round_trip(tmp_path, family, arch):
    hf = hf_tiny(family)
    path = tmp_path / "tiny.gguf"
    write_gguf(hf, path, arch)
    fam = from_hf(path, attention_mode="full")
    assert fam.config.tie_word_embeddings == hf.config.tie_word_embeddings
    assert fam.config.qkv_bias == (arch == "qwen2") and fam.config.qk_norm == (arch == "qwen3")
    ids = hf_ids(2, 33)
    with torch.no_grad():
        assert (fam(ids).logits - hf(ids).logits).abs().max() <= TOL
    # a folder holding one GGUF works too, in any mode
    bswa = from_hf(tmp_path, attention_mode="bswa", block_size=8, mem_segments=1)
    with torch.no_grad():
        expected = hf_logits(hf, ids, reference_bswa_mask(33, 8, 1))
        assert (bswa(ids).logits - expected).abs().max() <= TOL


def test_gguf_llama_matches_the_transformers_gguf_loader(tmp_path):
    hf = hf_tiny("smollm2-like")
    write_gguf(hf, tmp_path / "tiny.gguf", "llama")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32).eval()
    ours = from_hf(tmp_path / "tiny.gguf", attention_mode="full")
    ids = hf_ids(1, 20)
    with torch.no_grad():
        assert (ours(ids).logits - theirs(ids).logits).abs().max() <= TOL


# ---------------------------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
def test_smollm2_full_mode_matches_hf_on_a_real_prompt(tmp_path):
    """The real SmolLM2-135M-Instruct GGUF: our reader vs transformers' GGUF loader, and the cache."""
    from transformers import AutoTokenizer

    from transformer_fam.hf.smollm2 import smollm2, smollm2_folder, smollm2_gguf_path

    path = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ours = smollm2(attention_mode="full")
    assert (hf.config.num_hidden_layers, hf.config.hidden_size, ours.config.rope_theta) == (30, 576, 100000.0)
    tok = AutoTokenizer.from_pretrained(smollm2_folder())
    text = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
            "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
            "from 1887 to 1889. Locally nicknamed")
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        expected, got = hf(ids).logits, ours(ids).logits
    assert (got - expected).abs().max() <= 2e-4
    assert bool((got.argmax(-1) == expected.argmax(-1)).all())
    # `fam convert smollm2` writes a folder that AutoModelForCausalLM loads
    assert main(["convert", "smollm2", str(tmp_path / "out"), "--mode", "bswa", "--block-size", "16",
                 "--mem-segments", "2"]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    T = ids.shape[1]
    with torch.no_grad():
        masked = hf_logits(hf, ids, reference_bswa_mask(T, 16, 2))
        assert (loaded(ids).logits - masked).abs().max() <= 2e-4
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template


def test_cli_fam_read_heads_are_saved_and_checked(tmp_path, capsys):
    """Options O5 / O6 from `fam convert`: the heads and the shift land in config.json; a bad value,
    or an option outside fam mode, is one line on stderr."""
    hf_tiny("qwen3").save_pretrained(tmp_path / "hf")
    word_tokenizer().save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "fam"), "--block-size", "8", "--mem-segments", "1",
                 "--fam-length", "2", "--fam-read-heads", "1.0,0.3", "--fam-read-shift", "--fam-skip-initial-read"]) == 0
    saved = json.loads((tmp_path / "fam" / "config.json").read_text())
    assert saved["fam_read_heads"] == [[1, 0], [0, 3]] and saved["fam_read_shift"] is True
    assert saved["fam_skip_initial_read"] is True
    for argv, why in ((["--fam-read-heads", "1:0"], "'1:0' is not LAYER.HEAD"),
                      (["--fam-read-heads", "1.0", "--mode", "bswa"], "acts on the FAM, but --mode is bswa"),
                      (["--fam-read-shift", "--mode", "bswa"], "--fam-read-shift: acts on the FAM, but --mode is bswa"),
                      (["--fam-skip-initial-read", "--mode", "bswa"],
                       "--fam-skip-initial-read: acts on the FAM, but --mode is bswa")):
        capsys.readouterr()
        assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
