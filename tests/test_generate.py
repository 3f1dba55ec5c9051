"""generate() with the FamCache, and `fam generate`.

References: greedy decoding by repeated full forwards without any cache, and Hugging Face's own
generate() on the model the FAM model was converted from.
"""

import pytest
import torch

from helpers import hf_tiny, word_tokenizer
from helpers import ids_for, tiny
from transformer_fam import FamCache, from_hf
from transformer_fam.cli import main
from transformer_fam.core.streaming import stream


@torch.no_grad()
def greedy_without_cache(model, ids, n):
    for _ in range(n):
        nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat((ids, nxt), dim=1)
    return ids


@pytest.mark.parametrize("mode", ["full", "bswa", "fam"])
@pytest.mark.parametrize("T", [3, 9, 16])
def test_greedy_generate_equals_repeated_full_forwards(mode, T):
    model = tiny(mode, L=4, m=1, F=2)
    ids = ids_for(model, 2, T)
    out = model.generate(ids, max_new_tokens=14, do_sample=False, pad_token_id=0)
    expected = greedy_without_cache(model, ids, 14)
    assert torch.equal(out, expected)
    assert not torch.equal(out[0, T:], out[1, T:])  # two different continuations, not a degenerate loop


@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_generate_memory_is_constant_in_the_prompt_length(mode):
    model = tiny(mode, L=4, m=2, F=2)
    sizes = []
    for T in (12, 60, 240):
        out = model.generate(ids_for(model, 1, T), max_new_tokens=4, do_sample=False, pad_token_id=0,
                             return_dict_in_generate=True)
        cache = out.past_key_values
        assert isinstance(cache, FamCache) and cache.get_seq_length() == T + 3
        sizes.append(cache.num_elements())
    assert sizes[0] == sizes[1] == sizes[2] > 0
    full = tiny("full")
    grow = [full.generate(ids_for(full, 1, T), max_new_tokens=4, do_sample=False, pad_token_id=0,
                          return_dict_in_generate=True).past_key_values.num_elements() for T in (12, 60)]
    assert grow[1] > grow[0]


@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_chunked_prefill_and_a_passed_cache_give_the_same_tokens(mode):
    model = tiny(mode, L=4, m=1, F=2)
    ids = ids_for(model, 1, 23)
    plain = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    chunked = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0, prefill_chunk_size=4)
    cache = stream(model, ids[:, :-1], chunk_size=5).cache
    continued = model.generate(ids, past_key_values=cache, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(chunked, plain) and torch.equal(continued, plain)


def test_converted_model_generates_like_hf_greedy_and_beam():
    hf = hf_tiny("llama")
    fam = from_hf(hf, attention_mode="full")
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(3))
    for kw in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        ours = fam.generate(ids, max_new_tokens=10, pad_token_id=0, eos_token_id=None, **kw)
        theirs = hf.generate(ids, max_new_tokens=10, pad_token_id=0, eos_token_id=None, **kw)
        assert torch.equal(ours, theirs), kw


def test_sampling_is_seeded_and_differs_from_greedy():
    model = tiny("fam", L=4, m=1, F=2)
    ids = ids_for(model, 1, 9)
    torch.manual_seed(0)
    a = model.generate(ids, max_new_tokens=20, do_sample=True, temperature=2.0, pad_token_id=0)
    torch.manual_seed(0)
    b = model.generate(ids, max_new_tokens=20, do_sample=True, temperature=2.0, pad_token_id=0)
    greedy = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b) and not torch.equal(a, greedy)


def test_generate_rejects_a_foreign_cache():
    from transformers import DynamicCache

    model = tiny("fam")
    with pytest.raises(ValueError, match="FamCache"):
        model.generate(ids_for(model, 1, 5), past_key_values=DynamicCache(), max_new_tokens=2)


