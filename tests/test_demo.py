"""`fam demo`: its pieces (fast) and the whole quick run for two seeds (slow, ~2 minutes each)."""

import json
import random
import math
from dataclasses import replace

import pytest
import torch

from transformer_fam.experiments import passkey_demo as demo
from transformer_fam.experiments import passkey_recipes as recipes
from transformer_fam.cli import build_parser, main
from transformer_fam.data.passkey import passkey_batch, passkey_spans, passkey_tokenizer
from transformer_fam.errors import UserError


@pytest.fixture(scope="module")
def tok():
    return passkey_tokenizer()


def test_models_are_the_same_size_and_the_papers_setup():
    fam, bswa = demo.make_model(recipes.FULL, "fam", 64), demo.make_model(recipes.FULL, "bswa", 64)
    assert (fam.config.attention_mode, fam.config.mem_segments) == ("fam", 0)
    assert (bswa.config.attention_mode, bswa.config.mem_segments) == ("bswa", 1)
    # issue 14's unaligned recipe (the default) gives FAM the same memory block as BSWA
    assert demo.make_model(recipes.UNALIGNED, "fam", 64).config.mem_segments == 1
    assert recipes.ALIGNED is recipes.FULL and recipes.RECIPES["aligned"] is recipes.FULL
    # the centered recipe is the unaligned one with option O3, on the FAM model only
    centered = recipes.RECIPES["centered"]
    assert centered == replace(recipes.UNALIGNED, fam_center=True) and not recipes.UNALIGNED.fam_center
    assert demo.make_model(centered, "fam", 64).config.fam_center
    assert not demo.make_model(centered, "bswa", 64).config.fam_center
    # the gated recipe is the centered one with option O4, on the FAM model only, evaluated to 64x
    gated = recipes.RECIPES["gated"]
    assert replace(gated, eval_lengths=centered.eval_lengths) == replace(centered, fam_write_gate=True, long_steps=600,
                                                                        long_lr_final=0.0)
    assert max(gated.eval_lengths) == 64 * gated.long_max_filler
    assert demo.make_model(gated, "fam", 64).model.layers[0].fam_write_gate is not None
    assert demo.make_model(gated, "bswa", 64).model.layers[0].fam_write_gate is None
    assert recipes.final_multiple(recipes.FULL) == recipes.FULL.filler_multiple and recipes.FULL.drift_weight == 0
    n_fam, n_bswa = (sum(p.numel() for p in m.parameters()) for m in (fam, bswa))
    assert n_fam - n_bswa == fam.config.fam_length * fam.config.hidden_size  # only the learned initial FAM
    # the longest training filler puts the key >= 8 blocks (FAM updates) before the question
    L = recipes.FULL.block_size
    ids, (a0, _) = __import__("transformer_fam.data.passkey", fromlist=["x"]).make_passkey_example(
        recipes.FULL.train_max_filler, 12345, 0.0, passkey_tokenizer())
    key_block, question_block = 32 // L, (a0 - 9) // L
    assert question_block - key_block >= 8
    assert max(recipes.FULL.eval_lengths) >= 64 * recipes.FULL.train_max_filler


def test_set_overrides_and_drift_loss(tok):
    r = recipes.apply_overrides(recipes.UNALIGNED, ["lr=0.002", "eval_lengths=0,100", "depth=null", "final_multiple=4"])
    assert (r.lr, r.eval_lengths, r.depth, r.final_multiple) == (0.002, [0, 100], None, 4)
    assert recipes.apply_overrides(recipes.FULL, ["lr=1"]).lr == 1.0 and isinstance(recipes.apply_overrides(
        recipes.FULL, ["lr=1"]).lr, float)
    for bad in (["nope=1"], ["lr"], ["lr=abc"]):
        with pytest.raises(UserError, match="--set"):
            recipes.apply_overrides(recipes.FULL, bad)
    torch.manual_seed(0)
    model = demo.make_model(recipes.UNALIGNED, "fam", 64)
    probe = demo.KeyProbe(model.config, drift_slots=16)
    ids, labels, _, span = passkey_batch(2, 100, tok, random.Random(0))
    key_end = passkey_spans(100, 0.0, tok)["key_sentence_end"]
    ep = demo.episode_forward(model, probe, ids, labels, span, key_end=key_end)
    out, drift = ep.out, ep.drift
    ref = model(ids, labels=labels)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    assert 0 < drift.item() < 1
    ep2 = demo.episode_forward(model, probe, ids, labels, span, grad_tokens=32, key_end=key_end)
    out2, drift2 = ep2.out, ep2.drift
    assert out2.logits.shape[1] < ids.shape[1] and abs(drift2.item() - drift.item()) < 1e-4


