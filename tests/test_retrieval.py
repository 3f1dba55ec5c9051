"""`data: passkey-retrieval` and the read / write / probe supervision of `fam train`
(training/retrieval.py): the data's geometry, the retrieval heads against HF's own attention
weights, the losses the trainer logs, and an exact resume with the training-only probe."""

from pathlib import Path

import pytest
import torch

from helpers import hf_tiny, read_metrics, tiny_recipe
from transformer_fam.core.model import FamForCausalLM
from transformer_fam.data.passkey import passkey_tokenizer
from transformer_fam.training.recipe import recipe_from_dict
from transformer_fam.training.retrieval import RetrievalBatches, distant_heads, parse_curriculum, retrieval_heads

L = 80  # a PassKey example without filler is 67 tokens with the word-level tokenizer


def _batches(straddle=False, seed=0, curriculum="1:0,3:4", p_in=0.2):
    return RetrievalBatches(passkey_tokenizer(), L, 3, seed, curriculum, p_inwindow=p_in, straddle=straddle)


@pytest.mark.parametrize("straddle", [False, True])
def test_the_question_lies_d_blocks_after_the_key(straddle):
    data = _batches(straddle)
    fillers, ds = set(), set()
    for index in range(40):
        ids, (a0, a1), d = data.draw(index)
        assert d <= data.distance_bound(index) and (index >= 4 or d <= 1)
        assert max(data.key_digits) // L == 0  # depth 0: the key sits in the first block
        assert (a1 - 1) // L == d  # the answer's last digit lies d blocks after the key's block
        if not straddle:
            assert (a0 - data.qa + (a1 - a0)) // L == d  # the whole question too
        n = ids.shape[1] - data.head - data.qa
        fillers.add(n % L)
        ds.add(d)
        inputs, targets = data.batch(index)
        assert torch.equal(inputs, ids[:, :-1])
        assert torch.equal(targets[:, a0 - 1:a1 - 1], ids[:, a0:a1]) and (targets != -100).sum() == 3 * (a1 - a0)
    assert ds == {0, 1, 2, 3} and len(fillers) > 5  # in-window batches, every distance, unaligned fillers


def test_key_depth_is_drawn_per_batch():
    """retrieval_depth=D: each batch puts the key at a depth drawn in [0, D]; key_digits_for gives
    where its digits are (those the answer repeats) in every row; D = 0 is the spec's prompt."""
    flat = _batches(curriculum="3:0")
    deep = RetrievalBatches(passkey_tokenizer(), L, 3, 0, "3:0", p_inwindow=0.0, depth=1.0)
    starts = set()
    for index in range(12):
        for data in (flat, deep):
            ids, (a0, a1), d = data.draw(index)
            digits = data.key_digits_for(index)
            assert torch.equal(ids[:, digits], ids[:, a1 - len(digits):a1])  # the answer is the key
            assert len({tuple(row) for row in ids[:, digits].tolist()}) == 3  # a new key in every row
        assert flat.key_digits_for(index) == flat.key_digits
        starts.add(deep.key_digits_for(index)[0])
        assert torch.equal(flat.batch(index)[0], _batches(curriculum="3:0").batch(index)[0])
    assert len(starts) > 8 and max(starts) > 2 * L  # the key lands in later blocks, not after the instruction


def test_depth_zero_keeps_the_batches_of_earlier_runs():
    """retrieval_depth=0 draws nothing more: batch 5 and 9 are those the code drew before the key
    (recorded from the commit before retrieval_depth), keys and lengths, so old runs resume exactly."""
    data = RetrievalBatches(passkey_tokenizer(), L, 3, 0, "1:0,3:4", p_inwindow=0.2, p_boundary=0.5)
    for index, shape, d, keys in [(5, (3, 138), 1, [[7, 11, 8, 10, 8], [7, 9, 9, 12, 6], [7, 7, 7, 10, 4]]),
                                  (9, (3, 284), 3, [[11, 12, 10, 5, 11], [6, 7, 5, 6, 9], [11, 13, 7, 7, 10]])]:
        ids, (a0, a1), got_d = data.draw(index)
        assert (tuple(ids.shape), got_d, ids[:, a1 - 5:a1].tolist()) == (shape, d, keys)


def test_batches_are_a_pure_function_of_the_step():
    a, b, c = _batches(), _batches(), _batches(seed=1)
    assert torch.equal(a.batch(7)[0], b.batch(7)[0])
    assert not torch.equal(a.batch(7)[0], a.batch(8)[0]) and not torch.equal(a.batch(7)[0], c.batch(7)[0])


