"""Equivalence tests: the fast layer-wise model against independent references (tests/reference.py).

Each test names the rules of docs/algorithm.md it checks: modes M1-M3, the FAM update F1-F6,
positions P1-P4, the schedule X1, the streaming state S1-S2 (S3-S4: test_cache.py; backends:
test_attention.py; T1-T2: test_train.py).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TOL, ids_for, tiny
from reference import reference_bswa_mask, reference_fam, reference_full, reference_masked
from transformer_fam import FamCache


def test_full_equals_plain_causal_transformer():
    """Rule M1: full mode is a plain causal transformer (independent reference)."""
    model = tiny("full")
    ids = ids_for(model, 2, 21)
    logits = model(ids).logits
    for b in range(2):
        torch.testing.assert_close(logits[b], reference_full(model, ids[b]), atol=TOL, rtol=0)


@pytest.mark.parametrize("T", [24, 29])
def test_bswa_with_enough_memory_equals_full(T):
    """Rule M2: with memory covering the whole input, bswa sees what full sees."""
    bswa = tiny("bswa", L=8, m=4)
    full = tiny("full")
    full.load_state_dict(bswa.state_dict())
    ids = ids_for(bswa, 2, T)
    torch.testing.assert_close(bswa(ids).logits, full(ids).logits, atol=TOL, rtol=0)
    small = tiny("bswa", L=8, m=1)
    small.load_state_dict(bswa.state_dict())
    assert (small(ids).logits - full(ids).logits).abs().max() > 1e-3


@pytest.mark.parametrize("L,m,T", [(8, 1, 29), (8, 0, 24), (4, 2, 19), (5, 3, 23), (8, 3, 21)])
def test_bswa_equals_masked_reference(L, m, T):
    """Rule M2: bswa equals an explicitly masked transformer (reference.py)."""
    model = tiny("bswa", L=L, m=m)
    ids = ids_for(model, 1, T)
    expected = reference_masked(model, ids[0], reference_bswa_mask(T, L, m))
    torch.testing.assert_close(model(ids).logits[0], expected, atol=TOL, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits[0], expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("L,m,F,T,heads,kv", [
    (8, 1, 2, 32, 4, 2),   # GQA, whole blocks
    (8, 1, 2, 29, 4, 2),   # partial last block
    (4, 0, 4, 21, 4, 4),   # MHA, no memory, F = L
    (6, 2, 3, 31, 4, 1),   # MQA, two memory blocks
    (5, 3, 1, 17, 2, 2),
    (8, 3, 2, 29, 4, 2),   # nb <= m+1: the inference path's single causal pass + FAM merge
])
def test_fam_equals_algorithm2(L, m, F, T, heads, kv):
    """Rules M3, F1-F6, P2-P3, X1: the layer-wise schedule equals Algorithm 2 run block by block."""
    model = tiny("fam", L=L, m=m, F=F, heads=heads, kv_heads=kv)
    ids = ids_for(model, 2, T)
    logits = model(ids).logits  # differentiable path (masked windows)
    with torch.no_grad():
        fast = model(ids).logits  # inference path (split windows, no mask)
    for b in range(2):
        expected = reference_fam(model, ids[b])
        torch.testing.assert_close(logits[b], expected, atol=TOL, rtol=0)
        torch.testing.assert_close(fast[b], expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("T", [32, 29])
def test_capped_fam_equals_algorithm2_with_the_cap(T):
    """Option O1: fam_max_rms equals Algorithm 2 with the cap applied after each update."""
    # fam_max_rms (an option, not the paper): the cap is set low enough to bite on every update
    def strong(model):  # weights 10x the default init, so the FAM's direction moves every block
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("proj.weight"):
                    p.mul_(10)
        return model

    model = strong(tiny("fam", L=8, m=1, F=2, fam_max_rms=0.3))
    ids = ids_for(model, 2, T)
    logits = model(ids).logits
    with torch.no_grad():
        fast = model(ids).logits
        streamed, cache = _stream(model, ids, [3, 11, 12, 20])  # in-place decode path too
    assert max(float(s.fam.norm(dim=-1).max()) for s in cache.layers) <= 0.3 * 32 ** 0.5 * (1 + 1e-5)
    for b in range(2):
        expected = reference_fam(model, ids[b])
        torch.testing.assert_close(logits[b], expected, atol=TOL, rtol=0)
        torch.testing.assert_close(fast[b], expected, atol=TOL, rtol=0)
    torch.testing.assert_close(streamed, fast, atol=TOL, rtol=0)
    paper = strong(tiny("fam", L=8, m=1, F=2))  # same weights, the paper's update: differs once capped
    assert (paper(ids).logits - logits).abs().max() > 1e-3
    loose = strong(tiny("fam", L=8, m=1, F=2, fam_max_rms=1e6))  # a cap never reached changes nothing
    torch.testing.assert_close(loose(ids).logits, paper(ids).logits, atol=0, rtol=0)


def _paths_equal_reference(model, ids):
    """The training (autograd), inference and streamed paths of a FAM model all equal the reference
    Algorithm 2 on every row of ids; returns the training path's logits."""
    logits = model(ids).logits
    with torch.no_grad():
        fast = model(ids).logits
        streamed, _ = _stream(model, ids, [3, 11, 12, 20])
    for b in range(ids.shape[0]):
        expected = reference_fam(model, ids[b])
        torch.testing.assert_close(logits[b], expected, atol=TOL, rtol=0)
        torch.testing.assert_close(fast[b], expected, atol=TOL, rtol=0)
    torch.testing.assert_close(streamed, fast, atol=TOL, rtol=0)
    return logits