def test_cli_recipe_and_set_flags(tmp_path, capsys):
    args = build_parser().parse_args(["demo", "--recipe", "unaligned", "--set", "lr=0.002", "--set", "steps=3"])
    assert args.recipe == "unaligned" and args.set == ["lr=0.002", "steps=3"]
    assert build_parser().parse_args(["demo"]).recipe == "unaligned"  # issue 14: any filler length by default
    assert main(["demo", "--set", "nope=1", "--out", str(tmp_path / "d")]) == 2
    assert "--set nope=1" in capsys.readouterr().err


def test_long_phase_carries_each_rows_fam_into_the_next_step(tok, monkeypatch):
    """long_carry=1: every long-phase step after the first starts from a FamCache built from the FAM
    each row ended the previous step with (rows cycled when the batch sizes differ)."""
    recipe = replace(recipes.QUICK, long_steps=3, long_seconds=60, long_carry=1.0, batch_size=2, long_batch_size=1,
                     hidden_size=32, heads=2, train_max_filler=32, long_max_filler=64, long_grad_tokens=16)
    torch.manual_seed(0)
    model = demo.make_model(recipe, "fam", 64)
    starts, ends = [], []
    real_step = demo._train_step

    def spy(model, probe, opt, recipe, ids, labels, span, cache=None, *rest):
        starts.append(None if cache is None else ([f.clone() for f in cache.carried_fam], ids.shape[0]))
        loss, acc, out_cache = real_step(model, probe, opt, recipe, ids, labels, span, cache, *rest)
        ends.append([f.detach().clone() for f in out_cache.fam_state()])
        return loss, acc, out_cache

    monkeypatch.setattr(demo, "_train_step", spy)
    log = []
    demo.train_long(model, tok, recipe, 0, "l", log, demo.KeyProbe(model.config))
    assert starts[0] is None and len(starts) == 3 and log[0]["phase"] == "long"
    for start, previous in zip(starts[1:], ends[:-1]):
        fams, batch = start
        rows = torch.arange(batch) % previous[0].shape[0]
        assert all(torch.equal(a, b[rows]) for a, b in zip(fams, previous))


def test_centred_drift_ignores_a_shift_all_slots_share():
    model = demo.make_model(recipes.CENTERED, "fam", 64)
    before = [torch.randn(2, 16, model.config.hidden_size) for _ in range(2)]
    shared = [f + 3 * torch.randn(2, 1, f.shape[-1]) for f in before]  # every slot moved by one vector
    centred = demo.KeyProbe(model.config, drift_slots=16, drift_centered=True)
    raw = demo.KeyProbe(model.config, drift_slots=16)
    assert centred.drift(before, shared).item() < 1e-5 < raw.drift(before, shared).item()
    own = [f + torch.randn_like(f) for f in before]  # each slot moved its own way: both see it
    assert centred.drift(before, own).item() > 0.1


