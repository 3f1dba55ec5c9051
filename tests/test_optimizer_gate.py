"""Issue 13: zero-initialised parameters (LoRA's B, the read gate) must train; the read-gate option
(FAM read through its own softmax, out = bswa + tanh(g) * fam, g = 0 at conversion)."""

import pytest
import torch

from helpers import ids_for, tiny
from transformer_fam import FamCache
from transformer_fam.hf.lora import apply_lora
from transformer_fam.training.recipe import recipe_from_dict
from transformer_fam.training.setup import build_optimizer, param_groups

TOL = 1e-5


def _lora_steps(optimizer: str, steps=5, **recipe):
    """A few fine-tuning steps of a tiny converted FAM model with the trainer's optimiser; returns
    (LoRA B RMS, max logit change, the peft model)."""
    model = tiny("fam", L=4, m=1, F=2, fam_read_gate=True)
    ids = ids_for(model, 2, 14)
    with torch.no_grad():
        before = model(ids).logits
    peft_model = apply_lora(model, rank=4, alpha=8)
    r = recipe_from_dict({"init": "pretrained", "base_model": "x", "finetune": "lora", "optimizer": optimizer,
                          "lr": 1e-3, **recipe})
    opt = build_optimizer(r, peft_model)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    peft_model.eval()
    with torch.no_grad():
        after = peft_model(input_ids=ids).logits
    b = torch.cat([p.detach().flatten() for n, p in peft_model.named_parameters() if "lora_B" in n])
    return float(b.pow(2).mean().sqrt()), float((after - before).abs().max()), peft_model


def _moved_enough(b_rms, logit_change):
    # lr 1e-3 for 5 steps: an optimiser that trains zero-init B moves it by ~lr per step
    return b_rms > 1e-3 and logit_change > 1e-3


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_lora_fine_tuning_moves_the_adapters_and_the_logits(optimizer):
    b_rms, change, peft_model = _lora_steps(optimizer, gate_lr=3e-2)
    assert _moved_enough(b_rms, change), (b_rms, change)
    gates = [p for n, p in peft_model.named_parameters() if n.endswith("fam_gate")]
    assert gates and all(p.requires_grad for p in gates)
    assert max(float(p.abs().max()) for p in gates) > 1e-2  # the gate's own lr moved it


def test_the_old_adafactor_leaves_lora_b_near_zero():
    """The bug of issue 13, kept as a check that the test above can fail: torch's Adafactor with its
    default eps2 = 1e-3 on every group scales the step of a zero-init parameter by 1e-3."""
    model = tiny("fam", L=4, m=1, F=2)
    ids = ids_for(model, 2, 14)
    with torch.no_grad():
        before = model(ids).logits
    peft_model = apply_lora(model, rank=4, alpha=8)
    opt = torch.optim.Adafactor([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    peft_model.train()
    for _ in range(5):
        loss = peft_model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = peft_model.eval()(input_ids=ids).logits
    b = torch.cat([p.detach().flatten() for n, p in peft_model.named_parameters() if "lora_B" in n])
    assert not _moved_enough(float(b.pow(2).mean().sqrt()), float((after - before).abs().max()))


def test_param_groups_have_their_own_lr():
    model = apply_lora(tiny("fam", L=4, m=1, F=2, fam_read_gate=True), rank=2)
    r = recipe_from_dict({"init": "pretrained", "base_model": "x", "finetune": "lora", "lr": 3e-4,
                          "fam_lr": 1e-3, "gate_lr": 3e-3, "weight_decay": 0.1})
    groups = {g["name"]: g for g in param_groups(r, model)}
    assert set(groups) == {"adapters", "fam_prompt", "gates"}
    assert (groups["adapters"]["lr"], groups["fam_prompt"]["lr"], groups["gates"]["lr"]) == (3e-4, 1e-3, 3e-3)
    assert groups["gates"]["weight_decay"] == 0.0 and groups["adapters"]["weight_decay"] == 0.1
    assert len(groups["gates"]["params"]) == model.config.num_hidden_layers
    r0 = recipe_from_dict({"lr": 2e-3})  # 0: the base lr
    assert {g["lr"] for g in param_groups(r0, tiny("fam", L=4, m=1, F=2))} == {2e-3}


# ---------------------------------------------------------------------------------------------- read gate
def _gated_pair(L=4, m=1, F=2, seed=0):
    gated = tiny("fam", L=L, m=m, F=F, seed=seed, fam_read_gate=True)
    bswa = tiny("bswa", L=L, m=m, F=F, seed=seed)
    missing = bswa.load_state_dict(gated.state_dict(), strict=False)
    assert set(missing.missing_keys) == set() and all("fam_gate" in k or "fam_prompt" in k
                                                      for k in missing.unexpected_keys)
    return gated, bswa


@pytest.mark.parametrize("L,m,T", [(4, 1, 14), (4, 0, 13), (8, 2, 29), (4, 1, 3)])
def test_closed_gate_equals_bswa(L, m, T):
    gated, bswa = _gated_pair(L, m)
    ids = ids_for(gated, 2, T)
    with torch.no_grad():
        torch.testing.assert_close(gated(ids).logits, bswa(ids).logits, atol=TOL, rtol=0)  # inference path
    torch.testing.assert_close(gated(ids).logits, bswa(ids).logits, atol=TOL, rtol=0)  # autograd path (SDPA)


def test_gradient_reaches_the_closed_gate():
    gated, _ = _gated_pair()
    ids = ids_for(gated, 2, 14)
    gated.train()
    gated(input_ids=ids, labels=ids).loss.backward()
    for layer in gated.model.layers:
        g = layer.self_attn.fam_gate.grad
        assert g is not None and g.abs().max() > 0


def _open(model, seed=3):
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for layer in model.model.layers:
            layer.self_attn.fam_gate.copy_(torch.randn(layer.self_attn.fam_gate.shape, generator=gen))
    return model


def test_open_gate_differs_from_bswa_and_matches_a_reference():
    gated, bswa = _gated_pair()
    _open(gated)
    ids = ids_for(gated, 2, 14)
    with torch.no_grad():
        inf = gated(ids).logits
        assert (inf - bswa(ids).logits).abs().max() > 1e-3
    torch.testing.assert_close(gated(ids).logits, inf, atol=TOL, rtol=0)  # grad path == inference path


@pytest.mark.parametrize("cuts", [[1] * 14, [3, 5, 6], [4, 4, 6], [13, 1], [2, 9, 3]])
def test_open_gate_streaming_equals_one_call(cuts):
    gated, _ = _gated_pair()
    _open(gated)
    ids = ids_for(gated, 2, sum(cuts))
    with torch.no_grad():
        whole = gated(ids).logits
        cache, outs, pos = FamCache(gated.config), [], 0
        for c in cuts:
            out = gated(ids[:, pos:pos + c], past_key_values=cache, use_cache=True)
            cache, pos = out.past_key_values, pos + c
            outs.append(out.logits)
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=TOL, rtol=0)


def test_read_gate_round_trips_save_pretrained(tmp_path):
    from transformer_fam import FamForCausalLM

    gated = _open(_gated_pair()[0])
    gated.save_pretrained(tmp_path)
    again = FamForCausalLM.from_pretrained(tmp_path)
    ids = ids_for(gated, 1, 14)
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, gated(ids).logits, atol=TOL, rtol=0)