@pytest.mark.parametrize("T", [32, 29])
def test_centred_fam_equals_algorithm2_with_centred_readers(T):
    """Option O3: fam_center equals Algorithm 2 with QKV of (FAM - its slot mean), on the training,
    inference and streamed paths, and differs from the paper's form on the same weights."""
    model = tiny("fam", L=8, m=1, F=3, fam_center=True)
    ids = ids_for(model, 2, T)
    logits = _paths_equal_reference(model, ids)
    paper = tiny("fam", L=8, m=1, F=3)
    paper.load_state_dict(model.state_dict())
    assert (paper(ids).logits - logits).abs().max() > 1e-3


@pytest.mark.parametrize("T", [32, 29])
@pytest.mark.parametrize("extra", [{}, {"fam_read_heads": [[1, 0], [2, 3]]}, {"fam_write_gate": True}])
def test_shifted_read_equals_algorithm2_reading_the_layer_below(T, extra):
    """Option O6: with fam_read_shift, block b >= 1 of layer l >= 1 reads layer l-1's FAM after block
    b-1 through layer l's projections, on the training, inference and streamed paths (with O5's
    readers and O4's write gate too); it differs from the paper's form on the same weights, and
    switching it off at run time gives the paper's form back."""
    model = tiny("fam", L=8, m=1, F=3, layers=3, fam_read_shift=True, **extra)
    ids = ids_for(model, 2, T)
    logits = _paths_equal_reference(model, ids)
    model.config.fam_read_shift = False
    paper = model(ids).logits
    assert (paper - logits).abs().max() > 1e-3
    torch.testing.assert_close(paper[:, :8], logits[:, :8], atol=1e-6, rtol=0)  # block 0 reads the initial FAM


def test_shifted_read_streams_in_any_chunking_and_tokens_one_at_a_time():
    """Option O6 with rule S2: single tokens, ragged pieces and whole blocks give one call's logits,
    and a cache that went through tensors (rule S4) continues the same way."""
    model = tiny("fam", L=4, m=0, F=2, layers=3, fam_read_shift=True)
    ids = ids_for(model, 2, 23)
    whole = model(ids).logits
    with torch.no_grad():
        for cuts in ([1, 2, 3, 5, 9, 13, 17, 18, 19, 21], [4, 8, 12, 16, 20], list(range(1, 23))):
            streamed, _ = _stream(model, ids, cuts)
            torch.testing.assert_close(streamed, whole, atol=TOL, rtol=0)
        first, cache = _stream(model, ids[:, :10], [])
        assert cache.layers[1].fam_rk is not None and cache.layers[0].fam_rk is None
        cache = FamCache.from_state_dict(model.config, cache.state_dict())
        rest = model(ids[:, 10:], past_key_values=cache, use_cache=True).logits
    torch.testing.assert_close(torch.cat((first, rest), 1), whole, atol=TOL, rtol=0)


