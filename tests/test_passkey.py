"""PassKey: the prompt format of docs/algorithm.md §10, the word-level tokenizer, and the evaluator's counting."""

import json
import random

import pytest
import torch

from transformer_fam import FamConfig, FamForCausalLM
from transformer_fam.data.passkey import (FILLER, KEY_MAX, KEY_MIN, _build, filler_ids, make_passkey_example,
                                          passkey_batch, passkey_spans, passkey_text, passkey_tokenizer, random_key)
from transformer_fam.evaluation.passkey import (answer_is_right, evaluate_passkey, format_table, greedy_answer,
                                                passkey_accuracy)

SPEC = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz "
        "you about the important information there. The pass key is 48213. Remember it. 48213 is the pass key. "
        "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
        "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
        "What is the pass key? The pass key is 48213")


@pytest.fixture(scope="module")
def tok():
    return passkey_tokenizer()


def test_text_is_exactly_the_spec_format():
    assert passkey_text(48213, n_filler=2) == SPEC


def test_tokens_match_the_spec_text_and_answer_span(tok):
    unit = len(filler_ids(tok, 10_000)) and len(tok.encode(" " + FILLER, add_special_tokens=False))
    assert unit == 24  # "The grass is green ." ... "There and back again ."
    ids, (a0, a1) = make_passkey_example(2 * unit, 48213, 0.0, tok)
    assert ids == tok.encode(SPEC, add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids[a0:a1]) == ["4", "8", "2", "1", "3"]
    assert a1 == len(ids)
    assert tok.decode(ids[a0 - 4:a0]) == "The pass key is"


def test_key_digits_are_the_first_keys_digit_tokens(tok):
    """passkey_spans' "key_digits": the 5 digit tokens of the key sentence, for the word tokenizer
    and for SmolLM2's (whose key starts with a space token), at any depth."""
    from transformers import AutoTokenizer

    from transformer_fam.hf.smollm2 import smollm2_folder

    for t in (tok, AutoTokenizer.from_pretrained(smollm2_folder())):
        for depth in (0.0, 0.5):
            ids, spans = _build(37, 48213, depth, t)
            assert spans == passkey_spans(37, depth, t)
            d0, d1 = spans["key_digits"]
            assert t.convert_ids_to_tokens(ids[d0:d1]) == ["4", "8", "2", "1", "3"]
            assert ids[d0:d1] == ids[spans["answer"][1] - 5:spans["answer"][1]]
            assert spans["first_key"][0] <= d0 < d1 == spans["first_key"][1] < spans["key_sentence_end"]


def test_filler_length_is_counted_in_tokens(tok):
    base, _ = make_passkey_example(0, 12345, 0.0, tok)
    for n in (1, 7, 24, 100, 1000):
        ids, (a0, a1) = make_passkey_example(n, 12345, 0.0, tok)
        assert len(ids) == len(base) + n and a1 - a0 == 5


def test_depth_moves_the_key_not_the_length(tok):
    ids0, span0 = make_passkey_example(96, 12345, 0.0, tok)
    ids1, span1 = make_passkey_example(96, 12345, 1.0, tok)
    ids5, _ = make_passkey_example(96, 12345, 0.5, tok)
    assert len(ids0) == len(ids1) == len(ids5) and span0 == span1
    text1 = tok.decode(ids1)
    assert "again. The pass key is 1 2 3 4 5" not in tok.decode(ids0)
    assert text1.index("The pass key is 1 2 3 4 5") > text1.index("The grass is green")
    assert text1.index("The pass key is 1 2 3 4 5") < text1.index("What is the pass key")


def test_key_range_and_validation(tok):
    rng = random.Random(0)
    keys = [random_key(rng) for _ in range(2000)]
    assert min(keys) >= KEY_MIN and max(keys) <= KEY_MAX and len(set(keys)) > 1900
    assert all(len(str(k)) == 5 for k in keys)
    with pytest.raises(ValueError):
        make_passkey_example(10, 9999, 0.0, tok)
    with pytest.raises(ValueError):
        make_passkey_example(10, 100000, 0.0, tok)


