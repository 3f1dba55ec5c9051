"""compile_fam_scan: the torch.compile'd FAM update gives eager mode's logits and gradients (a fam
model with the write gate and O5 readers, trained through peft's LoRA as the recipes do), and
switches back; the recipe key turns it on in the trainer."""

import pytest
import torch

import helpers
from transformer_fam.core.layers import FamDecoderLayer, compile_fam_scan
from transformer_fam.training.recipe import recipe_from_dict
from transformer_fam.training.trainer import Trainer


def _logits_and_grads(model, ids):
    model.zero_grad()
    out = model(ids, labels=ids)
    out.loss.backward()
    return out.logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow  # the first compiled call builds a graph (~20-60 s on 2 CPU cores)
def test_compiled_fam_update_equals_eager():
    from transformer_fam.hf.lora import apply_lora

    model = helpers.tiny("fam", L=8, m=1, F=2, heads=4, kv_heads=2, hidden=32, layers=3, fam_write_gate=True,
                         fam_read_heads=[[0, 1], [2, 3]])
    model = apply_lora(model, rank=4)
    with torch.no_grad():  # LoRA B starts at zero: make the adapters count
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    model.train()
    ids = helpers.ids_for(model, 2, 40)  # 5 blocks: the FAM scan runs 4 updates per layer, the first without residual
    ref_logits, ref_grads = _logits_and_grads(model, ids)
    assert compile_fam_scan(model) == 3
    assert all(m.compile_fam_update for m in model.modules() if isinstance(m, FamDecoderLayer))
    logits, grads = _logits_and_grads(model, ids)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and any("fam_write_gate" in n for n in grads)
    for n in grads:
        assert torch.allclose(grads[n], ref_grads[n], atol=1e-5, rtol=1e-4), n
    compile_fam_scan(model, False)
    assert not any(m.compile_fam_update for m in model.modules() if isinstance(m, FamDecoderLayer))
    assert torch.equal(_logits_and_grads(model, ids)[0], ref_logits)


def _flags(trainer):
    return [m.compile_fam_update for m in trainer.model.modules() if isinstance(m, FamDecoderLayer)]


def test_recipe_key_switches_the_trainers_model(tmp_path):
    on = Trainer(recipe_from_dict(helpers.tiny_recipe(tmp_path / "a", compile_fam_scan=True)))
    off = Trainer(recipe_from_dict(helpers.tiny_recipe(tmp_path / "b")))
    assert _flags(on) == [True, True] and _flags(off) == [False, False]


@pytest.mark.slow
def test_compiled_training_run_logs_eager_losses(tmp_path):
    runs = {}
    for flag in (False, True):
        values = helpers.tiny_recipe(tmp_path / str(flag), compile_fam_scan=flag, max_steps=3, save_every=3)
        assert Trainer(recipe_from_dict(values)).run() == 0
        runs[flag] = [r["loss"] for r in helpers.read_metrics(values["out_dir"])]
    assert runs[True] == pytest.approx(runs[False], abs=1e-5) and len(runs[True]) == 3
