"""Attention transfer (training/transfer.py): the teacher is the original checkpoint, the loss is
each student layer's error on the teacher's inputs, and the trainer logs exactly that loss."""

import pytest
import torch

from helpers import hf_ids, hf_tiny, read_metrics, tiny_recipe
from transformer_fam import from_hf
from transformer_fam.hf.lora import apply_lora
from transformer_fam.training.recipe import recipe_from_dict
from transformer_fam.training.setup import fam_model
from transformer_fam.training.transfer import distill_loss, teacher_hidden_states, teacher_logits, transfer_loss


def _student(mode, L=8, m=0, seed=0):
    hf = hf_tiny("smollm2-like", seed=seed)
    model = from_hf(hf, attention_mode=mode, block_size=L, mem_segments=m, fam_length=4, dtype=torch.float32)
    peft = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():  # adapters that change the model: the teacher must not see them
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return hf, peft


def test_teacher_is_the_original_checkpoint_with_adapters_on():
    hf, peft = _student("fam")
    ids = hf_ids(2, 40)
    hidden = teacher_hidden_states(peft, ids)
    with torch.no_grad():
        ref = hf(ids, output_hidden_states=True).hidden_states  # HF: embeddings, layers..., last one normed
    assert len(hidden) == len(ref)
    for ours, theirs in zip(hidden[:-1], ref[:-1]):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    torch.testing.assert_close(fam_model(peft).model.norm(hidden[-1]), ref[-1], atol=1e-4, rtol=0)
    assert fam_model(peft).config.attention_mode == "fam"  # restored after the teacher's forward
    assert peft(input_ids=ids).logits.requires_grad  # and the adapters are back on


def test_transfer_loss_is_zero_only_where_the_student_sees_what_the_teacher_sees():
    ids = hf_ids(2, 40)
    _, wide = _student("bswa", L=8, m=5)  # 6 blocks of 8 >= 40 tokens: BSWA equals full attention
    with torch.no_grad():
        for name, p in wide.named_parameters():
            if "lora_B" in name:
                p.zero_()
    assert transfer_loss(fam_model(wide), teacher_hidden_states(wide, ids)).item() < 1e-8
    _, narrow = _student("bswa", L=8, m=0)
    loss, per_layer = transfer_loss(fam_model(narrow), teacher_hidden_states(narrow, ids), per_layer=True)
    assert loss.item() > 1e-3 and len(per_layer) == 2 and loss.item() == pytest.approx(sum(per_layer) / 2, rel=1e-5)


def test_transfer_loss_trains_the_adapters_and_the_fam_prompt():
    _, peft = _student("fam")
    ids = hf_ids(2, 40)
    transfer_loss(fam_model(peft), teacher_hidden_states(peft, ids)).backward()
    grads = {n: p.grad for n, p in peft.named_parameters() if p.requires_grad}
    assert any("lora_A" in n and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    prompt = fam_model(peft).fam_prompt
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0


def _base_checkpoint(tmp_path):
    from transformer_fam.data.tokenizer import byte_tokenizer

    base = tmp_path / "llama"
    hf = hf_tiny("smollm2-like", vocab_size=258)
    hf.save_pretrained(base)
    byte_tokenizer().save_pretrained(base)
    return base


def _lora_trainer(tmp_path, **kw):
    """(Trainer, recipe values) of a 2-step LoRA fine-tune of a tiny converted checkpoint (fam, L 8, F 2)."""
    from transformer_fam.training.trainer import Trainer

    values = tiny_recipe(tmp_path, init="pretrained", base_model=str(_base_checkpoint(tmp_path)), finetune="lora",
                         lora_rank=4, tokenizer="auto", max_steps=2, save_every=2, attention_mode="fam",
                         block_size=8, mem_segments=0, fam_length=2, **kw)
    return Trainer(recipe_from_dict(values)), values


def test_trainer_logs_the_transfer_loss_of_its_first_batch(tmp_path):
    trainer, values = _lora_trainer(tmp_path, transfer_weight=1.0, lm_weight=0.0)
    inputs, _ = trainer.batches.batch(0)
    with torch.no_grad():
        want = transfer_loss(trainer.fam, teacher_hidden_states(trainer.model, inputs)).item()
    assert trainer.run() == 0
    records = read_metrics(values["out_dir"])
    first = next(r for r in records if r.get("step") == 1)
    assert first["transfer"] == pytest.approx(want, rel=1e-4)
    assert all(r["transfer"] > 0 for r in records if "transfer" in r)


@pytest.mark.parametrize("changes, key", [
    ({"transfer_weight": 1.0}, "finetune=lora"),  # scratch / full fine-tuning has no teacher
    ({"transfer_weight": 1.0, "init": "pretrained", "base_model": "x", "finetune": "lora", "rsp_prob": 0.5},
     "rsp_prob=0.0"),
    ({"transfer_weight": 1.0, "init": "pretrained", "base_model": "x", "finetune": "lora",
      "attention_mode": "full"}, "student must be bswa or fam"),
    ({"lm_weight": 0.0}, "lm_weight=0"),
    ({"transfer_weight": -1.0}, "transfer_weight=-1.0"),
])
def test_transfer_recipe_errors_name_the_key(changes, key):
    with pytest.raises(ValueError, match=key):
        recipe_from_dict(changes)


# ---------------------------------------------------------------------------------------------- self-distillation
def test_distill_loss_is_the_kl_divergence_of_torch():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 7, 11, generator=g), torch.randn(2, 7, 11, generator=g) * 2
    p, q = torch.softmax(teacher[:, 3:].double(), -1), torch.softmax(student[:, 3:].double(), -1)
    ref = (p * (p / q).log()).sum(-1).float()  # KL(p || q) from its definition
    torch.testing.assert_close(distill_loss(student, teacher, start=3), ref.mean())
    torch.testing.assert_close(distill_loss(student, teacher, start=3, reduction="sum"), ref.sum())
    assert distill_loss(teacher, teacher).abs().item() < 1e-6