def test_tokenizer_round_trip_and_save(tok, tmp_path):
    ids, _ = make_passkey_example(50, 90817, 0.3, tok)
    assert tok.encode(tok.decode(ids), add_special_tokens=False) == ids
    assert len(tok) == 57 and tok.unk_token_id == 1
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.encode(SPEC, add_special_tokens=False) == tok.encode(SPEC, add_special_tokens=False)


def test_batch_labels(tok):
    ids, labels, keys, (a0, a1) = passkey_batch(3, 40, tok, random.Random(1))
    assert ids.shape == labels.shape and (labels[:, :a0] == -100).all() and (labels[:, a0:] == ids[:, a0:]).all()
    for row, key in zip(ids, keys):
        assert tok.decode(row[a0:a1]).replace(" ", "") == str(key)
    _, all_labels, _, _ = passkey_batch(3, 40, tok, random.Random(1), loss_on="all")
    assert (all_labels == -100).sum(-1).tolist() == [5, 5, 5]  # only the key's first occurrence


def test_answer_is_right(tok):
    assert answer_is_right(tok, tok.encode("4 8 2 1 3", add_special_tokens=False), 48213)
    assert not answer_is_right(tok, tok.encode("4 8 2 1 9", add_special_tokens=False), 48213)
    assert not answer_is_right(tok, tok.encode("4 8 2 1 .", add_special_tokens=False), 48213)


class Oracle(torch.nn.Module):
    """Wraps a tiny FAM model but answers by reading the key from the prompt it was fed: right on
    keys whose first digit is odd, off by one in the last digit otherwise. So the expected accuracy
    is known exactly, and the evaluator's streaming / decoding / counting is what is tested."""

    def __init__(self, model, tok):
        super().__init__()
        self.model, self.tok, self.config = model, tok, model.config
        self.seen = []

    def forward(self, ids, past_key_values=None, use_cache=True, logits_to_keep=0):
        out = self.model(ids, past_key_values=past_key_values, use_cache=True, logits_to_keep=logits_to_keep)
        if past_key_values is None or past_key_values.seen_tokens == ids.shape[1]:
            self.seen = [[] for _ in range(ids.shape[0])]
        for row, r in zip(self.seen, ids.tolist()):
            row.extend(r)
        logits = torch.zeros(ids.shape[0], 1, self.config.vocab_size)
        for b, row in enumerate(self.seen):
            text = self.tok.decode(row)
            if text.count("The pass key is") < 2:  # still inside the prompt: any logits will do
                continue
            key = text.split("The pass key is ")[1][:9].replace(" ", "")
            answered = text.rsplit("The pass key is", 1)[1].replace(" ", "")
            digit = key[len(answered)] if len(answered) < 5 else "0"
            if len(answered) == 4 and int(key[0]) % 2 == 0:
                digit = str((int(digit) + 1) % 10)
            logits[b, 0, self.tok.convert_tokens_to_ids(digit)] = 1.0
        out.logits = logits
        return out

    def eval(self):
        return self


def test_passkey_accuracy_counts_exact_answers(tok):
    torch.manual_seed(0)
    cfg = FamConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    attention_mode="fam", block_size=8, mem_segments=0, fam_length=2)
    oracle = Oracle(FamForCausalLM(cfg), tok)
    rng = random.Random("3-40-0.0")  # the evaluator's key sequence for seed 3, length 40, depth 0
    keys = [random_key(rng) for _ in range(10)]
    expected = sum(int(str(k)[0]) % 2 for k in keys) / 10
    assert 0 < expected < 1
    acc = passkey_accuracy(oracle, tok, 40, 0.0, samples=10, seed=3, batch_size=4, chunk_tokens=8)
    assert acc == pytest.approx(expected)


def _naive_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding the slow way: the whole sequence from scratch for every token, no cache."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


