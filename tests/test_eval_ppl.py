"""`fam eval ppl`: streamed per-position metrics equal one unchunked forward; buckets; the CLI."""

import json
import re

import pytest
import torch

import helpers
from transformer_fam.cli import main
from transformer_fam.data.passkey import passkey_tokenizer
from transformer_fam.evaluation.perplexity import bucket_of, evaluate_texts, token_metrics


def tiny(mode="fam"):
    return helpers.tiny(mode, L=8, m=1, F=2, heads=4, kv_heads=4, vocab=64, prompt_std=None)


@pytest.mark.parametrize("mode", ["full", "bswa", "fam"])
def test_streamed_metrics_equal_one_forward(mode):
    model = tiny(mode)
    ids = torch.randint(0, 64, (1, 53), generator=torch.Generator().manual_seed(1))
    loss, correct = token_metrics(model, ids[0].tolist(), chunk_tokens=12)
    logits = model(ids).logits[0, :-1]
    ref = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
    torch.testing.assert_close(loss, ref, atol=1e-4, rtol=0)
    assert torch.equal(correct, logits.argmax(-1) == ids[0, 1:])


def test_buckets():
    assert [bucket_of(p) for p in (0, 4095, 4096, 16383, 16384, 65535, 65536, 10**6)] == [
        "0-4k", "0-4k", "4k-16k", "4k-16k", "16k-64k", "16k-64k", "64k+", "64k+"]
    model = tiny()
    res = evaluate_texts(model, [("a", list(range(1, 40))), ("b", list(range(2, 30)))], 8, progress=False)
    assert res["0-4k"]["tokens"] == 38 + 27 and 0 <= res["0-4k"]["accuracy"] <= 1


def _model_and_text(tmp_path):
    """A saved tiny fam model (passkey tokenizer) in tmp_path/m and a 200-token text; returns the text's path."""
    tiny("fam").save_pretrained(tmp_path / "m")
    passkey_tokenizer().save_pretrained(tmp_path / "m")
    text = tmp_path / "t.txt"
    text.write_text("The grass is green. The sky is blue. " * 20)
    return text


def test_cli_compares_modes(tmp_path):
    text = _model_and_text(tmp_path)
    assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text), "--modes", "full,bswa,fam",
                 "--out", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "ppl.json").read_text())
    assert set(rec["modes"]) == {"full", "bswa", "fam"} and rec["tokens"] == 200
    assert all(r["0-4k"]["tokens"] == 199 for r in rec["modes"].values())
    assert (tmp_path / "o" / "ppl.png").exists()


def test_cli_buckets_and_the_fam_reset_ablation(tmp_path):
    text = _model_and_text(tmp_path)
    assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text), "--modes", "fam,fam-reset",
                 "--buckets", "0,8,64", "--out", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "ppl.json").read_text())
    assert rec["buckets"] == ["0-8", "8-64", "64+"]
    fam, reset = rec["modes"]["fam"], rec["modes"]["fam-reset"]
    assert [fam[b]["tokens"] for b in rec["buckets"]] == [7, 56, 136]
    assert abs(fam["0-8"]["loss"] - reset["0-8"]["loss"]) < 1e-5  # block 0 reads the initial FAM anyway
    assert abs(fam["64+"]["loss"] - reset["64+"]["loss"]) > 1e-4  # later blocks lose what the FAM carried
    assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text), "--buckets", "5,10"]) == 2