def test_key_probe_keeps_the_models_loss_and_gives_gradients(tok):
    torch.manual_seed(0)
    model = demo.make_model(recipes.FULL, "fam", 64)
    probe = demo.KeyProbe(model.config)
    ids, labels, keys, span = passkey_batch(3, 37, tok, random.Random(0))
    out, probe_loss = probe.forward_with_probe(model, ids, labels, span)
    ref = model(ids, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    assert 1.5 < probe_loss.item() < 3.5  # ~ln(10) for an untrained probe
    probe_loss.backward()
    assert model.fam_prompt.grad is not None and model.fam_prompt.grad.abs().sum() > 0
    digits = (ids[:, span[0]:span[1]] - 4).tolist()
    assert ["".join(map(str, d)) for d in digits] == [str(k) for k in keys]


def test_curriculum_lengthens_the_filler_when_the_accuracy_passes_the_bar(tok):
    # promote_acc=-1: every step passes the bar, so the filler grows by filler_step until the cap
    recipe = replace(recipes.QUICK, steps=4, seconds=60, batch_size=2, hidden_size=32, heads=2, train_max_filler=32,
                     filler_step=16, promote_acc=-1.0)
    torch.manual_seed(0)
    model = demo.make_model(recipe, "fam", 64)
    log = []
    reached, probe = demo.train_curriculum(model, tok, recipe, 0, "t", log)
    assert reached == 32 and probe is not None and log[0]["max_filler"] == 0
    recipe = replace(recipe, promote_acc=2.0)  # never passes: stays at the start
    assert demo.train_curriculum(model, tok, recipe, 0, "t", [])[0] == recipe.start_filler


def test_carried_steps_start_from_the_previous_steps_fam(tok, monkeypatch):
    """Rule T2 as the demo uses it: with carry_reset=0 each step after the first starts from a cache
    built from the FAM the previous step ended with (FamCache.from_fam_state)."""
    recipe = replace(recipes.QUICK, carry_steps=3, carry_seconds=60, carry_reset=0.0, batch_size=2, hidden_size=32,
                     heads=2, train_max_filler=32)
    torch.manual_seed(0)
    model = demo.make_model(recipe, "fam", 64)
    starts, ends = [], []
    real_step = demo._train_step

    def spy(*args):
        start = args[-1]
        starts.append(None if start is None else [f.clone() for f in start.carried_fam])
        loss, acc, cache = real_step(*args)
        ends.append([f.detach().clone() for f in cache.fam_state()])
        return loss, acc, cache

    monkeypatch.setattr(demo, "_train_step", spy)
    log = []
    demo.train_carried(model, tok, recipe, 0, "c", log, None)
    assert starts[0] is None and len(starts) == 3 and log[-1]["phase"] == "carried"
    for start, previous in zip(starts[1:], ends[:-1]):
        assert start is not None and all(torch.equal(a, b) for a, b in zip(start, previous))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])  # issue 14: the thresholds must hold for more than one seed
