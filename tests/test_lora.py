"""LoRA with peft on a FamForCausalLM: trains (FAM prompt included), saves, reloads, merges."""

import copy

import pytest
import torch

from helpers import ids_for, tiny
from transformer_fam import FamForCausalLM
from transformer_fam.hf.lora import LORA_TARGETS, apply_lora, load_lora, merge_lora, save_lora

TOL = 1e-5


def trained(mode="fam", steps=15, rank=4, alpha=8):
    model = tiny(mode, L=4, m=1, F=2)
    base_state = copy.deepcopy(model.state_dict())
    peft_model = apply_lora(model, rank=rank, alpha=alpha)
    ids = ids_for(model, 2, 14)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-2)
    peft_model.train()
    losses = []
    for _ in range(steps):
        loss = peft_model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return peft_model.eval(), base_state, ids, losses


def fresh_base(mode, state):
    model = tiny(mode, L=4, m=1, F=2, seed=123)  # different random weights, then the saved base ones
    model.load_state_dict(state)
    return model


def test_only_adapters_and_the_fam_prompt_train():
    peft_model, base_state, ids, losses = trained()
    names = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert "base_model.model.model.fam_prompt" in names
    assert all("lora_" in n for n in names - {"base_model.model.model.fam_prompt"})
    adapted = {n.split(".")[-4] for n in names if "lora_A" in n}
    assert adapted == set(LORA_TARGETS)
    assert losses[-1] < losses[0] - 0.1
    base = peft_model.get_base_model()
    assert not torch.equal(base.fam_prompt.detach(), base_state["model.fam_prompt"])  # the prompt trained
    for name, value in base.state_dict().items():  # the frozen weights did not move
        if "lora_" not in name and name != "model.fam_prompt":
            torch.testing.assert_close(value, base_state[name.replace(".base_layer", "")], atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["fam", "bswa"])
def test_save_reload_and_merge_give_the_adapter_logits(tmp_path, mode):
    peft_model, base_state, ids, _ = trained(mode)
    with torch.no_grad():
        adapter_logits = peft_model(input_ids=ids).logits
        base_logits = fresh_base(mode, base_state)(ids).logits
    assert (adapter_logits - base_logits).abs().max() > 1e-2  # training changed the function

    save_lora(peft_model, tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_config.json").exists()
    assert (tmp_path / "lora" / "fam_prompt.safetensors").exists() == (mode == "fam")
    reloaded = load_lora(fresh_base(mode, base_state), tmp_path / "lora").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapter_logits, atol=0, rtol=0)

    merged = merge_lora(reloaded)
    assert type(merged) is FamForCausalLM
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert (merged(ids).logits - adapter_logits).abs().max() <= TOL
    merged.save_pretrained(tmp_path / "merged")
    again = FamForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert (again(ids).logits - adapter_logits).abs().max() <= TOL


def test_merged_weight_is_w_plus_scaled_BA():
    peft_model, base_state, _, _ = trained(rank=4, alpha=8)
    q = peft_model.get_base_model().model.layers[1].self_attn.q_proj
    A, B = q.lora_A["default"].weight.detach(), q.lora_B["default"].weight.detach()
    expected = base_state["model.layers.1.self_attn.q_proj.weight"] + (8 / 4) * B @ A
    merged = merge_lora(peft_model)
    torch.testing.assert_close(merged.model.layers[1].self_attn.q_proj.weight.detach(), expected,
                               atol=1e-6, rtol=0)


def test_adapter_model_generates_with_the_fam_cache():
    peft_model, _, ids, _ = trained()
    out = peft_model.generate(input_ids=ids[:1, :9], max_new_tokens=6, do_sample=False, pad_token_id=0)
    seq = ids[:1, :9]
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat((seq, peft_model(input_ids=seq).logits[:, -1:].argmax(-1)), dim=1)
    assert torch.equal(out, seq)


def test_load_lora_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        load_lora(tiny("fam"), tmp_path / "nothing-here")


def test_cached_initial_fam_follows_adapter_switches_and_weight_updates():
    # Without autograd the learned prompt's pass through the layers is computed once and reused;
    # the reuse must end whenever the function changes: adapters off/on, merged, weights edited.
    peft_model, base_state, ids, _ = trained("fam")
    # the prompt trained too: compare against the base weights with the trained prompt
    base = fresh_base("fam", {**base_state, "model.fam_prompt": peft_model.get_base_model().fam_prompt.detach()})
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            disabled = peft_model(input_ids=ids).logits
        again = peft_model(input_ids=ids).logits
        torch.testing.assert_close(disabled, base(ids).logits, atol=TOL, rtol=0)
        torch.testing.assert_close(again, adapted, atol=0, rtol=0)
        assert (adapted - disabled).abs().max() > 1e-2
        inner = peft_model.get_base_model()
        inner.model.layers[0].mlp.up_proj.base_layer.weight.mul_(1.5)  # an in-place edit of a frozen weight
        base.model.layers[0].mlp.up_proj.weight.mul_(1.5)
        with peft_model.disable_adapter():
            torch.testing.assert_close(peft_model(input_ids=ids).logits, base(ids).logits, atol=TOL, rtol=0)