def test_shifted_read_reads_the_carried_fam_of_the_layer_below():
    """Option O6 with a carried FAM (rules S3, F5): the first block after it reads layer l-1's
    carried FAM, exactly what it reads when the stream runs on from the block that produced it."""
    model = tiny("fam", L=4, m=0, F=2, layers=3, fam_read_shift=True)
    ids = ids_for(model, 1, 12)
    with torch.no_grad():
        out = model(ids[:, :8], use_cache=True)
        whole = model(ids).logits
        carried = FamCache.from_fam_state(model.config, out.past_key_values.fam_state(), position_offset=8)
        cont = model(ids[:, 8:], past_key_values=carried, use_cache=True).logits
    torch.testing.assert_close(cont, whole[:, 8:], atol=TOL, rtol=0)


def test_shifted_read_trains_with_activation_checkpointing():
    """Option O6 passes the layer below's FAM between layers within a call; recomputing the layers
    in the backward pass (activation checkpointing) gives the same gradients."""
    grads = []
    for ckpt in (False, True):
        model = tiny("fam", L=4, m=0, F=2, layers=3, fam_read_shift=True).train()
        if ckpt:
            model.gradient_checkpointing_enable()
        assert model.model.gradient_checkpointing is ckpt  # the layers are recomputed in the backward pass
        ids = ids_for(model, 2, 16)
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4)
    assert grads[0]["model.fam_prompt"].abs().sum() > 0


def test_fam_read_shift_is_checked():
    with pytest.raises(ValueError, match="fam_read_shift"):
        tiny("fam", L=8, m=1, F=3, fam_read_shift=1)


@pytest.mark.parametrize("T", [32, 29])
@pytest.mark.parametrize("extra", [{}, {"fam_read_heads": [[1, 0], [2, 3]]}, {"fam_read_shift": True},
                                   {"fam_write_gate": True}])
def test_skip_initial_read_equals_algorithm2_without_the_initial_read(T, extra):
    """Option O7: with fam_skip_initial_read, block 0's queries do not read the initial FAM, on the
    training, inference and streamed paths (with O5, O6 and O4 too); block 0 then equals BSWA mode on
    the same weights, later blocks still read the FAM (they differ from BSWA), and switching the option
    off at run time gives the paper's form back, which differs from block 0 on."""
    model = tiny("fam", L=8, m=1, F=3, layers=3, fam_skip_initial_read=True, **extra)
    ids = ids_for(model, 2, T)
    logits = _paths_equal_reference(model, ids)
    model.config.attention_mode = "bswa"
    bswa = model(ids).logits
    model.config.attention_mode = "fam"
    torch.testing.assert_close(logits[:, :8], bswa[:, :8], atol=TOL, rtol=0)
    assert (logits[:, 8:] - bswa[:, 8:]).abs().max() > 1e-3
    model.config.fam_skip_initial_read = False
    paper = model(ids).logits
    assert (paper[:, :8] - logits[:, :8]).abs().max() > 1e-3 and (paper[:, 8:] - logits[:, 8:]).abs().max() > 1e-3


def test_skip_initial_read_streams_one_token_at_a_time_and_with_the_read_gate():
    """Option O7 on the decode path (tokens one at a time inside block 0) and in ragged pieces gives one
    call's logits; with the read gate (O2) opened, block 0 is still BSWA's and later blocks are not."""
    model = tiny("fam", L=4, m=1, F=2, layers=3, fam_skip_initial_read=True)
    ids = ids_for(model, 2, 19)
    whole = model(ids).logits
    with torch.no_grad():
        for cuts in (list(range(1, 19)), [1, 2, 3, 6, 7, 13]):
            torch.testing.assert_close(_stream(model, ids, cuts)[0], whole, atol=TOL, rtol=0)
    gated = tiny("fam", L=4, m=1, F=2, layers=3, fam_skip_initial_read=True, fam_read_gate=True)
    with torch.no_grad():
        for layer in gated.model.layers:
            layer.self_attn.fam_gate.fill_(1.0)
        gated.config.attention_mode = "bswa"
        bswa = gated(ids).logits
        gated.config.attention_mode = "fam"
        one = gated(ids).logits
        torch.testing.assert_close(_stream(gated, ids, list(range(1, 19)))[0], one, atol=TOL, rtol=0)
    torch.testing.assert_close(one[:, :4], bswa[:, :4], atol=TOL, rtol=0)
    assert (one[:, 4:] - bswa[:, 4:]).abs().max() > 1e-3