def test_teacher_logits_are_the_original_checkpoints():
    hf, peft = _student("fam")
    ids = hf_ids(2, 40)
    with torch.no_grad():
        ref = hf(ids).logits
    torch.testing.assert_close(teacher_logits(peft, ids), ref, atol=1e-4, rtol=0)
    _, wide = _student("bswa", L=8, m=5)  # sees the whole sequence: with zero adapters it is its own teacher
    with torch.no_grad():
        for name, p in wide.named_parameters():
            if "lora_B" in name:
                p.zero_()
        assert distill_loss(wide(input_ids=ids).logits, teacher_logits(wide, ids)).item() < 1e-6
    _, narrow = _student("fam", L=8, m=0)  # beyond its 8-token window the FAM must carry what the teacher sees
    student = narrow(input_ids=ids).logits
    teacher = teacher_logits(narrow, ids)
    assert distill_loss(student, teacher, start=8).item() > 1e-3
    distill_loss(student, teacher).backward()
    assert fam_model(narrow).fam_prompt.grad.abs().sum() > 0


def test_trainer_logs_the_distillation_of_its_first_batch(tmp_path):
    trainer, values = _lora_trainer(tmp_path, distill_weight=1.0, distill_from=4, lm_weight=0.0)
    inputs, _ = trainer.batches.batch(0)
    with torch.no_grad():
        want = distill_loss(trainer.model(input_ids=inputs).logits, teacher_logits(trainer.model, inputs), 4).item()
    assert trainer.run() == 0
    records = read_metrics(values["out_dir"])
    assert records[0]["distill"] == pytest.approx(want, rel=1e-4)
    with torch.no_grad():  # the only loss: two AdamW steps lowered it
        after = distill_loss(trainer.model(input_ids=inputs).logits, teacher_logits(trainer.model, inputs), 4).item()
    assert after < want


def test_text_prefix_trains_the_rows_end_from_the_state_its_prefix_leaves(tmp_path):
    """Truncated backprop on text (recipe key text_prefix): rows are prefix + seq_len tokens; the
    logged next-token loss and KL are those of the whole row's forward at positions >= prefix."""
    from transformer_fam.core.model import next_token_loss

    trainer, values = _lora_trainer(tmp_path, distill_weight=1.0, seq_len=16, text_prefix=24)
    inputs, targets = trainer.batches.batch(0)
    assert inputs.shape == (4, 40)
    with torch.no_grad():
        whole = trainer.model(input_ids=inputs).logits
        want_kl = distill_loss(whole[:, 24:], teacher_logits(trainer.model, inputs)[:, 24:]).item()
        want_lm = next_token_loss(whole[:, 24:], targets[:, 24:], shift=False).item()
        fresh = next_token_loss(trainer.model(input_ids=inputs[:, 24:]).logits, targets[:, 24:], shift=False).item()
    assert abs(fresh - want_lm) > 1e-3  # the carried state matters: a fresh start would be another loss
    assert trainer.run() == 0
    records = read_metrics(values["out_dir"])
    assert records[0]["loss"] == pytest.approx(want_lm, rel=1e-4)
    assert records[0]["distill"] == pytest.approx(want_kl, rel=1e-4)
    assert records[0]["tokens"] == 4 * 40


@pytest.mark.parametrize("changes, key", [
    ({"text_prefix": 12}, "text_prefix=12: must be a whole number of blocks"),
    ({"text_prefix": 16, "data": "passkey"}, "acts on text micro-batches"),
    ({"text_prefix": 16, "data": "passkey-retrieval", "grad_accum": 2}, "set retrieval_text"),
    ({"text_prefix": 16, "data": "kjv", "batching": "document"}, "needs batching=packed"),
    ({"distill_weight": 1.0}, "finetune=lora"),
    ({"distill_weight": 1.0, "init": "pretrained", "base_model": "x", "finetune": "lora",
      "attention_mode": "full"}, "student must be bswa or fam"),
    ({"distill_weight": 1.0, "init": "pretrained", "base_model": "x", "finetune": "lora", "seq_len": 64,
      "distill_from": 64}, "distill_from=64"),
    ({"distill_weight": 1.0, "init": "pretrained", "base_model": "x", "finetune": "lora",
      "data": "passkey-retrieval", "grad_accum": 2}, "set retrieval_text"),
    ({"distill_weight": -0.5}, "distill_weight=-0.5"),
    ({"distill_weight": float("nan")}, "distill_weight=nan"),
    ({"distill_weight": 1.0, "init": "pretrained", "base_model": "x", "finetune": "lora", "lm_weight": 0.0,
      "data": "passkey-retrieval", "grad_accum": 2, "retrieval_text": "kjv"}, "retrieval micro-batches have no loss"),
])
def test_distill_recipe_errors_name_the_key(changes, key):
    with pytest.raises(ValueError, match=key):
        recipe_from_dict({"block_size": 8, **changes})
