"""Saved documents: a text read once into a model state that is kept on disk (FamCache.save).

Each document lives in the state folder as ``<id>.fam-state`` (the state) and ``<id>.json`` (what
the server reports about it). Ids are made by the server (``doc-`` + 32 hex digits) and checked
against that pattern before any file is touched, so no client-supplied string is ever a path.
A document's state is written once, atomically, by the request that reads it; every question
loads its own copy, so no question changes it and no two requests write it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core.cache import FamCache
from ..core.streaming import stream_chunks

ID_PATTERN = re.compile(r"^doc-[0-9a-f]{32}$")


@dataclass
class DocumentInfo:
    id: str
    status: str = "reading"  # reading | ready | failed
    tokens: int = 0  # tokens of the text
    tokens_read: int = 0
    state_bytes: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    error: str | None = None

    def public(self) -> dict:
        return {"object": "document", **asdict(self)}


class DocumentStore:
    """The documents of one model, in ``folder`` (created if missing)."""

    def __init__(self, folder, model, chunk_size: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.chunk_size = chunk_size or 4 * model.config.block_size
        self._lock = threading.Lock()
        self._live: dict[str, DocumentInfo] = {}  # documents being read
        self._deleted: set[str] = set()

    # ------------------------------------------------------------------ paths
    def _paths(self, doc_id: str) -> tuple[Path, Path]:
        if not ID_PATTERN.match(doc_id or ""):
            raise KeyError(doc_id)
        return self.folder / f"{doc_id}.fam-state", self.folder / f"{doc_id}.json"

    def _write_info(self, info: DocumentInfo) -> None:
        _, meta = self._paths(info.id)
        tmp = meta.with_name(f".{meta.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(info)))
        os.replace(tmp, meta)

    # ------------------------------------------------------------------ API
    def new(self, tokens: int) -> DocumentInfo:
        info = DocumentInfo(id=f"doc-{uuid.uuid4().hex}", tokens=tokens)
        with self._lock:
            self._live[info.id] = info
        return info

    def read(self, info: DocumentInfo, ids: torch.LongTensor) -> DocumentInfo:
        """Read ``ids`` (1, T) into a fresh state and save it; updates ``info`` as it goes."""
        state_path, _ = self._paths(info.id)
        try:
            out = None
            with torch.no_grad():
                for chunk, out in stream_chunks(self.model, ids, self.chunk_size, logits_to_keep=1):
                    info.tokens_read += chunk.shape[1]
                    if info.id in self._deleted:
                        raise RuntimeError("deleted while reading")
            info.state_bytes = out.past_key_values.save(state_path, self.model)
            info.status = "ready"
        except Exception as err:  # reported to the client through the document's status
            info.status, info.error = "failed", str(err).splitlines()[0] if str(err) else type(err).__name__
        with self._lock:
            self._live.pop(info.id, None)
            if info.id in self._deleted:
                self._remove_files(info.id)
                return info
        self._write_info(info)
        return info

    def get(self, doc_id: str) -> DocumentInfo:
        """The document's info; KeyError if there is none with that id."""
        state, meta = self._paths(doc_id)
        with self._lock:
            if doc_id in self._live:
                return self._live[doc_id]
        if not meta.is_file():
            raise KeyError(doc_id)
        return DocumentInfo(**json.loads(meta.read_text()))

    def load_state(self, doc_id: str) -> FamCache:
        """A private copy of a ready document's state (KeyError / ValueError otherwise)."""
        info = self.get(doc_id)
        if info.status != "ready":
            raise ValueError(f"document {doc_id} is {info.status}" + (f": {info.error}" if info.error else ""))
        return FamCache.load(self._paths(doc_id)[0], self.model)

    def delete(self, doc_id: str) -> None:
        self._paths(doc_id)
        with self._lock:
            if doc_id in self._live:  # the reader removes the files when it stops
                self._deleted.add(doc_id)
                return
            if not self._paths(doc_id)[1].is_file():
                raise KeyError(doc_id)
            self._remove_files(doc_id)

    def _remove_files(self, doc_id: str) -> None:
        for path in self._paths(doc_id):
            path.unlink(missing_ok=True)