@torch.no_grad()
def test_skip_initial_read_still_reads_a_carried_fam_and_a_reset_reads_none():
    """Option O7 skips the initial FAM only: a stream started from a carried FAM state (rule F5) reads it,
    exactly as the stream that produced it runs on; with the FAM reset at every block (the ablation)
    no block reads a FAM, so the model equals BSWA mode on the same weights."""
    from transformer_fam.evaluation.ablation import FamResetEachBlock

    model = tiny("fam", L=4, m=0, F=2, layers=3, fam_skip_initial_read=True)  # m = 0: the FAM is all that is carried
    ids = ids_for(model, 1, 14)
    out = model(ids[:, :8], use_cache=True)
    whole = model(ids).logits
    carried = FamCache.from_fam_state(model.config, out.past_key_values.fam_state(), position_offset=8)
    cont = model(ids[:, 8:], past_key_values=carried, use_cache=True).logits
    torch.testing.assert_close(cont, whole[:, 8:], atol=TOL, rtol=0)
    reset = FamResetEachBlock(model)(ids).logits
    model.config.attention_mode = "bswa"
    torch.testing.assert_close(reset, model(ids).logits, atol=TOL, rtol=0)
    model.config.attention_mode = "fam"
    assert (reset - whole).abs().max() > 1e-3


def test_skip_initial_read_trains_the_prompt_and_is_checked():
    """Option O7 on the autograd path: the FAM prompt still gets a gradient (block 1 reads F_0, made
    from it); a non-bool value is refused in one line."""
    model = tiny("fam", L=4, m=1, F=2, layers=2, fam_skip_initial_read=True).train()
    ids = ids_for(model, 2, 12)
    model(ids, labels=ids).loss.backward()
    assert model.model.fam_prompt.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fam_skip_initial_read"):
        tiny("fam", L=8, m=1, F=3, fam_skip_initial_read="yes")


@torch.no_grad()
def test_centred_fam_ignores_what_all_slots_share():
    """Option O3: adding one vector to every FAM slot of a carried state leaves the next block's
    output unchanged (the paper's form changes)."""
    for center, same in ((True, True), (False, False)):
        model = tiny("fam", L=8, m=1, F=3, fam_center=center)
        ids = ids_for(model, 1, 24)
        cache = model(ids[:, :16], use_cache=True).past_key_values
        state = cache.fam_state()
        shift = torch.randn(1, 1, state[0].shape[-1]) * 5
        plain = model(ids[:, 16:], past_key_values=FamCache.from_fam_state(model.config, state)).logits
        moved = model(ids[:, 16:], past_key_values=FamCache.from_fam_state(
            model.config, [f + shift for f in state])).logits
        assert torch.allclose(plain, moved, atol=1e-4) is same


def _gated(model, seed=0):
    """Random nonzero write gates (option O4) on every layer of model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.fam_write_gate.weight.copy_(torch.randn(layer.fam_write_gate.weight.shape, generator=g))
            layer.fam_write_gate.bias.copy_(torch.randn(1, generator=g))
    return model


@pytest.mark.parametrize("T", [32, 29])
def test_write_gate_equals_algorithm2_with_gated_increments(T):
    """Option O4: with nonzero gates, the training, inference and streamed paths equal Algorithm 2
    whose every non-first FAM increment is scaled by 2 sigmoid(w . u/rms(u) + c); with the gates at
    their initial zeros the model is the paper's form exactly."""
    model = _gated(tiny("fam", L=8, m=1, F=3, fam_write_gate=True))
    ids = ids_for(model, 2, T)
    logits = _paths_equal_reference(model, ids)
    paper = tiny("fam", L=8, m=1, F=3)
    paper.load_state_dict(model.state_dict(), strict=False)
    assert (paper(ids).logits - logits).abs().max() > 1e-3
    fresh = tiny("fam", L=8, m=1, F=3, fam_write_gate=True)
    assert all((lay.fam_write_gate.weight == 0).all() and (lay.fam_write_gate.bias == 0).all()
               for lay in fresh.model.layers)
    paper.load_state_dict(fresh.state_dict(), strict=False)
    torch.testing.assert_close(fresh(ids).logits, paper(ids).logits, atol=1e-6, rtol=0)