def test_cli_fam_read_heads_restricts_the_fam_modes(tmp_path, capsys):
    """Option O5 on the command line: --fam-read-heads gives the numbers of the model whose config
    lists those heads (fam mode), leaves bswa alone, and a bad value is one clear line."""
    from transformer_fam.evaluation.perplexity import load_texts

    text = _model_and_text(tmp_path)
    assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text), "--modes", "bswa,fam",
                 "--fam-read-heads", "1.2,1.0", "--out", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "ppl.json").read_text())
    assert rec["fam_read_heads"] == [[1, 2], [1, 0]]
    model = tiny("fam")
    ids = load_texts(str(text), passkey_tokenizer())
    model.config.fam_read_heads = [[1, 2], [1, 0]]
    want = evaluate_texts(model, ids, 32, progress=False)["0-4k"]["loss"]
    got = rec["modes"]["fam"]["0-4k"]["loss"]
    assert got == pytest.approx(want, abs=1e-5)
    model.config.fam_read_heads = None
    assert abs(evaluate_texts(model, ids, 32, progress=False)["0-4k"]["loss"] - got) > 1e-4
    for bad, why in (("1-2", "'1-2' is not LAYER.HEAD"), ("5.0", r"\[5, 0\] is outside the model's 2 layers"),
                     (" ", "empty")):
        assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text),
                     "--fam-read-heads", bad, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert "Traceback" not in err and last.startswith("fam") and "--fam-read-heads" in last, err
        assert re.search(why, last), last