@pytest.mark.parametrize("spec", ["", "2:5", "x", "0:0"])
def test_bad_curriculum_is_one_clear_error(spec):
    with pytest.raises(ValueError, match="retrieval_curriculum"):
        parse_curriculum(spec)


def test_block_too_small_for_an_example_is_an_error():
    with pytest.raises(ValueError, match="block_size=16"):
        RetrievalBatches(passkey_tokenizer(), 16, 2, 0, "1:0")


def test_retrieval_heads_match_hf_attention_weights():
    """The score of (layer, head): attention from the query predicting key digit j onto digit j,
    mean over rows and digits, in the original model; reference: HF's eager attention weights."""
    from transformer_fam import from_hf
    from transformer_fam.hf.lora import apply_lora

    hf = hf_tiny("smollm2-like", vocab_size=80)
    hf.config._attn_implementation = "eager"
    data = _batches()
    ids, answer, _ = data.draw(5)
    peft = apply_lora(from_hf(hf, attention_mode="fam", block_size=L, mem_segments=0, fam_length=5,
                              dtype=torch.float32), rank=2, alpha=4)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # the heads come from the original model: adapters must not count
        att = hf(ids, output_attentions=True).attentions
    queries = [answer[1] - 5 + j - 1 for j in range(5)]
    want = sorted(((sum(float(a[:, h, q, k].mean()) for q, k in zip(queries, data.key_digits)) / 5, layer, h)
                   for layer, a in enumerate(att) for h in range(a.shape[1])), reverse=True)
    got = retrieval_heads(peft, ids, answer, data.key_digits, 3)
    assert [(layer, h) for _, layer, h in got] == [(layer, h) for _, layer, h in want[:3]]
    assert [s for s, _, _ in got] == pytest.approx([s for s, _, _ in want[:3]], abs=1e-5)