@torch.no_grad()
def test_closed_write_gate_holds_the_fam_over_later_blocks():
    """Option O4: a gate near 0 leaves the FAM as the first block wrote it (the paper's form keeps
    moving it), and the gate's output is 2 sigmoid(.) of the normalised increment."""
    for bias, holds in ((-40.0, True), (0.0, False)):
        model = tiny("fam", L=8, m=0, F=3, fam_write_gate=True)
        for layer in model.model.layers:
            layer.fam_write_gate.bias.fill_(bias)
        ids = ids_for(model, 1, 48)
        first = model(ids[:, :8], use_cache=True).past_key_values.fam_state()
        later = model(ids, use_cache=True).past_key_values.fam_state()
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(first, later)) is holds
    gate = model.model.layers[0].fam_write_gate
    gate.weight.fill_(0.5)
    u = torch.randn(2, 3, gate.weight.shape[1]) * 7
    expected = 2 * torch.sigmoid(0.5 * (u / u.pow(2).mean(-1, keepdim=True).sqrt()).sum(-1, keepdim=True))
    torch.testing.assert_close(gate(u), u * expected)


def test_write_gate_trains():
    """Option O4: the gates get a nonzero gradient from the LM loss at their zero initialisation;
    other modes and the paper's form have no gate; a non-boolean switch is one clear error."""
    model = tiny("fam", L=8, m=1, F=3, fam_write_gate=True)
    ids = ids_for(model, 2, 32)
    model(ids, labels=ids).loss.backward()
    for layer in model.model.layers:
        assert layer.fam_write_gate.weight.grad.abs().sum() > 0 and layer.fam_write_gate.bias.grad.abs() > 0
    assert tiny("bswa", L=8, m=1, fam_write_gate=True).model.layers[0].fam_write_gate is None
    assert tiny("fam", L=8, m=1, F=3).model.layers[0].fam_write_gate is None
    with pytest.raises(ValueError, match="fam_write_gate"):
        tiny("fam", L=8, m=1, F=3, fam_write_gate=1)


@pytest.mark.parametrize("T", [32, 29])
def test_read_heads_equal_algorithm2_with_only_those_heads_reading(T):
    """Option O5: with fam_read_heads, the training, inference and streamed paths equal Algorithm 2
    in which only the listed heads see the FAM columns; a layer without readers is its BSWA form;
    listing every head is the paper's form exactly."""
    model = tiny("fam", L=8, m=1, F=3, fam_read_heads=[[1, 0], [1, 3]])
    ids = ids_for(model, 2, T)
    logits = _paths_equal_reference(model, ids)
    paper = tiny("fam", L=8, m=1, F=3)
    assert (paper(ids).logits - logits).abs().max() > 1e-3
    bswa = tiny("bswa", L=8, m=1)
    bswa.load_state_dict(model.state_dict(), strict=False)
    layer0 = model(ids, output_hidden_states=True).hidden_states[1]  # layer 0 has no reader
    torch.testing.assert_close(layer0, bswa(ids, output_hidden_states=True).hidden_states[1], atol=1e-6, rtol=0)
    assert (model(ids).logits - bswa(ids).logits).abs().max() > 1e-3
    model.config.fam_read_heads = [[lay, h] for lay in range(2) for h in range(4)]  # read at run time
    torch.testing.assert_close(model(ids).logits, paper(ids).logits, atol=1e-6, rtol=0)


