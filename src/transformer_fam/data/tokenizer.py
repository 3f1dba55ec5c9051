"""Tokenizers: a built-in byte-level one (no files needed) and any Hugging Face tokenizer.

    tok = load_tokenizer("byte")                 # ids 0..255 are the bytes, 256 <eos>, 257 <pad>
    tok = load_tokenizer("models/SmolLM2-135M")  # a folder with tokenizer files
    tok = load_tokenizer("model.Q8_0.gguf")      # the tokenizer embedded in a GGUF file

Every tokenizer returned is a ``transformers`` tokenizer, so ``save_pretrained`` puts it next to
a trained model and ``AutoTokenizer.from_pretrained`` loads it back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BYTE_EOS, BYTE_PAD = "<eos>", "<pad>"
BYTE_VOCAB_SIZE = 258


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what ByteLevel expects)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_tokenizer():
    """A byte-level tokenizer: token id == byte value (0..255), then <eos> 256 and <pad> 257."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    vocab[BYTE_EOS], vocab[BYTE_PAD] = 256, 257
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BYTE_EOS, BYTE_PAD])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=BYTE_EOS, pad_token=BYTE_PAD,
                                   bos_token=None, unk_token=None)
    fast.init_kwargs["fam_byte_level"] = True
    return fast


def is_byte_tokenizer(tokenizer) -> bool:
    return len(tokenizer) == BYTE_VOCAB_SIZE and tokenizer.convert_tokens_to_ids(BYTE_EOS) == 256 \
        and tokenizer.convert_tokens_to_ids("!") == ord("!")


def load_tokenizer(spec, required: bool = True):
    """``"byte"``, a folder holding a Hugging Face tokenizer, a ``.gguf`` file (its embedded
    tokenizer) or a folder holding one ``.gguf``.

    With ``required=False`` a source that has no tokenizer gives None instead of an error.
    """
    if str(spec) == "byte":
        return byte_tokenizer()
    from transformers import AutoTokenizer

    from ..hf.gguf import find_gguf

    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer: {str(spec)!r} is neither 'byte' nor an existing folder or .gguf file")
    gguf_file = path if path.is_file() and path.suffix == ".gguf" else None
    if path.is_dir() and not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        gguf_file = find_gguf(path)
        if gguf_file is None:
            if required:
                raise FileNotFoundError(f"tokenizer: {path} holds no tokenizer (tokenizer.json) nor a .gguf file")
            return None
    try:
        if gguf_file is not None:
            return AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError):
        if required:
            raise
        return None


def encode(tokenizer, text: str) -> np.ndarray:
    """Token ids of ``text`` (no special tokens) as int32; bytes directly for the byte tokenizer."""
    if is_byte_tokenizer(tokenizer):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
    step = 1 << 20  # long texts in pieces cut at newlines, to bound the tokenizer's memory
    pieces, start = [], 0
    while start < len(text):
        end = len(text) if start + step >= len(text) else text.rfind("\n", start, start + step) + 1 or start + step
        pieces.append(np.asarray(tokenizer(text[start:end], add_special_tokens=False)["input_ids"], np.int32))
        start = end
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)


def eos_id(tokenizer) -> int:
    """The id that separates documents: the tokenizer's eos, else its bos, else 0."""
    for tid in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if tid is not None:
            return int(tid)
    return 0
