"""benchmarks/paired_compare.py: per-model means equal `fam eval ppl`'s evaluate_texts on the same
positions; a model against itself differs by exactly 0; the differences are the per-piece means'."""

import json
import runpy
import sys
from pathlib import Path

import pytest

import helpers
from transformer_fam.data.passkey import passkey_tokenizer
from transformer_fam.evaluation.perplexity import evaluate_texts, load_texts, make_buckets

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "paired_compare.py"


def _model_and_text(tmp_path):
    """A tiny fam model saved with the passkey tokenizer, its folder, and a 120-token text."""
    model = helpers.tiny("fam", L=8, m=1, F=2, heads=4, kv_heads=4, vocab=64, prompt_std=None)
    model.save_pretrained(tmp_path / "m")
    passkey_tokenizer().save_pretrained(tmp_path / "m")
    text = tmp_path / "t.txt"
    text.write_text("The grass is green. The sky is blue. " * 12)
    return model, str(tmp_path / "m"), text


def test_paired_compare_against_evaluate_texts(tmp_path, monkeypatch):
    model, m, text = _model_and_text(tmp_path)
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), "--from", "17", "--unit-tokens", "8",
                                      "--out", str(out), f"a={m}:bswa", f"b={m}:fam", f"c={m}:bswa"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    rep = json.loads(out.read_text())["results"]
    ids = load_texts(str(text), passkey_tokenizer())
    n = (len(ids[0][1]) - 17) // 8 * 8  # targets 17 .. 17+n-1 (whole pieces only)
    buckets = make_buckets([0, 17, 17 + n])
    for name, mode in (("a", "bswa"), ("b", "fam")):
        model.config.attention_mode = mode
        ref = evaluate_texts(model, ids, 32, progress=False, buckets=buckets)[f"17-{17 + n}"]
        assert rep[name]["loss"] == pytest.approx(ref["loss"], abs=1e-4)
        assert rep[name]["accuracy"] == pytest.approx(100 * ref["accuracy"], abs=1e-3)
    assert rep["c"]["loss_minus_a"] == 0 and rep["c"]["loss_se"] == 0 and rep["c"]["accuracy_minus_a"] == 0
    assert rep["b"]["loss_minus_a"] == pytest.approx(rep["b"]["loss"] - rep["a"]["loss"], abs=1e-3)
    assert rep["b"]["loss_minus_a"] != 0 and rep["b"]["pieces"] == n // 8


def test_paired_compare_buckets_equal_evaluate_texts(tmp_path, monkeypatch):
    """--buckets: each bucket's means equal evaluate_texts' buckets (every position, short last pieces
    included); a model against itself differs by 0 in each bucket, another model's difference is the
    difference of the means."""
    model, m, text = _model_and_text(tmp_path)
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), "--buckets", "0,16,50", "--from", "16",
                                      "--unit-tokens", "8", "--out", str(out), f"a={m}:bswa", f"b={m}:fam", f"c={m}:bswa"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    rep = json.loads(out.read_text())
    ids = load_texts(str(text), passkey_tokenizer())
    buckets = make_buckets([0, 16, 50])
    for name, mode in (("a", "bswa"), ("b", "fam")):
        model.config.attention_mode = mode
        ref = evaluate_texts(model, ids, 32, progress=False, buckets=buckets)
        for label in ("0-16", "16-50", "50+"):
            got = rep["buckets"][label][name]
            assert got["loss"] == pytest.approx(ref[label]["loss"], abs=1e-4)
            assert got["accuracy"] == pytest.approx(100 * ref[label]["accuracy"], abs=1e-3)
            assert got["tokens"] == ref[label]["tokens"]
    for label in ("0-16", "16-50", "50+"):
        b, c = rep["buckets"][label]["b"], rep["buckets"][label]["c"]
        assert c["loss_minus_a"] == 0 and c["loss_se"] == 0
        assert b["loss_minus_a"] == pytest.approx(b["loss"] - rep["buckets"][label]["a"]["loss"], abs=1e-3)
    assert rep["buckets"]["16-50"]["b"]["loss_se"] > 0


