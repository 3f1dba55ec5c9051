"""The dtype a checkpoint runs in: "auto" keeps it, except bfloat16 on a CPU where it is slower."""

import pytest
import torch

from helpers import word_tokenizer
from helpers import tiny
from transformer_fam import hardware
from transformer_fam.hf.loading import load_model


@pytest.fixture
def slow_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "bf16_speedup", lambda device="cpu": 0.125)


def test_explicit_dtype_wins_and_auto_keeps_float32():
    assert hardware.resolve_dtype("bfloat16", torch.float32, 10) == (torch.bfloat16, None)
    assert hardware.resolve_dtype("float32", torch.bfloat16, 10) == (torch.float32, None)
    assert hardware.resolve_dtype("auto", torch.float32, 10) == (torch.float32, None)


def test_auto_runs_bfloat16_in_float32_only_where_it_is_slower(monkeypatch, slow_bf16):
    dtype, note = hardware.resolve_dtype("auto", torch.bfloat16, 10)
    assert dtype == torch.float32 and "8.0x slower" in note and "--dtype bfloat16" in note
    monkeypatch.setattr(hardware, "bf16_speedup", lambda device="cpu": 2.5)
    assert hardware.resolve_dtype("auto", torch.bfloat16, 10) == (torch.bfloat16, None)


def test_auto_keeps_bfloat16_when_float32_would_not_fit(slow_bf16):
    huge = 10 ** 13  # parameters: float32 would add 20 TB
    dtype, note = hardware.resolve_dtype("auto", torch.bfloat16, huge)
    assert dtype == torch.bfloat16 and "would not fit" in note


def test_speedup_is_measured_once_per_process_without_touching_the_global_rng():
    hardware.bf16_speedup.cache_clear()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = hardware.bf16_speedup()
    assert torch.equal(torch.rand(3), expected)  # sampling after a load stays as seeded
    assert first > 0 and hardware.bf16_speedup() == first
    assert hardware.bf16_speedup.cache_info().misses == 1


def test_the_loader_runs_a_bfloat16_folder_in_float32_on_a_slow_cpu(tmp_path, capsys, slow_bf16):
    def load(folder, dtype="auto"):  # what fam generate and fam eval load with
        return load_model(folder, None, dtype)

    model = tiny("fam", L=4, m=1, F=2).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "m")
    word_tokenizer(model.config.vocab_size).save_pretrained(tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    assert loaded.dtype == torch.float32 and "running in float32" in capsys.readouterr().err
    for (name, p), q in zip(loaded.named_parameters(), model.parameters()):
        assert torch.equal(p, q.float()), name  # the same weights, widened exactly
    kept, _ = load(str(tmp_path / "m"), "bfloat16")
    assert kept.dtype == torch.bfloat16 and "note:" not in capsys.readouterr().err


def test_training_with_bf16_on_a_slow_cpu_says_so(tmp_path, slow_bf16):
    from helpers import tiny_recipe
    from transformer_fam.training.recipe import recipe_from_dict
    from transformer_fam.training.trainer import Trainer

    logged = []
    Trainer(recipe_from_dict(tiny_recipe(tmp_path, bf16=True)), log=logged.append)
    assert any("bf16=true: bfloat16 matmuls run 8.0x slower" in line for line in logged)
    logged.clear()
    Trainer(recipe_from_dict(tiny_recipe(tmp_path, bf16=False)), log=logged.append)
    assert not any("bf16" in line for line in logged)