def test_converted_smollm2_shape_closed_gate_equals_bswa():
    """from_hf on a Llama model: the gate is a new parameter, zero at conversion."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from transformer_fam import from_hf

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)).eval()
    fam = from_hf(hf, attention_mode="fam", block_size=4, mem_segments=1, fam_length=2, fam_read_gate=True)
    bswa = from_hf(hf, attention_mode="bswa", block_size=4, mem_segments=1, fam_length=2)
    ids = ids_for(fam, 2, 19)
    with torch.no_grad():
        torch.testing.assert_close(fam(ids).logits, bswa(ids).logits, atol=TOL, rtol=0)


# ---------------------------------------------------------------------------------------------- write gate
def test_converted_write_gate_starts_as_the_paper_form_and_trains_saves_and_loads(tmp_path):
    """Option O4 on a converted checkpoint: the write gate is a new parameter, zero at conversion (logits
    equal the paper-form conversion), LoRA trains it in the "gates" group at gate_lr, and save_lora /
    load_lora round-trip it (a folder without it leaves it at zero; a gated folder on an ungated model is refused)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from transformer_fam import from_hf
    from transformer_fam.hf.lora import load_lora, save_lora, write_gates

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)).eval()

    def convert(**kw):
        return from_hf(hf, attention_mode="fam", block_size=4, mem_segments=1, fam_length=2, **kw)

    gated, paper = convert(fam_write_gate=True), convert()
    ids = ids_for(gated, 2, 19)
    with torch.no_grad():
        torch.testing.assert_close(gated(ids).logits, paper(ids).logits, atol=TOL, rtol=0)
    peft_model = apply_lora(gated, rank=2)
    gates = write_gates(peft_model)
    assert sorted(gates) == [f"layers.{i}.fam_write_gate.{n}" for i in (0, 1) for n in ("bias", "weight")]
    assert all(g.requires_grad for g in gates.values())
    r = recipe_from_dict({"init": "pretrained", "base_model": "x", "finetune": "lora", "lr": 3e-4,
                          "gate_lr": 3e-2, "attention_mode": "fam", "fam_write_gate": True})
    groups = {g["name"]: g for g in param_groups(r, peft_model)}
    assert {id(p) for p in groups["gates"]["params"]} == {id(g) for g in gates.values()}
    opt = build_optimizer(r, peft_model)
    peft_model.train()
    for _ in range(3):
        opt.zero_grad()
        peft_model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    assert all(g.detach().abs().max() > 1e-3 for g in gates.values())  # zero-initialised, yet they moved
    peft_model.eval()
    save_lora(peft_model, tmp_path / "a")
    with torch.no_grad():
        trained = peft_model(input_ids=ids).logits
        again = load_lora(convert(fam_write_gate=True), tmp_path / "a")
        torch.testing.assert_close(again(input_ids=ids).logits, trained, atol=TOL, rtol=0)
        save_lora(apply_lora(convert(), rank=2), tmp_path / "paper")  # a paper-form adapter: no gate
        older = load_lora(convert(fam_write_gate=True), tmp_path / "paper")
        assert all((g == 0).all() for g in write_gates(older).values())
    # the gated folder on a model without the option: refused, not silently loaded without its gates
    with pytest.raises(ValueError, match=r"fam_prompt.safetensors: holds gates the model lacks "
                                         r"\(layers.0.fam_write_gate.bias, 4 in all\); convert the model with "
                                         r"fam_write_gate=True"):
        load_lora(convert(), tmp_path / "a")
    with pytest.raises(ValueError, match="fam_write_gate=True: acts on the FAM only"):
        recipe_from_dict({"attention_mode": "bswa", "fam_write_gate": True})