def test_quick_demo_end_to_end(tmp_path, seed):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--seed", str(seed)]) == 0
    result = json.loads((out / "passkey.json").read_text())
    n = result["train_max_filler"]
    assert n == recipes.QUICK.train_max_filler
    fam, bswa = result["fam"], result["bswa"]
    assert set(fam) == set(bswa) == {str(x) for x in recipes.QUICK.eval_lengths}
    assert all(0.0 <= v <= 1.0 for v in list(fam.values()) + list(bswa.values()))
    # FAM has learnt the task up to its training length ...
    assert fam[str(n)] >= 0.6 and fam["0"] >= 0.6
    # ... BSWA cannot see the key once it has left its window (here: always, 16-32 tokens) ...
    beyond = [bswa[k] for k in bswa if int(k) >= n]
    assert max(beyond) <= 0.1
    # ... so FAM is clearly above BSWA at the training length
    assert fam[str(n)] - bswa[str(n)] >= 0.5
    assert (out / "passkey.png").stat().st_size > 5000
    # the saved folders load back (tokenizer included) and `fam eval passkey` measures the same model
    assert main(["eval", "passkey", "--model", str(out / "fam"), "--lengths", "0", "--samples", "20",
                 "--seed", "1000", "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "passkey.json").read_text())
    # the same 20 prompts through a streamed path: equal up to one borderline prompt, whose argmax
    # can flip with the float rounding of the two paths (seen on an AVX2-only EPYC, seed 1: 1.0 vs 0.95)
    assert abs(again["accuracy"]["0"] - fam["0"]) <= 1 / 20 + 1e-9


def test_recipe_fam_max_rms_reaches_the_fam_config_and_bounds_a_stream():
    # the option (not the paper's form): the recipe's cap is the FAM model's config, BSWA has none
    assert recipes.FULL.fam_max_rms is None and demo.make_model(recipes.FULL, "fam", 64).config.fam_max_rms is None
    small = replace(recipes.QUICK, hidden_size=32, heads=2)

    def max_rms(model):  # largest FAM RMS after streaming 4 x 8 blocks through the FamCache
        cache, gen = None, torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _ in range(4):
                cache = model(torch.randint(4, 64, (2, 8 * small.block_size), generator=gen), past_key_values=cache,
                              use_cache=True).past_key_values
        return max(f.pow(2).mean(-1).sqrt().max().item() for f in cache.fam_state())

    torch.manual_seed(0)
    paper = demo.make_model(small, "fam", 64).eval()
    cap = max_rms(paper) / 2
    capped = demo.make_model(replace(small, fam_max_rms=cap), "fam", 64).eval()
    assert capped.config.fam_max_rms == cap
    assert demo.make_model(replace(small, fam_max_rms=cap), "bswa", 64).config.fam_max_rms is None
    capped.load_state_dict(paper.state_dict())
    assert 0.9 * cap < max_rms(capped) <= cap * (1 + 1e-5)  # the cap bites and holds


def test_cli_fam_max_rms_flag(tmp_path, capsys):
    args = build_parser().parse_args(["demo", "--fam-max-rms", "640", "--fam-only"])
    assert args.fam_max_rms == 640.0 and args.fam_only
    assert main(["demo", "--fam-max-rms", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--fam-max-rms" in capsys.readouterr().err


def test_summarize_seeds_takes_the_minimum_and_the_median():
    runs = {s: {"train_max_filler": 64, "train_max_backprop_filler": 32,
                "fam": {"16": a, "100": b}, "bswa": {"16": 1.0, "100": c}}
            for s, (a, b, c) in enumerate([(1.0, 0.9, 0.1), (0.96, 0.5, 0.0), (1.0, 0.8, 0.2)])}
    summary = demo.summarize_seeds(runs, ("fam", "bswa"))
    assert summary["fam"] == {"16": 0.96, "100": 0.5} and summary["fam_median"] == {"16": 1.0, "100": 0.8}
    assert summary["bswa"]["100"] == 0.0 and summary["fam_per_seed"]["100"] == [0.9, 0.5, 0.8]
    assert summary["seeds"] == [0, 1, 2] and summary["train_max_filler"] == 64


def test_plot_names_the_options(tmp_path, monkeypatch):
    assert demo.model_names(recipes.UNALIGNED)["fam"] == "FAM (m=1)"
    assert demo.model_names(recipes.CENTERED)["fam"] == "FAM (m=1, fam_center)"
    seen = {}
    monkeypatch.setattr(demo, "plot_accuracy", lambda columns, path, *a: seen.update(columns=columns, path=path))
    summary = {"seeds": [0, 1], "train_max_filler": 64, "train_max_backprop_filler": 32,
               "fam": {"16": 0.5}, "fam_median": {"16": 0.75}}
    demo.plot_seeds(recipes.CENTERED, summary, tmp_path / "p.png")
    assert seen["columns"] == {"FAM (m=1, fam_center), min of 2 seeds": {"16": 0.5},
                               "FAM (m=1, fam_center), median": {"16": 0.75}}


@pytest.mark.parametrize("mem", [0, 1])
def test_read_supervision_uses_the_models_own_attention(tok, mem):
    """head_window rebuilds one head's masked attention over [memory | FAM | block] from the
    recorded call: its softmax times the values must be the head's real output (both backends'
    result, at every query of the answer's block); read_loss is its cross-entropy at FAM slot j."""
    torch.manual_seed(0)
    model = demo.make_model(replace(recipes.UNALIGNED, fam_mem_segments=mem), "fam", 64)
    ids, labels, _, span = passkey_batch(3, 37, tok, random.Random(0))
    L = model.config.block_size
    cut = span[0] // L * L
    for grad in (False, True):  # no grad: the cpu_split backend where present; grad: sdpa
        with torch.set_grad_enabled(grad), demo.ReadRecorder() as rec:
            cache = model(ids[:, :cut], use_cache=True).past_key_values  # several blocks from position 0
            model(ids[:, cut:], past_key_values=cache, use_cache=True)  # the answer's block (decode without grad)
        assert len(rec.calls) == (2 if grad else 1) * model.config.num_hidden_layers
        for call, n in [(rec.calls[1], cut)] + ([(rec.calls[-1], ids.shape[1] - cut)] if grad else []):
            for t in range(n):
                logits, values = demo.head_window(call, t, head=1)
                ref = torch.einsum("bs,bsd->bd", logits.softmax(-1), values.float())
                torch.testing.assert_close(ref, call["out"][:, 1, t].float(), atol=1e-5, rtol=0)
    positions = [span[0] - 1 + j - cut for j in range(5)]
    want = sum(torch.nn.functional.cross_entropy(demo.head_window(call, t)[0], torch.full((3,), mem * L + j))
               for j, t in enumerate(positions) if t >= 0) / sum(t >= 0 for t in positions)
    torch.testing.assert_close(demo.read_loss(call, positions), want)
    # in training, the read loss reaches the weights through the recorded tensors
    model.zero_grad()
    read = demo.episode_forward(model, demo.KeyProbe(model.config), ids, labels, span, read=True).read_loss
    read.backward()
    assert read.item() > 0 and model.model.layers[-1].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_write_supervision_reads_the_fam_updates_of_the_keys_block(tok):
    """UpdateRecorder keeps every FAM update per layer in block order: the keys update b attends are
    [the FAM block b read ; block b's keys], the same tensors as the window attention's record. The
    Marks of a batch point at the key digits (the answer's tokens), and write_loss is the
    cross-entropy of FAM slot j's logits at digit j, reaching the weights and the learned FAM."""
    torch.manual_seed(0)
    recipe = replace(recipes.CENTERED, write_weight=1.0)
    model = demo.make_model(recipe, "fam", 64)
    ids, labels, span, marks = demo._batch(recipe, 3, 37, tok, random.Random(0))
    assert marks.key_end is not None and len(marks.digits) == span[1] - span[0] == 5
    assert torch.equal(ids[:, marks.digits], ids[:, span[0]:span[1]])  # the key sentence's digits
    L, m = model.config.block_size, model.config.mem_segments
    with demo.ReadRecorder() as rec, demo.UpdateRecorder() as upd:
        model(ids, use_cache=True)
    for layer, call in enumerate(rec.calls):
        updates = upd.updates(layer)
        assert len(updates) == ids.shape[1] // L  # one per complete block
        for b, u in enumerate(updates):
            fam_k = call["fam_k"][:, :, b]
            torch.testing.assert_close(u["kv_k"][:, :, :fam_k.shape[2]], fam_k, rtol=0, atol=0)
            torch.testing.assert_close(u["kv_k"][:, :, fam_k.shape[2]:], call["k_seq"][:, :, m * L + b * L: m * L + (b + 1) * L],
                                       rtol=0, atol=0)
    heads = [(0, 0), (1, 2)]
    F_ = model.config.fam_length
    want = sum(torch.nn.functional.cross_entropy(demo.update_logits(upd.updates(layer)[p // L], j, h),
                                                 torch.full((3,), F_ + p % L))
               for layer, h in heads for j, p in enumerate(marks.digits)) / (2 * 5)
    torch.testing.assert_close(demo.write_loss(upd, marks.digits, L, heads), want)
    # the logits are the update's own attention: their softmax times the values is its output
    for u in upd.updates(1):
        out = torch.nn.functional.scaled_dot_product_attention(u["fq"], u["kv_k"], u["kv_v"], enable_gqa=True)
        H, Hk = u["fq"].shape[1], u["kv_k"].shape[1]
        for h in range(H):
            for slot in (0, 3, F_ - 1):
                ref = torch.einsum("bs,bsd->bd", demo.update_logits(u, slot, h).softmax(-1), u["kv_v"][:, h // (H // Hk)])
                torch.testing.assert_close(ref, out[:, h, slot].float(), atol=1e-5, rtol=0)
    assert demo.write_loss(upd, [None] * 5, L, heads).item() == 0  # nothing to supervise
    model.zero_grad()
    ep = demo.episode_forward(model, demo.KeyProbe(model.config), ids, labels, span, key_end=marks.key_end,
                              write_digits=marks.digits)
    # the episode supervises the last head of every layer (head 0 of the last layer is the read's)
    last = [(layer, model.config.num_attention_heads - 1) for layer in range(model.config.num_hidden_layers)]
    torch.testing.assert_close(ep.write_loss, demo.write_loss(upd, marks.digits, L, last), atol=1e-5, rtol=0)
    ep.write_loss.backward()
    assert ep.write_loss.item() > 0
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.model.fam_prompt.grad.abs().sum() > 0
    assert demo.episode_forward(model, None, ids, labels, span).write_loss.item() == 0  # off unless asked for


def test_read_supervision_refuses_the_read_gate_option(tok):
    """With fam_read_gate the FAM is read in a softmax of its own: head_window's joint-softmax
    reconstruction would be wrong, so it says so instead."""
    torch.manual_seed(0)
    model = demo.make_model(recipes.UNALIGNED, "fam", 64)
    model.config.fam_read_gate = True
    gated = type(model)(model.config)
    ids, labels, _, span = passkey_batch(2, 37, tok, random.Random(0))
    with pytest.raises(ValueError, match="read-gate option"):
        demo.episode_forward(gated, demo.KeyProbe(gated.config), ids, labels, span, read=True)


def test_fam_shrink_scales_the_fam_entering_the_backpropagated_tail(tok):
    """fam_scale multiplies every layer's FAM at the start of the gradient part: the first block
    after it reads the same (normalised) FAM, so its logits are unchanged, but the FAM updates that
    follow start from the scaled state, so later blocks differ; a scale of 1 is exactly no shrink.
    Checked against streaming the same prompt by hand and scaling the cache's FAM in between."""
    from transformer_fam.core.streaming import stream

    torch.manual_seed(0)
    model = demo.make_model(replace(recipes.UNALIGNED, hidden_size=32, heads=2), "fam", 64).eval()
    L = model.config.block_size
    ids, labels, _, span = passkey_batch(2, 150, tok, random.Random(0))
    cut = (span[0] // L) * L
    g0 = (cut - 32) // L * L
    with torch.no_grad():
        plain = demo.episode_forward(model, None, ids, labels, span, grad_tokens=32)
        same = demo.episode_forward(model, None, ids, labels, span, grad_tokens=32, fam_scale=1.0)
        shrunk = demo.episode_forward(model, None, ids, labels, span, grad_tokens=32, fam_scale=0.1)
        cache = stream(model, ids[:, :g0], 16 * L).cache
        for st in cache.layers:
            st.fam = st.fam * 0.1
        ref = torch.cat([model(ids[:, g0:cut], past_key_values=cache, use_cache=True).logits,
                         model(ids[:, cut:], past_key_values=cache, use_cache=True).logits], dim=1)
    assert torch.equal(plain.out.logits, same.out.logits)
    torch.testing.assert_close(shrunk.out.logits, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(shrunk.out.logits[:, :L], plain.out.logits[:, :L], atol=1e-4, rtol=0)
    assert (shrunk.out.logits[:, L:] - plain.out.logits[:, L:]).abs().max() > 1e-3
    assert recipes.apply_overrides(recipes.UNALIGNED, ["long_fam_shrink=0.05"]).long_fam_shrink == 0.05
    for bad in ("0", "1.5", "-1"):
        with pytest.raises(UserError, match="long_fam_shrink"):
            recipes.apply_overrides(recipes.UNALIGNED, [f"long_fam_shrink={bad}"])
    with pytest.raises(ValueError, match="long_fam_shrink"):  # the recipe itself, not only --set
        replace(recipes.UNALIGNED, long_fam_shrink=0.0)


def test_long_phase_lr_anneals_on_a_cosine(tok, monkeypatch):
    """long_lr_final: the long phase's lr goes from phase_lr down to phase_lr * long_lr_final on a
    cosine (checked on the optimiser the phase really steps); 1 keeps it constant; outside [0, 1]
    is an error."""
    recipe = replace(recipes.UNALIGNED, hidden_size=32, heads=2, long_steps=5, long_max_filler=48,
                     long_grad_tokens=16, long_batch_size=2, batch_size=2, train_max_filler=16,
                     phase_lr=1e-3, long_lr_final=0.1)
    expected = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4))) for k in range(5)]
    assert expected[0] == pytest.approx(1e-3) and expected[-1] == pytest.approx(1e-4)
    seen = []
    real_step = demo._train_step

    def spy(model, probe, opt, *a, **kw):
        seen.append(opt.param_groups[0]["lr"])
        return real_step(model, probe, opt, *a, **kw)

    monkeypatch.setattr(demo, "_train_step", spy)
    for final, want in ((0.1, expected), (1.0, [1e-3] * 5)):
        seen.clear()
        torch.manual_seed(0)
        demo.train_long(demo.make_model(recipe, "fam", len(tok)), tok, replace(recipe, long_lr_final=final), 0,
                        "long", [])
        assert seen == pytest.approx(want)
    with pytest.raises(UserError, match="long_lr_final"):
        recipes.apply_overrides(recipes.UNALIGNED, ["long_lr_final=1.5"])