def test_read_heads_with_the_read_gate_close_the_other_heads_gates():
    """Options O5 + O2: heads outside fam_read_heads keep gate 0 whatever g holds, so the model
    equals O2 alone with those heads' g set to 0."""
    g = torch.Generator().manual_seed(3)
    both = tiny("fam", L=8, m=1, F=3, fam_read_gate=True, fam_read_heads=[[0, 2], [1, 1]])
    with torch.no_grad():
        for layer in both.model.layers:
            layer.self_attn.fam_gate.copy_(torch.randn(4, generator=g))
    gate_only = tiny("fam", L=8, m=1, F=3, fam_read_gate=True)
    gate_only.load_state_dict(both.state_dict())
    with torch.no_grad():
        for i, layer in enumerate(gate_only.model.layers):
            keep = torch.zeros(4)
            keep[2 if i == 0 else 1] = 1
            layer.self_attn.fam_gate.mul_(keep)
    ids = ids_for(both, 2, 29)
    torch.testing.assert_close(both(ids).logits, gate_only(ids).logits, atol=TOL, rtol=0)
    with torch.no_grad():
        streamed, _ = _stream(both, ids, [3, 11, 12, 20])
    torch.testing.assert_close(streamed, gate_only(ids).logits, atol=TOL, rtol=0)


@pytest.mark.parametrize("heads,why", [
    ([], "non-empty"), ([[0, 4]], "outside"), ([[2, 0]], "outside"), ([[0]], "pair"), ([[0, 1.0]], "pair"),
    ("0.1", "non-empty list"), ([[True, 1]], "pair")])
def test_read_heads_are_checked(heads, why):
    with pytest.raises(ValueError, match=f"fam_read_heads.*{why}"):
        tiny("fam", L=8, m=1, F=3, fam_read_heads=heads)


def test_fam_center_needs_two_slots():
    with pytest.raises(ValueError, match="fam_center"):
        tiny("fam", L=8, m=1, F=1, fam_center=True)


def test_fam_differs_from_bswa_and_uses_the_prompt():
    """Rules M3, F4: the FAM columns change the output, and the learned prompt reaches it."""
    fam = tiny("fam", L=8, m=1, F=2)
    bswa = tiny("bswa", L=8, m=1)
    bswa.load_state_dict(fam.state_dict(), strict=False)
    ids = ids_for(fam, 1, 24)
    assert (fam(ids).logits - bswa(ids).logits).abs().max() > 1e-3
    before = fam(ids).logits
    with torch.no_grad():
        fam.fam_prompt.add_(1.0)
    assert (fam(ids).logits - before).abs().max() > 1e-3


def _stream(model, ids, cuts):
    cache, outs = None, []
    bounds = [0, *cuts, ids.shape[1]]
    for a, b in zip(bounds, bounds[1:]):
        out = model(ids[:, a:b], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        outs.append(out.logits)
    return torch.cat(outs, dim=1), cache


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["full", "bswa", "fam"]), T=st.integers(1, 40), data=st.data(),
       L=st.integers(2, 7), m=st.integers(0, 2))
def test_any_chunking_equals_one_call(mode, T, data, L, m):
    """Rules S2, F6: any chunking of a stream gives the logits of one call."""
    model = tiny(mode, L=L, m=m, F=min(2, L))
    ids = ids_for(model, 2, T)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, T - 1)), max_size=6)))) if T > 1 else []
    whole = model(ids).logits
    streamed, cache = _stream(model, ids, cuts)
    torch.testing.assert_close(streamed, whole, atol=TOL, rtol=0)
    with torch.no_grad():  # the inference attention path, in the same chunking
        fast, _ = _stream(model, ids, cuts)
    torch.testing.assert_close(fast, whole, atol=TOL, rtol=0)
    assert cache.get_seq_length() == T


@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_one_token_at_a_time_equals_one_call(mode):
    """Rules S2, F6: decoding token by token (in place, without autograd) equals one call."""
    model = tiny(mode, L=4, m=1, F=2)
    ids = ids_for(model, 1, 19)
    streamed, _ = _stream(model, ids, list(range(1, 19)))
    torch.testing.assert_close(streamed, model(ids).logits, atol=TOL, rtol=0)
    with torch.no_grad():  # decoding writes into the preallocated window in place
        decoded, cache = _stream(model, ids, list(range(1, 19)))
    torch.testing.assert_close(decoded, model(ids).logits, atol=TOL, rtol=0)
    assert not cache.layers[0].k.requires_grad


def _grad_to_first_block(mode):
    model = tiny(mode, L=4, m=0, F=2).train()
    ids = ids_for(model, 1, 20)
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits
    logits[:, 12:].sum().backward()  # loss on blocks >= 3 only
    return emb.grad[:, :4].abs().max().item()


