"""PassKey retrieval prompts (docs/algorithm.md §10, paper Fig. 10) and a small word-level tokenizer.

    tok = passkey_tokenizer()
    ids, (start, end) = make_passkey_example(filler_tokens=256, key=48213, depth=0.0, tokenizer=tok)
    # ids[start:end] are the answer's tokens (the 5 digits); everything before is the prompt

Filler lengths are counted in the model's tokens: the filler sentences are repeated and cut to
exactly ``filler_tokens`` tokens. ``depth`` places the key sentence inside the filler (0.0: right
after the introduction, which is the spec's format; 1.0: just before the question).
"""

from __future__ import annotations

import random

import torch

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
         "I will quiz you about the important information there.")
KEY_TEMPLATE = "The pass key is {key}. Remember it. {key} is the pass key."
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"
KEY_MIN, KEY_MAX = 10000, 99999
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def passkey_text(key: int, n_filler: int = 1, depth: float = 0.0) -> str:
    """The prompt and answer as text with ``n_filler`` whole repetitions of the filler."""
    before = round(depth * n_filler)
    parts = [INTRO] + [FILLER] * before + [KEY_TEMPLATE.format(key=key)] + [FILLER] * (n_filler - before)
    return " ".join(parts + [QUESTION, str(key)])


def random_key(rng: random.Random) -> int:
    """A uniformly random 5-digit key in [10000, 99999]."""
    return rng.randint(KEY_MIN, KEY_MAX)


def passkey_tokenizer(extra_words: list[str] | None = None):
    """A word-level tokenizer (``PreTrainedTokenizerFast``) whose vocabulary covers the PassKey prompt.

    Words and punctuation are tokens and every digit is its own token, so a key is 5 tokens.
    It is saved with ``save_pretrained`` next to a model and loads with ``AutoTokenizer``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    words: list[str] = []
    for text in (INTRO, KEY_TEMPLATE.format(key=0), FILLER, QUESTION, *(extra_words or [])):
        for word, _ in pre.pre_tokenize_str(text):
            if word not in words:
                words.append(word)
    vocab = {w: i for i, w in enumerate(SPECIAL_TOKENS + [str(d) for d in range(10)]
                                        + [w for w in words if not w.isdigit()])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>")


def _encode(tokenizer, text: str, first: bool) -> list[int]:
    # a leading space keeps BPE tokenizers (Llama / SmolLM) on their word-start tokens
    return tokenizer.encode(text if first else " " + text, add_special_tokens=False)


_FILLER_CACHE: dict[int, list[int]] = {}


def filler_ids(tokenizer, n_tokens: int) -> list[int]:
    """Exactly ``n_tokens`` tokens of the repeated filler sentences."""
    key = id(tokenizer)
    unit = _FILLER_CACHE.get(key)
    if unit is None:
        unit = _FILLER_CACHE[key] = _encode(tokenizer, FILLER, first=False)
    reps = -(-n_tokens // len(unit))
    return (unit * reps)[:n_tokens]


def make_passkey_example(filler_tokens: int, key: int, depth: float, tokenizer) -> tuple[list[int], tuple[int, int]]:
    """One PassKey prompt + answer in the format of docs/algorithm.md §10.

    Args:
        filler_tokens: filler length in the tokenizer's tokens (the filler sentences repeated, cut
            to this length); split by ``depth`` around the key sentence.
        key: the pass key, 10000..99999.
        depth: where the key sentence sits in the filler, 0.0 (start, the spec format) .. 1.0 (end).
        tokenizer: any Hugging Face tokenizer (e.g. ``passkey_tokenizer()``).
    Returns:
        (input_ids, (start, end)): the token ids of prompt and answer, and the answer's span
        (``input_ids[start:end]`` encodes the key's digits; the prompt is ``input_ids[:start]``).
    """
    if not KEY_MIN <= key <= KEY_MAX:
        raise ValueError(f"key={key}: must be a 5-digit number in [{KEY_MIN}, {KEY_MAX}]")
    if filler_tokens < 0 or not 0.0 <= depth <= 1.0:
        raise ValueError(f"filler_tokens={filler_tokens}, depth={depth}: need filler_tokens >= 0 and 0 <= depth <= 1")
    ids, spans = _build(filler_tokens, key, depth, tokenizer)
    return ids, spans["answer"]


def _build(filler_tokens: int, key: int, depth: float, tokenizer) -> tuple[list[int], dict]:
    filler = filler_ids(tokenizer, filler_tokens)
    before = round(depth * filler_tokens)
    key_sentence = KEY_TEMPLATE.format(key=key)
    head, _, _ = key_sentence.partition(str(key))  # "The pass key is "
    ids = _encode(tokenizer, INTRO, first=True) + filler[:before]
    key_start = len(ids) + len(_encode(tokenizer, head.strip(), first=False))
    ids += _encode(tokenizer, key_sentence, first=False)
    key_end = len(ids)
    ids += filler[before:] + _encode(tokenizer, QUESTION, first=False)
    start = len(ids)
    ids += _encode(tokenizer, str(key), first=False)
    first_key = (key_start, key_start + len(ids) - start)
    return ids, {"answer": (start, len(ids)), "first_key": first_key,
                 "key_digits": (first_key[1] - len(str(key)), first_key[1]), "key_sentence_end": key_end}


def passkey_spans(filler_tokens: int, depth: float, tokenizer) -> dict:
    """Token spans of a PassKey example (the same for every 5-digit key when digits are single
    tokens): "answer" (start, end), "first_key" (start, end), "key_digits" (start, end: the first
    key's digit tokens, without a leading space token where the tokenizer has one),
    "key_sentence_end" (index after the key sentence)."""
    return _build(filler_tokens, KEY_MIN, depth, tokenizer)[1]


def passkey_batch(batch_size: int, filler_tokens: int, tokenizer, rng: random.Random, depth: float | None = 0.0,
                  loss_on: str = "answer"):
    """A batch of PassKey examples of one filler length (so all have the same length).

    Args:
        depth: the key's depth, or None to draw it uniformly per batch.
        loss_on: ``"answer"``: labels only on the answer tokens; ``"all"``: on every token except
            the key's first occurrence (which nothing can predict).
    Returns (input_ids (B, T), labels (B, T) with -100 where no loss is taken, keys, answer span).
    """
    d = rng.random() if depth is None else depth
    rows, keys, spans = [], [], None
    for _ in range(batch_size):
        key = random_key(rng)
        ids, spans = _build(filler_tokens, key, d, tokenizer)
        rows.append(ids)
        keys.append(key)
    ids = torch.tensor(rows, dtype=torch.long)
    a0, a1 = spans["answer"]
    if loss_on == "all":
        labels = ids.clone()
        labels[:, spans["first_key"][0]:spans["first_key"][1]] = -100
    elif loss_on == "answer":
        labels = torch.full_like(ids, -100)
        labels[:, a0:a1] = ids[:, a0:a1]
    else:
        raise ValueError(f"loss_on={loss_on!r}: expected 'answer' or 'all'")
    return ids, labels, keys, (a0, a1)