def test_fam_generate_cli_streams_the_greedy_reply(tmp_path, capsys):
    model = tiny("fam", L=4, m=1, F=2)
    model.config.eos_token_id = None
    model.save_pretrained(tmp_path / "m")
    tok = word_tokenizer(model.config.vocab_size)
    tok.save_pretrained(tmp_path / "m")
    words = " ".join(f"w{int(i)}" for i in ids_for(model, 1, 50)[0] % (model.config.vocab_size - 2))
    (tmp_path / "book.txt").write_text(words)
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt-file", str(tmp_path / "book.txt"),
                 "--max-new-tokens", "6"]) == 0
    captured = capsys.readouterr()
    ids = tok(words, return_tensors="pt").input_ids
    assert ids.shape == (1, 50)
    expected = greedy_without_cache(model, ids, 6)[0, 50:]
    assert captured.out.split() == tok.decode(expected, skip_special_tokens=True).split()
    assert len(captured.out.split()) >= 3
    assert "50 tokens" in captured.err
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt-file", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_bytes(b"w1 w2 \xff\xfe w3")
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt-file", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.txt: not valid UTF-8 at byte offset 6" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_beam_search_scores_equal_uncached_log_probs(mode):
    """Beams reorder the FamCache; each returned beam's score must be its log-prob by a fresh forward."""
    model = tiny(mode, L=4, m=1, F=2)
    ids = ids_for(model, 2, 7)
    n = 8
    out = model.generate(ids, max_new_tokens=n, num_beams=3, do_sample=False, pad_token_id=0, eos_token_id=None,
                         return_dict_in_generate=True, output_scores=True, length_penalty=1.0)
    with torch.no_grad():
        log_probs = model(out.sequences).logits.log_softmax(-1)
    seq_log_prob = log_probs[:, 6:-1].gather(-1, out.sequences[:, 7:, None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(out.sequences_scores * n, seq_log_prob, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------- SmolLM2
def smollm2_and_tokenizer(**fam):
    from transformers import AutoTokenizer

    from transformer_fam.hf.smollm2 import smollm2, smollm2_folder

    return smollm2(**fam), AutoTokenizer.from_pretrained(smollm2_folder())


@pytest.mark.slow
def test_smollm2_answers_paris():
    model, tok = smollm2_and_tokenizer(attention_mode="full")
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=20, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def book_text() -> str:
    """A long plain-text 'book' that every Python ships: the pydoc pages of some stdlib modules."""
    import importlib
    import pydoc

    names = ("argparse", "collections", "json", "pathlib", "subprocess", "typing", "inspect")
    return "".join(pydoc.plaintext.document(importlib.import_module(name)) for name in names)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_smollm2_reads_a_20k_token_book_at_constant_memory(mode):
    model, tok = smollm2_and_tokenizer(attention_mode=mode, block_size=1024, mem_segments=1, fam_length=64)
    ids = tok(book_text(), return_tensors="pt").input_ids[:, :20_000]
    assert ids.shape[1] == 20_000
    cache, sizes = None, []
    with torch.no_grad():
        for chunk in ids.split(1024, dim=1):
            out = model(chunk, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            sizes.append(cache.num_elements())
            assert bool(torch.isfinite(out.logits).all())
    assert cache.get_seq_length() == 20_000
    # whole-block chunks leave the same state; a partial block adds at most L tokens of K/V
    per_token = 30 * 2 * 3 * 64  # layers x (k, v) x kv heads x head dim
    assert len(set(sizes[:-1])) == 1
    bound = sizes[0] + 1024 * per_token
    assert sizes[-1] <= bound and bound < 20_000 * per_token / 4  # far below a full 20k-token KV cache
    cont = torch.cat((ids, tok(" The", return_tensors="pt").input_ids), dim=1)
    reply = model.generate(cont, past_key_values=cache, max_new_tokens=5, do_sample=False)
    assert reply.shape[1] == cont.shape[1] + 5 and cache.num_elements() <= bound


@pytest.mark.parametrize("mode", ["bswa", "fam"])
def test_generate_saves_a_state_and_a_later_call_continues_it(tmp_path, capsys, mode):
    """fam generate --save-state, then --load-state with a question: the reply equals the greedy reply
    to the book and the question read as one prompt (rule S4)."""
    model = tiny(mode, L=4, m=1, F=2)
    model.config.eos_token_id = None
    model.save_pretrained(tmp_path / "m")
    tok = word_tokenizer(model.config.vocab_size)
    tok.save_pretrained(tmp_path / "m")
    book = " ".join(f"w{int(i)}" for i in ids_for(model, 1, 45)[0] % (model.config.vocab_size - 2))
    question = "w3 w9 w27"
    (tmp_path / "book.txt").write_text(book)
    (tmp_path / "q.txt").write_text(question)
    state = tmp_path / "book.fam-state"
    base = ["generate", "--model", str(tmp_path / "m"), "--max-new-tokens", "6"]
    assert main(base + ["--prompt-file", str(tmp_path / "book.txt"), "--save-state", str(state)]) == 0
    assert state.is_file() and "after 45 tokens" in capsys.readouterr().err
    assert main(base + ["--load-state", str(state), "--prompt-file", str(tmp_path / "q.txt")]) == 0
    captured = capsys.readouterr()
    ids = tok(book + " " + question, return_tensors="pt").input_ids
    expected = greedy_without_cache(model, ids, 6)[0, ids.shape[1]:]
    assert captured.out.split() == tok.decode(expected, skip_special_tokens=True).split()
    assert "continuing 45 tokens" in captured.err
    other = tiny("bswa" if mode == "fam" else "fam", L=4, m=1, F=2)
    other.save_pretrained(tmp_path / "o")
    tok.save_pretrained(tmp_path / "o")
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "o"), "--load-state", str(state), "--prompt-file",
                 str(tmp_path / "q.txt")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bar: one line
    assert last.startswith("fam generate: error:") and "attention_mode" in last