def test_fam_carries_gradient_through_the_feedback_loop():
    """Rules F3, M3: the loss reaches the first block only through the FAM's feedback."""
    assert _grad_to_first_block("fam") > 1e-6


def test_bswa_without_memory_does_not_reach_back():
    """Rule M2: bswa with m=0 has no path to earlier blocks."""
    assert _grad_to_first_block("bswa") == 0.0


@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_cache_size_is_constant(mode):
    """Rule S1: the streaming state has a constant size in bswa / fam mode."""
    model = tiny(mode, L=4, m=2, F=2)
    cache = None
    sizes = {}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in range(100):
            out = model(torch.randint(0, 61, (1, 4), generator=g), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            sizes[block + 1] = cache.num_elements()
    assert sizes[2] == sizes[100] > 0
    assert isinstance(cache, FamCache) and cache.get_seq_length() == 400


def test_full_cache_grows():
    """Rule S1: full mode's state is a growing KV cache."""
    model = tiny("full")
    small = model(ids_for(model, 1, 8), use_cache=True).past_key_values.num_elements()
    large = model(ids_for(model, 1, 16), use_cache=True).past_key_values.num_elements()
    assert large == 2 * small


def test_loss_is_shifted_cross_entropy():
    model = tiny("fam")
    ids = ids_for(model, 2, 20)
    labels = ids.clone()
    labels[:, :5] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 61), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_logits_to_keep():
    model = tiny("fam")
    ids = ids_for(model, 1, 20)
    torch.testing.assert_close(model(ids, logits_to_keep=3).logits, model(ids).logits[:, -3:])


def test_position_is_exact_far_into_a_stream():
    """Rules P1, P4, T1: logits do not depend on how far into a stream a block sits."""
    model = tiny("fam", L=8, m=1, F=2)
    ids = ids_for(model, 1, 24)
    near = model(ids, past_key_values=FamCache(model.config, position_offset=0)).logits
    far = model(ids, past_key_values=FamCache(model.config, position_offset=10_000_000)).logits
    torch.testing.assert_close(far, near, atol=TOL, rtol=0)


def test_gradient_checkpointing_gives_same_gradients():
    """Rule X1: activation checkpointing changes no gradient."""
    model = tiny("fam", L=4, m=1, F=2).train()
    ids = ids_for(model, 2, 18)
    model(ids, labels=ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, labels=ids).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_attention_mask_grows_linearly_not_quadratically(mode):
    """Rule X1: the training path builds per-block windows, not a T x T mask."""
    # the only mask is per block: (blocks, 1, block rows, m*L + F + L) — no T x T matrix
    from transformer_fam.core.plan import BlockPlan

    L, m, F = 16, 2, 4 if mode == "fam" else 0
    sizes = [BlockPlan.make(L, m, F, 0, T, 0, torch.device("cpu")).mask.numel() for T in (10 * L, 20 * L, 40 * L)]
    assert sizes[1] == 2 * sizes[0] and sizes[2] == 2 * sizes[1]
    assert sizes[2] == 40 * L * ((m + 1) * L + F)


@pytest.mark.parametrize("mode", ["full", "bswa", "fam"])
def test_forward_layers_teacher_forced_by_its_own_hidden_states_equals_forward(mode):
    """FamModel.forward_layers (attention transfer's building block): fed the model's own hidden
    states, each layer's output is the next hidden state; fed a shifted input, only that layer's
    output changes (each layer runs on its own input, not on its predecessor's output)."""
    model = tiny(mode, L=8, m=1, F=2, layers=3)
    ids = ids_for(model, 2, 29)
    with torch.no_grad():
        _, _, hidden = model.model(ids, output_hidden_states=True)
        outs = model.model.forward_layers(hidden)
        for got, want in zip(outs, hidden[1:]):
            torch.testing.assert_close(got, want, atol=TOL, rtol=0)
        moved = list(hidden[:-1])
        moved[1] = moved[1] + 0.5
        outs2 = model.model.forward_layers(moved)
    assert not torch.allclose(outs2[1], outs[1], atol=1e-3)
    torch.testing.assert_close(outs2[0], outs[0], atol=TOL, rtol=0)
    torch.testing.assert_close(outs2[2], outs[2], atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="forward_layers: 2 inputs for 3 layers"):
        model.model.forward_layers(hidden[:2])