@pytest.mark.parametrize("block, mem, sinks", [(8, 0, 4), (8, 1, 0), (6, 2, 3)])
def test_distant_heads_match_hf_attention_weights(block, mem, sinks):
    """The score of (layer, head): |o_cut - o_full|^2 / |o_full|^2 summed over the queries past the
    window, o_cut the head's output with its full-attention weights cut to its memory blocks, its
    own block and the sinks, renormalised; reference: HF's eager attention weights and the values
    its v_proj writes, every head ranked."""
    from transformer_fam import from_hf
    from transformer_fam.hf.lora import apply_lora

    hf = hf_tiny("smollm2-like", vocab_size=80)
    hf.config._attn_implementation = "eager"
    ids = torch.randint(0, 80, (2, 41), generator=torch.Generator().manual_seed(3))
    peft = apply_lora(from_hf(hf, attention_mode="fam", block_size=block, mem_segments=mem, fam_length=3,
                              dtype=torch.float32), rank=2, alpha=4)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # the heads come from the original model: adapters must not count
        values = []
        hooks = [layer.self_attn.v_proj.register_forward_hook(lambda m, i, o: values.append(o))
                 for layer in hf.model.layers]
        att = hf(ids, output_attentions=True).attentions
        for h in hooks:
            h.remove()
    want, window = [], (mem + 1) * block
    for layer, (a, v) in enumerate(zip(att, values)):
        H = a.shape[1]
        v = v.view(2, 41, -1, hf.config.hidden_size // H).transpose(1, 2)
        v = v.repeat_interleave(H // v.shape[1], dim=1)
        for h in range(H):
            num = den = 0.0
            for t in range(window, 41):
                keep = torch.tensor([s < sinks or (t // block - mem) * block <= s <= t for s in range(41)])
                w = a[:, h, t] * keep
                full = torch.einsum("bs,bsd->bd", a[:, h, t], v[:, h])
                cut = torch.einsum("bs,bsd->bd", w / w.sum(-1, keepdim=True), v[:, h])
                num, den = num + float((cut - full).pow(2).sum()), den + float(full.pow(2).sum())
            want.append((num / den, layer, h))
    want.sort(reverse=True)
    got = distant_heads(peft, ids, block, mem, len(want), sinks=sinks)
    assert [(layer, h) for _, layer, h in got] == [(layer, h) for _, layer, h in want]
    assert [s for s, _, _ in got] == pytest.approx([s for s, _, _ in want], rel=1e-4, abs=1e-7)
    one_at_a_time = distant_heads(peft, ids, block, mem, len(want), sinks=sinks, rows_per_pass=1)
    assert [(layer, h) for _, layer, h in one_at_a_time] == [(layer, h) for _, layer, h in want]
    assert [s for s, _, _ in one_at_a_time] == pytest.approx([s for s, _, _ in got], rel=1e-5, abs=1e-8)
    assert distant_heads(peft, ids, block, mem, 3, sinks=41)[0][0] == 0.0  # every key shown: nothing lost
    with pytest.raises(ValueError, match="rows of 41 tokens never reach beyond the 48-token window"):
        distant_heads(peft, ids, 16, 2, 3)


def _base(tmp_path):
    base = tmp_path / "llama"
    hf_tiny("smollm2-like", vocab_size=80).save_pretrained(base)
    return base


def _values(tmp_path, **kw):
    return tiny_recipe(tmp_path, init="pretrained", base_model=str(_base(tmp_path)), finetune="lora", lora_rank=4,
                       lora_alpha=8, tokenizer="passkey", data="passkey-retrieval", retrieval_curriculum="1:0,2:2",
                       retrieval_heads=2, read_weight=1.0, write_weight=1.0, probe_weight=1.0, batch_size=2,
                       attention_mode="fam", block_size=L, mem_segments=0, fam_length=5, warmup_steps=0,
                       **{"max_steps": 4, "save_every": 2, **kw})


def _book(tmp_path) -> Path:
    """A small text file for ``retrieval_text``."""
    book = tmp_path / "book.txt"
    book.write_text(" ".join(["the grass is green and the sky is blue"] * 200))
    return book


@pytest.mark.parametrize("depth", [0.0, 1.0])
def test_trainer_logs_the_supervision_losses_of_its_first_batch(tmp_path, depth):
    """The logged read / write / probe losses of step 1 are those of the first batch, with its key
    where the batch put it (retrieval_depth > 0: not after the instruction)."""
    from transformer_fam.training.trainer import Trainer

    values = _values(tmp_path, retrieval_p_inwindow=0.0, retrieval_depth=depth)
    trainer = Trainer(recipe_from_dict(values))
    sup = trainer.supervision
    assert len(sup.heads) == 2 and sup.probe is not None
    inputs, _ = trainer.batches.batch(0)
    ids, answer, d = trainer.batches.draw(0)
    digits = trainer.batches.key_digits_for(0)
    assert d >= 1  # the write happens at the key block's FAM update, before the answer's block
    assert (digits == sup.key_digits) == (depth == 0)
    with torch.no_grad(), sup.record() as (reader, writer):
        trainer.model(input_ids=inputs)
        want = {k: float(v) for k, v in sup.losses(reader, writer, inputs, answer, digits).items()}
        if depth:  # the depth-0 digits would be another loss
            from transformer_fam.experiments.passkey_demo import write_loss

            assert float(write_loss(writer, sup.key_digits, L, sup.heads)) != pytest.approx(want["write"])
    assert set(want) == {"read", "write", "probe"} and all(v > 0 for v in want.values())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainer.run() == 0
    first = read_metrics(values["out_dir"])[0]
    for k, v in want.items():
        assert first[k] == pytest.approx(v, rel=1e-4)
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("lora_B" in n for n in moved) and any(n.endswith("fam_prompt") for n in moved)


def test_resume_with_the_probe_is_exact(tmp_path):
    from transformer_fam.training.trainer import Trainer

    whole = _values(tmp_path / "a")
    assert Trainer(recipe_from_dict(whole)).run() == 0
    half = _values(tmp_path / "b", max_steps=2)
    assert Trainer(recipe_from_dict(half)).run() == 0
    rest = recipe_from_dict({**half, "max_steps": 4})
    assert Trainer(rest, resume=True).run() == 0

    def losses(values):
        return [r[k] for r in read_metrics(values["out_dir"]) for k in ("step", "loss", "read", "write", "probe")]

    assert losses(half) == pytest.approx(losses(whole), rel=1e-6)


@pytest.mark.parametrize("changes, needs", [
    ({"attention_mode": "bswa"}, "attention_mode=fam"),
    ({"finetune": "full"}, "finetune=lora"),
    ({"data": "passkey"}, "data=passkey-retrieval"),
    ({"fam_read_gate": True}, "fam_read_gate=False"),
])
def test_supervision_needs_its_setting(tmp_path, changes, needs):
    with pytest.raises(ValueError, match=f"read_weight=1.0: needs {needs}"):
        recipe_from_dict({**_values(tmp_path), **changes})


def test_boundary_fillers_put_the_answer_at_a_block_start():
    """retrieval_p_boundary: the answer starts from (answer_len - 1) tokens before to 11 after the
    start of block d, the question ending in block d - 1 or d; p_boundary=0 keeps earlier batches."""
    plain = _batches()
    data = RetrievalBatches(passkey_tokenizer(), L, 3, 0, "1:0,3:4", p_inwindow=0.2, p_boundary=1.0)
    offsets = set()
    for index in range(60):
        ids, (a0, a1), d = data.draw(index)
        if d == 0:
            assert torch.equal(ids, plain.draw(index)[0])  # in-window batches are untouched
            continue
        offset = a0 - d * L
        assert -(a1 - a0) < offset <= 11, (index, d, a0)
        offsets.add(offset)
    assert min(offsets) < 0 <= max(offsets) and len(offsets) > 8  # across and just after the boundary
    assert torch.equal(_batches().draw(9)[0], RetrievalBatches(passkey_tokenizer(), L, 3, 0, "1:0,3:4",
                                                              p_inwindow=0.2, p_boundary=0.0).draw(9)[0])


def test_supervision_skips_queries_in_the_key_block(tmp_path):
    """The read supervision targets FAM slot j only for queries in a block after the key's: in the
    key's own block the FAM is the initial one (it has not seen the key)."""
    from transformer_fam.training.trainer import Trainer

    trainer = Trainer(recipe_from_dict(_values(tmp_path)))
    sup = trainer.supervision
    inside = next(i for i in range(50) if trainer.batches.draw(i)[2] == 0)
    ids, answer, _ = trainer.batches.draw(inside)
    with torch.no_grad(), sup.record() as (reader, writer):
        trainer.model(input_ids=ids)
        got = sup.losses(reader, writer, ids, answer)
    assert "read" not in got and "probe" not in got and "write" in got


def test_text_mixed_batches_give_the_key_digits_of_their_retrieval_batches(tmp_path):
    """With text mixed in, retrieval micro-batch 2i is retrieval batch i: key_digits_for(2i) points at
    the digits that batch's answer repeats (a drawn depth, so not the depth-0 positions)."""
    from transformer_fam.training.retrieval import retrieval_batches

    recipe = recipe_from_dict(_values(tmp_path, retrieval_text=str(_book(tmp_path)), grad_accum=2, seq_len=40,
                                      retrieval_depth=1.0, retrieval_p_inwindow=0.0))
    batches = retrieval_batches(recipe, passkey_tokenizer())
    moved = 0
    for i in range(6):
        digits = batches.key_digits_for(2 * i)
        assert digits == batches.retrieval.key_digits_for(i)
        ids, (a0, a1), _ = batches.retrieval.draw(i)
        assert torch.equal(batches.batch(2 * i)[0], ids[:, :-1])
        assert torch.equal(ids[:, digits], ids[:, a1 - len(digits):a1])  # the digits the answer repeats
        moved += digits != batches.retrieval.key_digits
    assert moved >= 5


def test_text_mixed_batches_alternate_and_carry_full_targets(tmp_path):
    """retrieval_text: even micro-batches are retrieval batches (supervised), odd ones text with a
    next-token target on every token; the logged loss of a step is the mean of the two batches'
    losses, recomputed here, and the text batches get no supervision."""
    from transformer_fam.core.model import next_token_loss
    from transformer_fam.training.retrieval import TextMixedBatches
    from transformer_fam.training.trainer import Trainer

    book = _book(tmp_path)
    values = _values(tmp_path, retrieval_text=str(book), grad_accum=2, seq_len=40, max_steps=1,
                     retrieval_p_inwindow=0.0)
    trainer = Trainer(recipe_from_dict(values))
    batches = trainer.batches
    assert isinstance(batches, TextMixedBatches)
    assert [batches.is_retrieval(i) for i in range(4)] == [True, False, True, False]
    text_in, text_tg = batches.batch(1)
    assert text_in.shape == (2, 40) and bool((text_tg != -100).all()) and torch.equal(text_in[:, 1:], text_tg[:, :-1])
    assert torch.equal(batches.batch(2)[0], batches.retrieval.batch(1)[0])  # curriculum index = retrieval batch
    want = []
    with torch.no_grad():
        for index in (0, 1):
            inputs, targets = batches.batch(index)
            logits = trainer.model(input_ids=inputs).logits.float()
            want.append(float(next_token_loss(logits, targets, shift=False)))
        ids, answer, _ = batches.retrieval.draw(0)
        with trainer.supervision.record() as (reader, writer):
            trainer.model(input_ids=batches.batch(0)[0])
            sup = {k: float(v) for k, v in trainer.supervision.losses(reader, writer, ids, answer).items()}
    assert trainer.run() == 0
    first = read_metrics(values["out_dir"])[0]
    assert first["loss"] == pytest.approx(sum(want) / 2, rel=1e-4)
    assert (first["answer_loss"], first["text_loss"]) == pytest.approx(want, rel=1e-4)
    for k, v in sup.items():  # the retrieval batch's supervision only, averaged over the 2 micro-batches
        assert first[k] == pytest.approx(v / 2, rel=1e-4)


def test_init_adapter_continues_a_saved_fine_tune(tmp_path):
    """init_adapter: the run starts from the adapters and FAM prompt a LoRA run saved in
    OUT/final/adapter (logits equal the saved model's), and trains them on."""
    from transformer_fam.training.trainer import Trainer

    first = Trainer(recipe_from_dict(_values(tmp_path / "a", max_steps=2)))
    assert first.run() == 0
    adapter = tmp_path / "a" / "run" / "final" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "fam_prompt.safetensors"} <= {
        p.name for p in adapter.iterdir()}
    values = _values(tmp_path / "b", init_adapter=str(adapter), max_steps=1)
    second = Trainer(recipe_from_dict(values))
    ids = second.batches.batch(3)[0]
    with torch.no_grad():
        assert torch.allclose(second.model(input_ids=ids).logits, first.model(input_ids=ids).logits, atol=1e-5)
        merged = FamForCausalLM.from_pretrained(adapter.parent).eval()  # the final folder: the same model, merged
        assert torch.allclose(merged(input_ids=ids).logits, second.model(input_ids=ids).logits, atol=1e-4)
        fresh = Trainer(recipe_from_dict(_values(tmp_path / "c")))
        assert not torch.allclose(fresh.model(input_ids=ids).logits, first.model(input_ids=ids).logits, atol=1e-3)
    assert second.run() == 0


def test_text_prefix_lengthens_the_text_rows_only(tmp_path):
    """text_prefix: the text micro-batches read text_prefix more tokens (streamed without gradient
    by the trainer); the retrieval batches stay as they were."""
    from transformer_fam.training.retrieval import retrieval_batches
    from transformer_fam.training.setup import build_tokenizer

    book = _book(tmp_path)
    plain = recipe_from_dict(_values(tmp_path, retrieval_text=str(book), grad_accum=2, seq_len=40))
    longer = recipe_from_dict(_values(tmp_path, retrieval_text=str(book), grad_accum=2, seq_len=40, text_prefix=2 * L))
    tok = build_tokenizer(plain)
    a, b = retrieval_batches(plain, tok), retrieval_batches(longer, tok)
    assert torch.equal(a.batch(0)[0], b.batch(0)[0]) and torch.equal(a.batch(2)[1], b.batch(2)[1])
    assert a.batch(1)[0].shape == (2, 40) and b.batch(1)[0].shape == (2, 40 + 2 * L)


def test_text_prefix_run_with_supervision_saves_its_final_model(tmp_path):
    """A no-grad prefix forward fills the model's cache of the initial FAM; it must not hold a view
    of the FAM prompt, which the optimiser then changes: the final save deep-copies the model (the
    first R9 run on SmolLM2 crashed there after 40 steps)."""
    from transformer_fam.training.trainer import Trainer

    book = _book(tmp_path)
    values = _values(tmp_path, retrieval_text=str(book), grad_accum=2, seq_len=40, text_prefix=2 * L,
                     max_steps=2, distill_weight=1.0, fam_write_gate=True)
    trainer = Trainer(recipe_from_dict(values))
    assert trainer.run() == 0
    assert (Path(values["out_dir"]) / "final" / "config.json").exists()
    inner = trainer.fam.model
    assert inner._initial_cache is not None  # filled by the last no-grad prefix forward, its own memory
    fam0 = inner._initial_cache[1][0][0]
    assert fam0.untyped_storage().data_ptr() != inner.fam_prompt.untyped_storage().data_ptr()


@pytest.mark.parametrize("changes, message", [
    ({"retrieval_text": "milton", "grad_accum": 1}, "grad_accum must be even"),
    ({"retrieval_p_boundary": 1.5}, "retrieval_p_boundary=1.5: must be in"),
    ({"retrieval_depth": -0.5}, r"retrieval_depth=-0.5: must be in \[0, 1\]"),
    ({"init_adapter": "x", "finetune": "full", "read_weight": 0.0, "write_weight": 0.0, "probe_weight": 0.0},
     "init_adapter='x': needs finetune=lora"),
])
def test_mix_and_adapter_keys_are_checked(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict({**_values(tmp_path), **changes})


@pytest.mark.parametrize("key, value", [("retrieval_text", "milton"), ("retrieval_depth", 0.5)])
def test_retrieval_keys_need_retrieval_data(tmp_path, key, value):
    with pytest.raises(ValueError, match=f"{key}={value!r}: needs data=passkey-retrieval"):
        recipe_from_dict(tiny_recipe(tmp_path, **{key: value}))


def test_fam_read_heads_retrieval_restricts_reads_to_the_supervised_heads(tmp_path):
    """Option O5 with fam_read_heads=retrieval: the heads the supervision finds are the only FAM
    readers during training, and the saved final model keeps them."""
    from transformer_fam.training.trainer import Trainer

    values = _values(tmp_path, fam_read_heads="retrieval", max_steps=2)
    trainer = Trainer(recipe_from_dict(values))
    heads = [list(h) for h in trainer.supervision.heads]
    assert trainer.fam.config.fam_read_heads == heads and len(heads) == 2
    assert trainer.run() == 0
    final = FamForCausalLM.from_pretrained(Path(values["out_dir"]) / "final").eval()
    assert final.config.fam_read_heads == heads
    ids = torch.randint(0, final.config.vocab_size, (1, 3 * L))
    restricted = final(ids).logits
    final.config.fam_read_heads = None  # every head reads: another model
    assert (final(ids).logits - restricted).abs().max() > 1e-4


def test_fam_read_distant_adds_the_distant_heads_to_the_readers(tmp_path):
    """Option O5's fam_read_distant: the K heads distant_heads ranks first on the first
    fam_read_distant_rows text rows (here 3: batch 0's two rows and batch 1's first) join the
    supervised readers (no duplicates), during training and in the saved model; alone, they are the
    only readers."""
    from transformer_fam.training.trainer import Trainer

    book = _book(tmp_path)
    values = _values(tmp_path, fam_read_heads="retrieval", fam_read_distant=3, fam_read_distant_rows=3,
                     retrieval_text=str(book), grad_accum=2, seq_len=2 * L + 5, max_steps=2)
    trainer = Trainer(recipe_from_dict(values))
    text = trainer.batches.text
    ids = torch.cat([text.batch(0)[0], text.batch(1)[0][:1]])
    assert not torch.equal(text.batch(1)[0][0], text.batch(0)[0][0])  # a third row, not a repeat
    ranked = distant_heads(trainer.model, ids, L, 0, 3)
    two_rows = distant_heads(trainer.model, ids[:2], L, 0, 3)
    assert [(a, b) for _, a, b in ranked] != [(a, b) for _, a, b in two_rows]  # the third row changes the heads
    supervised = [list(h) for h in trainer.supervision.heads]
    want = supervised + [[layer, h] for _, layer, h in ranked if [layer, h] not in supervised]
    assert trainer.fam.config.fam_read_heads == want
    assert trainer.run() == 0
    assert FamForCausalLM.from_pretrained(Path(values["out_dir"]) / "final").config.fam_read_heads == want
    unsupervised = {"out_dir": str(tmp_path / "alone"), "fam_read_heads": "", "read_weight": 0.0,
                    "write_weight": 0.0, "probe_weight": 0.0}
    alone = Trainer(recipe_from_dict({**values, **unsupervised}))
    assert alone.fam.config.fam_read_heads == [[layer, h] for _, layer, h in ranked]
    with pytest.raises(ValueError, match="fam_read_distant=3: with read / write / probe supervision the "
                                         "supervised heads must read too; set fam_read_heads=retrieval"):
        Trainer(recipe_from_dict({**values, "out_dir": str(tmp_path / "c"), "fam_read_heads": ""}))


@pytest.mark.parametrize("changes, message", [
    ({"fam_read_distant": -1}, "fam_read_distant=-1: must be >= 0"),
    ({"fam_read_distant": 2, "fam_read_distant_rows": 0, "retrieval_text": "milton"},
     "fam_read_distant_rows=0: must be >= 1"),
    ({"fam_read_distant": 2}, "fam_read_distant=2: ranks the heads on text rows; set retrieval_text"),
    ({"fam_read_distant": 2, "init": "scratch", "finetune": "full"}, "fam_read_distant=2: ranks the heads of the original"),
    ({"fam_read_distant": 2, "data": "passkey", "read_weight": 0.0, "write_weight": 0.0, "probe_weight": 0.0},
     "fam_read_distant=2: ranks the heads on text rows, not PassKey filler"),
    ({"fam_read_distant": 2, "retrieval_text": "milton", "grad_accum": 2, "seq_len": 80},
     "fam_read_distant=2: rows of seq_len=80 never reach beyond the 80-token window"),
    ({"fam_read_distant": 2, "attention_mode": "bswa", "read_weight": 0.0, "write_weight": 0.0,
      "probe_weight": 0.0}, "fam_read_distant=2: acts on the FAM only"),
])
def test_fam_read_distant_recipe_key_is_checked(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict({**_values(tmp_path), **changes})


@pytest.mark.parametrize("changes, message", [
    ({"fam_read_heads": "retrieval", "read_weight": 0.0, "write_weight": 0.0}, "fam_read_heads=retrieval: names"),
    ({"fam_read_heads": "17:3"}, r"fam_read_heads='17:3': '17:3' is not LAYER.HEAD"),
    ({"fam_read_heads": "0.1", "attention_mode": "bswa", "read_weight": 0.0, "write_weight": 0.0,
      "probe_weight": 0.0}, "fam_read_heads=0.1: acts on the FAM only"),
    ({"fam_read_shift": True}, r"read_weight=1.0: needs fam_read_shift=False \(got True\)"),
    ({"fam_skip_initial_read": True}, r"read_weight=1.0: needs fam_skip_initial_read=False \(got True\)"),
    ({"fam_skip_initial_read": True, "attention_mode": "bswa", "read_weight": 0.0, "write_weight": 0.0,
      "probe_weight": 0.0}, "fam_skip_initial_read=True: acts on the FAM only"),
])
def test_fam_read_heads_recipe_key_is_checked(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict({**_values(tmp_path), **changes})


def test_fam_read_heads_must_hold_the_supervised_heads(tmp_path):
    from transformer_fam.training.trainer import Trainer

    with pytest.raises(ValueError, match=r"fam_read_heads=0.0: lacks the supervised heads [\d., ]+; add them"):
        Trainer(recipe_from_dict(_values(tmp_path, fam_read_heads="0.0")))


def test_fam_read_heads_outside_the_model_is_one_clear_error(tmp_path):
    from transformer_fam.training.trainer import Trainer

    with pytest.raises(ValueError, match=r"fam_read_heads=\[\[7, 0\]\]: \[7, 0\] is outside the model's 2 layers"):
        Trainer(recipe_from_dict(_values(tmp_path, fam_read_heads="7.0")))


def test_resume_keeps_the_readers_it_trained_with(tmp_path, capsys):
    """The checkpoint holds option O5's readers; a run resumed with a recipe that would rank other
    heads (fewer rows) carries on with the saved ones, says so, and saves them in its final model."""
    from transformer_fam.training.trainer import Trainer

    values = _values(tmp_path, fam_read_heads="retrieval", fam_read_distant=3, fam_read_distant_rows=3,
                     retrieval_text=str(_book(tmp_path)), grad_accum=2, seq_len=2 * L + 5, max_steps=2, save_every=2)
    first = Trainer(recipe_from_dict(values))
    trained = first.fam.config.fam_read_heads
    assert first.run() == 0
    other = dict(values, fam_read_distant_rows=2, max_steps=3)
    assert Trainer(recipe_from_dict(dict(other, out_dir=str(tmp_path / "fresh")))).fam.config.fam_read_heads != trained
    capsys.readouterr()
    resumed = Trainer(recipe_from_dict(other), resume=True)
    assert resumed.run() == 0
    assert resumed.fam.config.fam_read_heads == trained
    assert "the readers saved in" in capsys.readouterr().err
    assert FamForCausalLM.from_pretrained(Path(values["out_dir"]) / "final").config.fam_read_heads == trained


@pytest.mark.slow
def test_fam_read_distant_under_torchrun_matches_one_process(tmp_path):
    """Two DDP ranks (torchrun, gloo) rank the readers, rank 0's list is broadcast: the saved model's
    readers and the losses equal the one-process run's. (Both ranks rank the same rows, so this shows
    the broadcast runs and agrees, not that it corrects a disagreement.)"""
    import os
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[1]
    values = _values(tmp_path, fam_read_heads="", fam_read_distant=3, fam_read_distant_rows=3,
                     retrieval_text=str(_book(tmp_path)), grad_accum=2, seq_len=2 * L + 5, max_steps=2, save_every=2)
    values.update(read_weight=0.0, write_weight=0.0, probe_weight=0.0)  # the supervision runs in one process
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(values))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo / "src"))
    runs = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        done = subprocess.run([sys.executable, *launcher, "-m", "transformer_fam.cli", "train", str(recipe),
                               f"out_dir={tmp_path / name}"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = FamForCausalLM.from_pretrained(tmp_path / name / "final").config.fam_read_heads
    assert runs["two"] == runs["one"] and len(runs["one"]) == 3
    one, two = ([r["loss"] for r in read_metrics(tmp_path / n)] for n in ("one", "two"))
    assert len(one) == 2 and two == pytest.approx(one, abs=1e-4)


def _gates(trainer) -> list[torch.Tensor]:
    return [torch.cat([p.detach().flatten() for p in layer.fam_write_gate.parameters()])
            for layer in trainer.fam.model.layers]


def test_fam_write_gate_reset_zeroes_the_chosen_layers_gates(tmp_path):
    """fam_write_gate_reset: after init_adapter brought trained write gates, the chosen layers' gates
    are zero (z = 1, the paper's update) and the other layers keep the adapter's; "unsupervised"
    keeps the layers of the supervised heads."""
    from safetensors.torch import load_file, save_file

    from transformer_fam.training.trainer import Trainer

    first = Trainer(recipe_from_dict(_values(tmp_path / "a", max_steps=1, fam_write_gate=True)))
    assert first.run() == 0
    adapter = tmp_path / "a" / "run" / "final" / "adapter"
    prompt = load_file(adapter / "fam_prompt.safetensors")
    g = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(v.shape, generator=g) if "fam_write_gate" in k else v for k, v in prompt.items()},
              adapter / "fam_prompt.safetensors")  # gates far from zero in every layer

    def started(name, **kw):
        return Trainer(recipe_from_dict(_values(tmp_path / name, init_adapter=str(adapter), fam_write_gate=True, **kw)))

    kept = _gates(started("keep"))
    assert all(g.abs().min() > 0 for g in kept)
    one = _gates(started("one", fam_write_gate_reset="1"))
    assert torch.equal(one[0], kept[0]) and not one[1].any()
    assert not any(g.any() for g in _gates(started("all", fam_write_gate_reset="all")))
    trainer = started("unsup", fam_write_gate_reset="unsupervised")
    supervised = {layer for layer, _ in trainer.supervision.heads}
    assert len(supervised) == 1  # one layer kept, one reset
    for i, gate in enumerate(_gates(trainer)):
        assert torch.equal(gate, kept[i]) if i in supervised else not gate.any()
    with pytest.raises(ValueError, match="fam_write_gate_reset=5: layer 5 does not exist"):
        started("five", fam_write_gate_reset="5")


@pytest.mark.parametrize("changes, message", [
    ({"fam_write_gate_reset": "all"}, "fam_write_gate_reset=all: resets option O4's write gates; needs fam_write_gate=true"),
    ({"fam_write_gate_reset": "all", "fam_write_gate": True}, "fam_write_gate_reset=all: resets the gates an init_adapter brings"),
    ({"fam_write_gate_reset": "top", "fam_write_gate": True, "init_adapter": "x"},
     "fam_write_gate_reset=top: expected all, unsupervised or layer indices"),
    ({"fam_write_gate_reset": "-1", "fam_write_gate": True, "init_adapter": "x"}, "must be >= 0"),
    ({"fam_write_gate_reset": "unsupervised", "fam_write_gate": True, "init_adapter": "x", "read_weight": 0.0,
      "write_weight": 0.0, "probe_weight": 0.0}, "keeps the layers of the supervised heads"),
])
def test_fam_write_gate_reset_recipe_key_is_checked(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict({**_values(tmp_path), **changes})
