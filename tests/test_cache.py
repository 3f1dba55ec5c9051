"""The streaming state (docs/algorithm.md, rules S1-S4, F5, P2-P3): its window layout, a stream
started from a carried FAM, and the state's round trip through plain tensors."""

import json

import pytest
import torch

from helpers import TOL, ids_for, tiny
from transformer_fam import FamCache
from transformer_fam.core.state import WindowLayout


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


@pytest.mark.parametrize("mode,cut", [("bswa", 13), ("fam", 13), ("fam", 24), ("full", 13)])
def test_a_saved_state_continues_like_the_uninterrupted_stream(tmp_path, mode, cut):
    """Rule S4 through a file: save mid-stream (mid-block included), load into the same model,
    continue: the logits equal the uninterrupted stream's."""
    model = tiny(mode, L=8, m=1, F=2)
    ids = ids_for(model, 2, 40)
    with torch.no_grad():
        whole = model(ids).logits[:, cut:]
        cache = model(ids[:, :cut], use_cache=True).past_key_values
        cache.save(tmp_path / "s.fam-state", model, extra={"note": "x"})
        loaded = FamCache.load(tmp_path / "s.fam-state", model)
        got = model(ids[:, cut:], past_key_values=loaded, use_cache=True).logits
    torch.testing.assert_close(got, whole, atol=1e-5, rtol=0)
    assert loaded.extra == {"note": "x"} and loaded.seen_tokens == 40


def test_the_state_file_has_a_constant_size_in_the_windowed_modes(tmp_path):
    model = tiny("fam", L=8, m=1, F=2)
    sizes = []
    with torch.no_grad():
        for n in (8, 64, 400):
            cache = model(ids_for(model, 1, n), use_cache=True).past_key_values
            sizes.append(cache.save(tmp_path / f"{n}.fam-state", model))
    assert sizes[0] == sizes[1] == sizes[2]
    full = tiny("full")
    with torch.no_grad():
        small = full(ids_for(full, 1, 8), use_cache=True).past_key_values.save(tmp_path / "f8", full)
        big = full(ids_for(full, 1, 64), use_cache=True).past_key_values.save(tmp_path / "f64", full)
    assert big > small  # full attention's state grows with what it read


def test_loading_into_another_model_names_the_mismatch(tmp_path):
    model = tiny("fam", L=8, m=1, F=2)
    with torch.no_grad():
        model(ids_for(model, 1, 20), use_cache=True).past_key_values.save(tmp_path / "s", model)
    for other, field in [(tiny("bswa", L=8, m=1, F=2), "attention_mode=bswa"),
                         (tiny("fam", L=4, m=1, F=2), "block_size=4"),
                         (tiny("fam", L=8, m=2, F=2), "mem_segments=2"),
                         (tiny("fam", L=8, m=1, F=2, fam_center=True), "fam_center=True"),
                         (tiny("fam", L=8, m=1, F=2, fam_read_heads=[[1, 0]]), r"fam_read_heads=\[\[1, 0\]\]"),
                         (tiny("fam", L=8, m=1, F=2, seed=1), "other weights"),
                         (tiny("fam", L=8, m=1, F=2).to(torch.bfloat16), "runs in bfloat16")]:
        with pytest.raises(ValueError, match=field):
            FamCache.load(tmp_path / "s", other)
    # a state saved before the fam_center option existed (no such field) still loads where it is off
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tmp_path / "s"), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    old = json.loads(meta["fam_cache"])
    del old["shape"]["fam_center"]
    save_file(tensors, str(tmp_path / "old"), metadata={"fam_cache": json.dumps(old)})
    assert FamCache.load(tmp_path / "old", model).get_seq_length() == 20
    (tmp_path / "junk").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable state file"):
        FamCache.load(tmp_path / "junk", model)
    with pytest.raises(FileNotFoundError, match="no such state file"):
        FamCache.load(tmp_path / "missing", model)


WRITER = """
import sys, torch
sys.path.insert(0, {tests!r})
from helpers import tiny, ids_for
model = tiny("fam", L=8, m=1, F=2)
with torch.no_grad():
    states = [model(ids_for(model, 1, n), use_cache=True).past_key_values for n in (11, 29)]
print("ready", flush=True)
i = 0
while True:
    states[i % 2].save({path!r}, model)
    i += 1
"""


def test_sigkill_during_a_write_leaves_a_loadable_state(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    path = tmp_path / "s.fam-state"
    code = WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # many writes in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    model = tiny("fam", L=8, m=1, F=2)
    assert FamCache.load(path, model).seen_tokens in (11, 29)
    assert [p.name for p in tmp_path.iterdir() if p.name != path.name and not p.name.startswith(".")] == []


@pytest.mark.parametrize("cut", [8, 13])
def test_the_fam_reset_ablation_makes_every_block_read_the_initial_fam(cut):
    """With m=0 a block that reads the initial FAM is a fresh stream started at that block, so
    under FamResetEachBlock the logits of block b equal a new cache's at position b*L."""
    from transformer_fam.evaluation.ablation import FamResetEachBlock

    model = tiny("fam", L=8, m=0, F=2)
    ids = ids_for(model, 2, 32)
    ablated = FamResetEachBlock(model)
    with torch.no_grad():
        first = ablated(ids[:, :cut], use_cache=True)  # a call that ends mid-block, then the rest
        rest = ablated(ids[:, cut:], past_key_values=first.past_key_values, use_cache=True)
        got = torch.cat((first.logits, rest.logits), dim=1)
        plain = model(ids).logits
        for b in range(4):
            fresh = model(ids[:, 8 * b: 8 * b + 8], past_key_values=FamCache(model.config, position_offset=8 * b))
            torch.testing.assert_close(got[:, 8 * b: 8 * b + 8], fresh.logits, atol=TOL, rtol=0)
    assert (got[:, 8:] - plain[:, 8:]).abs().max() > 1e-2  # without the ablation the FAM carries context
    torch.testing.assert_close(got[:, :8], plain[:, :8], atol=TOL, rtol=0)  # block 0 reads the initial FAM anyway
    with torch.no_grad():  # logits_to_keep: the same last positions, without every position's logits
        for keep in (1, 5, 11):
            tail = ablated(ids, use_cache=False, logits_to_keep=keep).logits
            torch.testing.assert_close(tail, got[:, -keep:], atol=TOL, rtol=0)