def test_cli_fam_read_shift_switches_option_o6_on_and_off(tmp_path, capsys):
    """Option O6 on the command line: --fam-read-shift on gives the numbers of the model whose config
    has fam_read_shift, off those of the paper's form; bswa mode refuses it in one clear line."""
    from transformer_fam.evaluation.perplexity import load_texts

    text = _model_and_text(tmp_path)
    got = {}
    for value in ("on", "off"):
        assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text), "--modes", "fam",
                     "--fam-read-shift", value, "--out", str(tmp_path / value)]) == 0
        rec = json.loads((tmp_path / value / "ppl.json").read_text())
        assert rec["fam_read_shift"] is (value == "on")
        got[value] = rec["modes"]["fam"]["0-4k"]["loss"]
    model = tiny("fam")
    ids = load_texts(str(text), passkey_tokenizer())
    assert got["off"] == pytest.approx(evaluate_texts(model, ids, 32, progress=False)["0-4k"]["loss"], abs=1e-5)
    model.config.fam_read_shift = True
    assert got["on"] == pytest.approx(evaluate_texts(model, ids, 32, progress=False)["0-4k"]["loss"], abs=1e-5)
    assert abs(got["on"] - got["off"]) > 1e-4
    assert main(["eval", "passkey", "--model", str(tmp_path / "m"), "--attention-mode", "bswa",
                 "--fam-read-shift", "on", "--lengths", "8", "--samples", "1", "--out", str(tmp_path / "p")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--fam-read-shift" in last and "bswa" in last, last


def test_cli_fam_skip_initial_read_switches_option_o7_on_and_off(tmp_path, capsys):
    """Option O7 on the command line: --fam-skip-initial-read on gives the numbers of the model whose config
    has it (fam-reset mode then equals bswa mode: no block reads a FAM), off the paper's; recorded in
    ppl.json; bswa mode refuses it in one clear line."""
    from transformer_fam.evaluation.perplexity import load_texts

    text = _model_and_text(tmp_path)
    got = {}
    for value in ("on", "off"):
        assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text), "--modes", "bswa,fam,fam-reset",
                     "--fam-skip-initial-read", value, "--out", str(tmp_path / value)]) == 0
        rec = json.loads((tmp_path / value / "ppl.json").read_text())
        assert rec["fam_skip_initial_read"] is (value == "on")
        got[value] = {mode: rec["modes"][mode]["0-4k"]["loss"] for mode in ("bswa", "fam", "fam-reset")}
    model = tiny("fam")
    model.config.fam_skip_initial_read = True
    ids = load_texts(str(text), passkey_tokenizer())
    assert got["on"]["fam"] == pytest.approx(evaluate_texts(model, ids, 32, progress=False)["0-4k"]["loss"], abs=1e-5)
    assert got["on"]["fam-reset"] == pytest.approx(got["on"]["bswa"], abs=1e-5)
    assert abs(got["off"]["fam-reset"] - got["off"]["bswa"]) > 1e-4 and abs(got["on"]["fam"] - got["off"]["fam"]) > 1e-4
    assert main(["eval", "passkey", "--model", str(tmp_path / "m"), "--attention-mode", "bswa",
                 "--fam-skip-initial-read", "on", "--lengths", "8", "--samples", "1", "--out", str(tmp_path / "p")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--fam-skip-initial-read" in last and "bswa" in last, last


def test_cli_device_runs_where_asked_and_refuses_a_missing_gpu(tmp_path, capsys, monkeypatch):
    """--device auto runs on the GPU when there is one, else on the CPU with the CPU's numbers (and says
    which in ppl.json / passkey.json); --device cuda without a GPU is one clear line, rc 2."""
    text = _model_and_text(tmp_path)
    args = ["--model", str(tmp_path / "m"), "--data", str(text), "--modes", "bswa,fam"]
    assert main(["eval", "ppl", *args, "--out", str(tmp_path / "cpu")]) == 0
    assert main(["eval", "ppl", *args, "--device", "auto", "--out", str(tmp_path / "auto")]) == 0
    cpu, auto = (json.loads((tmp_path / d / "ppl.json").read_text()) for d in ("cpu", "auto"))
    assert cpu["device"] == "cpu" and auto["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    for mode in ("bswa", "fam"):
        assert auto["modes"][mode]["0-4k"]["loss"] == pytest.approx(cpu["modes"][mode]["0-4k"]["loss"], abs=1e-4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    for command in (["eval", "ppl", *args], ["eval", "passkey", "--model", str(tmp_path / "m"), "--lengths", "8"]):
        assert main([*command, "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--device cuda" in err[0] and "no CUDA device" in err[0], err


def test_cli_mem_segments_reads_the_same_weights_with_another_window(tmp_path, capsys):
    """--mem-segments M: the saved weights (m = 1) read with M memory blocks give the numbers of the same
    model built with m = M (bswa and fam differ from m = 1's); recorded in ppl.json / passkey.json; full
    mode and a negative M are one clear line each."""
    from transformer_fam.evaluation.perplexity import load_texts

    text = _model_and_text(tmp_path)
    got = {}
    for m in ("0", "1", "3"):
        assert main(["eval", "ppl", "--model", str(tmp_path / "m"), "--data", str(text), "--modes", "bswa,fam",
                     "--mem-segments", m, "--out", str(tmp_path / m)]) == 0
        rec = json.loads((tmp_path / m / "ppl.json").read_text())
        assert rec["mem_segments"] == int(m)
        got[m] = {mode: rec["modes"][mode]["0-4k"]["loss"] for mode in ("bswa", "fam")}
    ids = load_texts(str(text), passkey_tokenizer())
    for m in ("0", "3"):
        for mode in ("bswa", "fam"):
            ref = helpers.tiny(mode, L=8, m=int(m), F=2, heads=4, kv_heads=4, vocab=64, prompt_std=None)
            missing, _ = ref.load_state_dict(tiny("fam").state_dict(), strict=False)  # the saved weights, m = M
            assert not missing
            assert got[m][mode] == pytest.approx(evaluate_texts(ref, ids, 32, progress=False)["0-4k"]["loss"], abs=1e-5)
            assert abs(got[m][mode] - got["1"][mode]) > 1e-4
    assert main(["eval", "passkey", "--model", str(tmp_path / "m"), "--mem-segments", "0", "--lengths", "8",
                 "--samples", "2", "--jitter", "8", "--out", str(tmp_path / "p")]) == 0
    rec = json.loads((tmp_path / "p" / "passkey.json").read_text())
    assert rec["mem_segments"] == 0 and rec["jitter"] == 8
    for args, words in ((["--attention-mode", "full", "--mem-segments", "1"], ("--mem-segments", "full")),
                        (["--mem-segments", "-1"], ("--mem-segments -1", ">= 0")),
                        (["--jitter", "-2"], ("--jitter -2", ">= 0"))):
        assert main(["eval", "passkey", "--model", str(tmp_path / "m"), *args, "--lengths", "8", "--samples", "1",
                     "--out", str(tmp_path / "p")]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert all(w in last for w in words), last
