"""The streaming state (docs/algorithm.md, rules S1-S4, F5, P2-P3): its window layout, a stream
started from a carried FAM, and the state's round trip through plain tensors."""

import pytest
import torch

from helpers import TOL, ids_for, tiny
from transformer_fam import FamCache
from transformer_fam.core.cache import WindowLayout


def test_window_layout_names_memory_fam_and_current_block():
    lay = WindowLayout(block_size=8, mem_segments=2, fam_length=3)
    assert (lay.memory, lay.fam, lay.current(5), lay.size) == (slice(0, 16), slice(16, 19), slice(19, 24), 27)
    assert WindowLayout(8, 0, 0).size == 8  # bswa without memory: the current block only


@pytest.mark.parametrize("seen", [16, 24])
def test_a_stream_from_a_carried_fam_equals_the_continued_stream(seen):
    """Rules S3 + F5 + P2/P3: with no memory blocks (m=0) the whole state at a block boundary is the
    FAM, so a fresh cache built from it, starting at the same position, continues identically:
    the carried FAM keeps its residual and sits at the positions just before the stream."""
    model = tiny("fam", L=8, m=0, F=2)
    ids = ids_for(model, 2, seen + 13)
    with torch.no_grad():
        first = model(ids[:, :seen], use_cache=True)
        fams = [f.clone() for f in first.past_key_values.fam_state()]
        continued = model(ids[:, seen:], past_key_values=first.past_key_values, use_cache=True).logits
        carried = FamCache.from_fam_state(model.config, fams, position_offset=seen)
        restarted = model(ids[:, seen:], past_key_values=carried, use_cache=True).logits
        initial = model(ids[:, seen:], past_key_values=FamCache(model.config, position_offset=seen)).logits
    torch.testing.assert_close(restarted, continued, atol=TOL, rtol=0)
    assert not carried.fam_is_initial
    assert (initial - continued).abs().max() > 1e-2  # the learned initial FAM is a different state


def test_from_fam_state_checks_what_it_is_given():
    model = tiny("fam", L=8, m=0, F=2)
    good = [torch.zeros(1, 2, 32) for _ in range(2)]
    with pytest.raises(ValueError, match="1 FAM tensors for 2 layers"):
        FamCache.from_fam_state(model.config, good[:1])
    with pytest.raises(ValueError, match=r"layer 1 FAM has shape \(1, 3, 32\)"):
        FamCache.from_fam_state(model.config, [good[0], torch.zeros(1, 3, 32)])
    with pytest.raises(ValueError, match="holds no FAM"):
        FamCache.from_fam_state(tiny("bswa").config, good)
    cache = FamCache.from_fam_state(model.config, [torch.zeros(3, 2, 32) for _ in range(2)])
    with pytest.raises(ValueError, match="carried FAM has batch size"):
        model(ids_for(model, 2, 5), past_key_values=cache)


@pytest.mark.parametrize("mode,cut", [("full", 13), ("bswa", 13), ("fam", 13), ("fam", 16)])
def test_state_dict_round_trip_continues_exactly(mode, cut):
    """Rule S4, a state saved mid-block included (cut 13, block 8)."""
    model = tiny(mode, L=8, m=1, F=2)
    ids = ids_for(model, 2, 30)
    with torch.no_grad():
        cache = model(ids[:, :cut], use_cache=True).past_key_values
        restored = FamCache.from_state_dict(model.config, cache.state_dict())
        want = model(ids[:, cut:], past_key_values=cache, use_cache=True).logits
        got = model(ids[:, cut:], past_key_values=restored, use_cache=True).logits
    assert torch.equal(got, want)
    assert restored.seen_tokens == cut + (30 - cut) and restored.num_elements() == cache.num_elements()