def test_evaluate_untrained_model_runs_streamed(tok):
    """The streamed evaluation (prompt in chunks through the FamCache, then cached decoding) decodes
    what a cache-free recomputation decodes (rules X1, F6), and its result is that count, as JSON."""
    torch.manual_seed(0)
    cfg = FamConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    attention_mode="fam", block_size=8, mem_segments=0, fam_length=2)
    model = FamForCausalLM(cfg).eval()
    lengths, samples = [0, 300], 4
    res = evaluate_passkey(model, tok, lengths, samples=samples, batch_size=4, progress=False)
    expected, answers = {}, {}
    for n in lengths:
        rng = random.Random(f"0-{n}-0.0")  # the evaluator's documented key sequence (seed 0, depth 0)
        right = 0
        for key in [random_key(rng) for _ in range(samples)]:
            ids, (a0, a1) = make_passkey_example(n, key, 0.0, tok)
            answers[n, key] = _naive_greedy(model, ids[:a0], a1 - a0)
            right += answer_is_right(tok, answers[n, key], key)
        expected[str(n)] = right / samples
    assert res == expected
    assert res["300"] == 0.0  # an untrained model does not guess 5 digits
    assert all(type(v) is float for v in res.values()) and json.loads(json.dumps(res)) == res
    # the decoded tokens themselves, streamed in chunks of one block, against the naive loop
    keys = list(k for n, k in answers if n == 300)
    rows = [make_passkey_example(300, k, 0.0, tok) for k in keys]
    a0 = rows[0][1][0]
    streamed = greedy_answer(model, torch.tensor([r[0][:a0] for r in rows]), 5, chunk_tokens=8)
    assert streamed.tolist() == [answers[300, k] for k in keys]
    table = format_table({"fam": res})
    assert table.splitlines()[1:] == [f"{n:>14d} {100 * expected[str(n)]:7.1f}%" for n in lengths]


def test_evaluate_passkey_grid_by_depth_and_length(tok):
    """With depths the result nests {depth: {length: accuracy}}; each cell is the Oracle's exact
    accuracy on that cell's own key sequence (so a swapped or shared cell fails)."""
    torch.manual_seed(0)
    cfg = FamConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    attention_mode="fam", block_size=8, mem_segments=0, fam_length=2)
    oracle = Oracle(FamForCausalLM(cfg), tok)
    res = evaluate_passkey(oracle, tok, [0, 40], depths=[0.0, 1.0], samples=6, seed=5, batch_size=4,
                           chunk_tokens=8, progress=False)
    expected = {}
    for d in (0.0, 1.0):
        for n in (0, 40):
            rng = random.Random(f"5-{n}-{d}")
            expected.setdefault(str(d), {})[str(n)] = sum(int(str(random_key(rng))[0]) % 2 for _ in range(6)) / 6
    assert res == expected and list(res) == ["0.0", "1.0"]
    assert len({v for cells in expected.values() for v in cells.values()}) > 1  # the cells do differ
    assert json.loads(json.dumps(res)) == res


def test_jitter_draws_each_prompts_filler_over_a_block(tok, monkeypatch):
    """jitter N: prompt i has filler length + offset_i, the offsets drawn uniformly from 0 .. N-1 after the
    keys (so the keys, and jitter 0's prompts, are those of the plain evaluation); the accuracy is over
    those prompts; a negative jitter is refused."""
    import transformer_fam.evaluation.passkey as ev

    torch.manual_seed(0)
    cfg = FamConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    attention_mode="fam", block_size=8, mem_segments=0, fam_length=2)
    oracle = Oracle(FamForCausalLM(cfg), tok)
    seen = []
    real = ev.make_passkey_example
    monkeypatch.setattr(ev, "make_passkey_example", lambda n, k, d, t: seen.append((n, k)) or real(n, k, d, t))
    rng = random.Random("3-40-0.0")
    keys = [random_key(rng) for _ in range(12)]
    offsets = [rng.randrange(8) for _ in keys]
    acc = passkey_accuracy(oracle, tok, 40, 0.0, samples=12, seed=3, batch_size=5, chunk_tokens=8, jitter=8)
    assert sorted(seen) == sorted((40 + o, k) for k, o in zip(keys, offsets))
    assert len({n for n, _ in seen}) > 3  # the fillers do differ
    assert acc == pytest.approx(sum(int(str(k)[0]) % 2 for k in keys) / 12)
    seen.clear()
    passkey_accuracy(oracle, tok, 40, 0.0, samples=12, seed=3, batch_size=5, chunk_tokens=8)
    assert seen == [(40, k) for k in keys]
    with pytest.raises(ValueError, match="jitter=-1"):
        passkey_accuracy(oracle, tok, 40, 0.0, samples=2, jitter=-1)
