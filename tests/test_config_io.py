"""Config validation, save/load round trip, Auto* registration, the CLI entry point."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from helpers import ids_for, tiny
from transformer_fam import FamConfig, FamForCausalLM
from transformer_fam.cli import main


@pytest.mark.parametrize("kwargs,field", [
    (dict(attention_mode="sliding"), "attention_mode"),
    (dict(block_size=0), "block_size"),
    (dict(fam_length=0), "fam_length"),
    (dict(block_size=4, fam_length=5), "fam_length"),
    (dict(mem_segments=-1), "mem_segments"),
    (dict(hidden_size=30, num_attention_heads=4), "hidden_size"),
    (dict(num_attention_heads=4, num_key_value_heads=3, hidden_size=32), "num_key_value_heads"),
    (dict(attention_backend="flash"), "attention_backend"),
    (dict(fam_max_rms=0.0), "fam_max_rms"),
    (dict(fam_max_rms=-1), "fam_max_rms"),
    (dict(fam_max_rms="big"), "fam_max_rms"),
])
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FamConfig(**kwargs)


def test_fam_length_may_exceed_block_size_outside_fam_mode():
    assert FamConfig(attention_mode="bswa", block_size=4, fam_length=64).block_size == 4


@pytest.mark.parametrize("mode", ["full", "bswa", "fam"])
def test_save_load_round_trip(tmp_path, mode):
    model = tiny(mode)
    ids = ids_for(model, 1, 19)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = FamForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.attention_mode == mode and loaded.config.block_size == model.config.block_size
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(auto, FamForCausalLM)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "fam"
    torch.testing.assert_close(auto(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_llama_parameter_names():
    names = set(dict(tiny("fam").named_parameters()))
    for n in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
              "model.layers.1.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
              "model.layers.0.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight",
              "model.fam_prompt"]:
        assert n in names
    assert tiny("fam").fam_prompt.shape == (2, 32)
    assert tiny("bswa").fam_prompt is None


def test_cache_from_another_config_is_rejected():
    model = tiny("fam", L=8)
    cache = model(ids_for(model, 1, 5), use_cache=True).past_key_values
    other = tiny("fam", L=4)
    with pytest.raises(ValueError, match="past_key_values"):
        other(ids_for(other, 1, 5), past_key_values=cache)
    with pytest.raises(ValueError, match="batch size"):
        model(ids_for(model, 2, 5), past_key_values=cache)


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([[1, 2, 99]]), "outside the vocabulary"),
    (torch.zeros(1, 0, dtype=torch.long), "empty"),
    (torch.tensor([1, 2, 3]), "shape"),
    (torch.tensor([[1.0, 2.0]]), "integer"),
])
def test_bad_input_ids(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny("fam")(bad)


def test_unknown_keyword_fails_loudly():
    model = tiny("fam")
    with pytest.raises(TypeError, match="unexpected"):
        model(ids_for(model, 1, 4), use_cahce=True)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out