def test_paired_compare_pair_equals_a_run_with_that_baseline(tmp_path, monkeypatch):
    """--pair b:c reports exactly what a run with c as the baseline reports for b (overall and per bucket);
    a pair naming an unknown model is a one-line error."""
    model, m, text = _model_and_text(tmp_path)
    common = ["paired_compare.py", "--data", str(text), "--buckets", "0,16,50", "--from", "16", "--unit-tokens", "8"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    monkeypatch.setattr(sys, "argv", common + ["--out", str(one), "--pair", "b:c", f"a={m}:bswa", f"b={m}:fam",
                                               f"c={m}:fam-reset"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    monkeypatch.setattr(sys, "argv", common + ["--out", str(two), f"c={m}:fam-reset", f"b={m}:fam"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    one, two = json.loads(one.read_text()), json.loads(two.read_text())
    assert one["pairs"]["b:c"] == two["results"]["b"]
    assert one["pairs"]["b:c"]["loss_minus_c"] != 0
    for label in ("0-16", "16-50", "50+"):
        assert one["pair_buckets"][label]["b:c"] == two["buckets"][label]["b"]
    monkeypatch.setattr(sys, "argv", common + ["--pair", "b:z", f"a={m}:bswa", f"b={m}:fam"])
    with pytest.raises(SystemExit, match="--pair b:z: give A:B, two different model names of a, b"):
        runpy.run_path(str(SCRIPT), run_name="__main__")


def test_paired_compare_documents_are_fresh_windows(tmp_path, monkeypatch):
    """--documents N: every text is cut into independent N-token documents, each one piece; the means
    equal evaluate_texts over those documents as texts; inside the window (N <= (m+1)L) BSWA equals full
    attention exactly, while the FAM differs. A --from past the document is a one-line error."""
    model, m, text = _model_and_text(tmp_path)  # L = 8, m = 1: a 16-token window
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), "--documents", "16", "--out", str(out),
                                      f"a={m}:bswa", f"b={m}:fam", f"c={m}:full"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    rep = json.loads(out.read_text())
    ids = load_texts(str(text), passkey_tokenizer())[0][1]
    docs = [(str(i), ids[i: i + 16]) for i in range(0, len(ids) - 15, 16)]
    assert len(docs) >= 5 and rep["from"] == 0 and rep["unit_tokens"] == 15
    for name, mode in (("a", "bswa"), ("b", "fam")):
        model.config.attention_mode = mode
        ref = evaluate_texts(model, docs, 32, progress=False, buckets=make_buckets([0]))["0+"]
        assert rep["results"][name]["loss"] == pytest.approx(ref["loss"], abs=1e-4)
        assert rep["results"][name]["tokens"] == ref["tokens"] == 15 * len(docs)
        assert rep["results"][name]["pieces"] == len(docs)
    assert rep["results"]["c"]["loss_minus_a"] == pytest.approx(0, abs=1e-5)
    assert rep["results"]["c"]["accuracy_minus_a"] == 0
    assert rep["results"]["b"]["loss_minus_a"] != 0  # the FAM is read inside the window too
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), "--documents", "16", "--from", "16",
                                      f"a={m}:bswa", f"b={m}:fam"])
    with pytest.raises(SystemExit, match="--from 16: documents of 16 tokens .* give --from 0"):
        runpy.run_path(str(SCRIPT), run_name="__main__")


def test_paired_compare_run_time_option(tmp_path, monkeypatch):
    """MODEL:fam+fam_skip_initial_read switches option O7 on for that model only: inside the window (one-block
    documents) it then equals BSWA mode exactly while the plain fam model does not; an unknown option or one
    on a non-FAM mode is a one-line error."""
    model, m, text = _model_and_text(tmp_path)
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), "--documents", "8", "--out", str(out),
                                      f"a={m}:bswa", f"b={m}:fam+fam_skip_initial_read", f"c={m}:fam"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    rep = json.loads(out.read_text())["results"]
    assert rep["b"]["loss_minus_a"] == pytest.approx(0, abs=1e-5) and rep["b"]["accuracy_minus_a"] == 0
    assert rep["c"]["loss_minus_a"] != 0
    for bad in (f"b={m}:fam+fam_center", f"b={m}:bswa+fam_skip_initial_read"):
        monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), f"a={m}:bswa", bad])
        with pytest.raises(SystemExit, match=r"\+fam_\w+: give one of fam_read_shift, fam_skip_initial_read, in a fam"):
            runpy.run_path(str(SCRIPT), run_name="__main__")


def test_paired_compare_mem_segments(tmp_path, monkeypatch):
    """--mem-segments M runs every bswa / fam model with M memory blocks (same weights): the means equal
    evaluate_texts of the model built with m = M, full mode is left as it is, the JSON records M, and a
    negative M is one line."""
    model, m, text = _model_and_text(tmp_path)
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), "--from", "16", "--unit-tokens", "8",
                                      "--mem-segments", "0", "--out", str(out), f"a={m}:bswa", f"b={m}:fam",
                                      f"c={m}:full"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    rep = json.loads(out.read_text())
    assert rep["mem_segments"] == 0
    ids = load_texts(str(text), passkey_tokenizer())
    n = (len(ids[0][1]) - 16) // 8 * 8
    buckets = make_buckets([0, 16, 16 + n])
    m0 = helpers.tiny("fam", L=8, m=0, F=2, heads=4, kv_heads=4, vocab=64, prompt_std=None)
    m0.load_state_dict(model.state_dict())
    for name, mode, ref_model in (("a", "bswa", m0), ("b", "fam", m0), ("c", "full", model)):
        ref_model.config.attention_mode = mode
        ref = evaluate_texts(ref_model, ids, 32, progress=False, buckets=buckets)[f"16-{16 + n}"]
        assert rep["results"][name]["loss"] == pytest.approx(ref["loss"], abs=1e-4), name
    model.config.attention_mode = "fam"  # m = 1, as saved: another number
    saved = evaluate_texts(model, ids, 32, progress=False, buckets=buckets)[f"16-{16 + n}"]
    assert abs(rep["results"]["b"]["loss"] - saved["loss"]) > 1e-4
    monkeypatch.setattr(sys, "argv", ["paired_compare.py", "--data", str(text), "--mem-segments", "-1", f"a={m}:bswa"])
    with pytest.raises(SystemExit, match="--mem-segments -1: give a number of memory blocks >= 0"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
