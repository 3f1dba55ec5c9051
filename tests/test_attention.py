"""The windowed attention's two backends (docs/algorithm.md, rule X1 and "Attention backends"):
which one runs is chosen explicitly and testably, and both give the same logits."""

import pytest
import torch

from helpers import TOL, ids_for, tiny
from transformer_fam.core import attention
from transformer_fam.core.attention import backend_calls, choose_backend
from transformer_fam.core.plan import BlockPlan


def _plan(cached=0, new=16):
    return BlockPlan.make(8, 1, 2, cached, new, 0, "cpu")


def test_choose_backend_rules(monkeypatch):
    assert choose_backend("auto", torch.device("cpu"), False, _plan()) == "cpu_split"
    assert choose_backend("cpu_split", torch.device("cpu"), False, _plan()) == "cpu_split"
    assert choose_backend("auto", torch.device("cpu"), True, _plan()) == "sdpa"  # autograd: reference
    assert choose_backend("cpu_split", torch.device("cpu"), True, _plan()) == "sdpa"  # falls back
    assert choose_backend("sdpa", torch.device("cpu"), False, _plan()) == "sdpa"
    assert choose_backend("auto", torch.device("meta"), False, _plan()) == "sdpa"  # not a CPU
    assert choose_backend("auto", torch.device("cpu"), False, _plan(cached=3, new=2)) == "sdpa"  # mid-block
    monkeypatch.setattr(attention, "_flash_cpu", None)  # a torch without the private kernel
    assert choose_backend("auto", torch.device("cpu"), False, _plan()) == "sdpa"
    with pytest.raises(ValueError, match="attention backend 'flash'"):
        choose_backend("flash", torch.device("cpu"), False, _plan())


def _calls(model, ids, chunks, backend):
    model.config.attention_backend = backend
    backend_calls.clear()
    outs, cache, a = [], None, 0
    with torch.no_grad():
        for n in chunks:
            out = model(ids[:, a: a + n], past_key_values=cache, use_cache=True)
            outs.append(out.logits)
            cache, a = out.past_key_values, a + n
    return torch.cat(outs, dim=1), dict(backend_calls)


@pytest.mark.parametrize("mode", ["bswa", "fam"])
@pytest.mark.parametrize("chunks", [[37], [16, 21], [5, 11, 21]])
def test_backends_give_the_same_logits_and_the_chosen_one_runs(mode, chunks):
    model = tiny(mode, L=8, m=2, F=2)
    ids = ids_for(model, 2, 37)
    ref, ref_calls = _calls(model, ids, chunks, "sdpa")
    fast, fast_calls = _calls(model, ids, chunks, "auto")
    torch.testing.assert_close(fast, ref, atol=TOL, rtol=0)
    assert "cpu_split" not in ref_calls and ref_calls.get("sdpa", 0) > 0
    # without autograd on a CPU: calls inside one block write into the window ("decode"), every
    # other call takes the split path; the reference never runs
    starts = [sum(chunks[:i]) for i in range(len(chunks))]
    inside = sum(1 for s, n in zip(starts, chunks) if (s % 8) + n <= 8)
    layers = model.config.num_hidden_layers
    assert fast_calls == {k: v for k, v in {"cpu_split": (len(chunks) - inside) * layers,
                                             "decode": inside * layers}.items() if v}


def test_training_uses_the_reference_backend():
    model = tiny("fam", L=8, m=1, F=2).train()
    backend_calls.clear()
    model(ids_for(model, 1, 24), labels=ids_for(model, 1, 24)).loss.backward()
    assert set(backend_calls) == {"sdpa"}


def test_the_read_gate_option_gives_the_same_logits_on_both_backends():
    """Option O2 on both backends: the token part runs on the chosen backend, the FAM read on its own."""
    model = tiny("fam", L=8, m=1, F=2, fam_read_gate=True)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.fam_gate.uniform_(-1, 1)
    ids = ids_for(model, 2, 29)
    ref, _ = _calls(model, ids, [29], "sdpa")
    fast, calls = _calls(model, ids, [13, 16], "auto")
    torch.testing.assert_close(fast, ref, atol=TOL, rtol=0)
    assert calls.get("cpu_split", 0) > 0
