"""Batches for training. Every batcher is a pure function of the batch index, so the data
position of a run is one integer and resuming reproduces the stream exactly.

``batch(index)`` returns ``(inputs, targets)``, both (B, T) int64 for the *global* batch (every
process builds the same batch and takes its own rows): ``targets[:, t]`` is the token after
``inputs[:, t]``, -100 where no loss is taken.

- ``PackedBatches`` (the paper's setup): documents joined with EOS into one stream, cut into
  independent sequences of T+1 tokens, shuffled once per epoch.
- ``DocumentBatches`` (document-continuous): the epoch's shuffled documents are joined into one
  stream and split into B contiguous rows; step k reads tokens kT..(k+1)T of every row, so a row
  reads its documents in order across steps and the trainer carries the (detached) FamCache from
  step to step. ``starts_stream(index)`` tells the trainer when to start from a fresh cache.
- ``PasskeyBatches``: the synthetic PassKey task (docs/algorithm.md §10) at exactly T+1 tokens per row,
  the key sentence at a random depth; loss on the answer's tokens only (or on all tokens).
  With ``curriculum`` N, batch i < N is shorter: the length grows linearly to T+1 over N batches.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .tokenizer import encode, eos_id


def token_stream(docs: list[np.ndarray], eos: int) -> np.ndarray:
    """Documents joined with ``eos`` after each: one int32 stream."""
    parts = []
    for d in docs:
        parts += [d, np.array([eos], np.int32)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


class PackedBatches:
    """Independent packed sequences of ``seq_len`` (+1 target) tokens, reshuffled every epoch."""

    mode = "packed"

    def __init__(self, docs: list[np.ndarray], eos: int, seq_len: int, batch_size: int, seed: int):
        self.stream = token_stream(docs, eos)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.num_sequences = (len(self.stream) - 1) // seq_len
        if self.num_sequences < batch_size:
            raise ValueError(f"data: {len(self.stream)} tokens make {self.num_sequences} sequences of "
                             f"seq_len={seq_len}, fewer than batch_size={batch_size}")
        self._perm_epoch, self._perm = -1, None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_sequences)
            self._perm_epoch = epoch
        return self._perm

    def starts_stream(self, index: int) -> bool:
        return True

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        T, rows = self.seq_len, []
        for j in range(self.batch_size):
            epoch, i = divmod(index * self.batch_size + j, self.num_sequences)
            start = int(self._order(epoch)[i]) * T
            rows.append(self.stream[start: start + T + 1])
        seq = torch.from_numpy(np.stack(rows).astype(np.int64))
        return seq[:, :-1], seq[:, 1:].clone()


class DocumentBatches:
    """Each of the B rows reads a contiguous share of the epoch's document stream, in order."""

    mode = "document"

    def __init__(self, docs: list[np.ndarray], eos: int, seq_len: int, batch_size: int, seed: int):
        self.docs, self.eos = docs, eos
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        total = sum(len(d) + 1 for d in docs)
        self.row_len = total // batch_size
        self.steps_per_epoch = (self.row_len - 1) // seq_len
        if self.steps_per_epoch < 1:
            raise ValueError(f"data: {total} tokens split into batch_size={batch_size} rows are shorter "
                             f"than seq_len+1={seq_len + 1}")
        self._rows_epoch, self._rows = -1, None

    def _rows_of(self, epoch: int) -> np.ndarray:
        if epoch != self._rows_epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.docs))
            stream = token_stream([self.docs[i] for i in order], self.eos)
            self._rows = stream[: self.row_len * self.batch_size].reshape(self.batch_size, self.row_len)
            self._rows_epoch = epoch
        return self._rows

    def starts_stream(self, index: int) -> bool:
        return index % self.steps_per_epoch == 0

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, k = divmod(index, self.steps_per_epoch)
        T = self.seq_len
        seq = torch.from_numpy(self._rows_of(epoch)[:, k * T: k * T + T + 1].astype(np.int64))
        return seq[:, :-1], seq[:, 1:].clone()


class PasskeyBatches:
    """PassKey examples of exactly ``seq_len + 1`` tokens (filler fills the rest), key at a random
    depth; targets only on the answer's tokens. Uses ``data/passkey.py``'s format."""

    mode = "packed"

    def __init__(self, tokenizer, seq_len: int, batch_size: int, seed: int, loss_on: str = "answer",
                 curriculum: int = 0):
        from . import passkey

        if loss_on not in ("answer", "all"):
            raise ValueError(f"passkey_loss={loss_on!r}: must be answer or all")
        self.loss_on = loss_on
        self.passkey, self.tokenizer = passkey, tokenizer
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.curriculum = curriculum
        self.shortest = shortest = len(passkey.make_passkey_example(0, passkey.KEY_MAX, 0.0, tokenizer)[0])
        if shortest > seq_len + 1:
            raise ValueError(f"seq_len={seq_len}: a PassKey example needs at least {shortest - 1} tokens "
                             f"with this tokenizer")

    def starts_stream(self, index: int) -> bool:
        return True

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pk, n = self.passkey, self.seq_len + 1
        if self.curriculum and index < self.curriculum:  # grow the examples linearly up to seq_len + 1
            n = self.shortest + 1 + (n - self.shortest - 1) * index // self.curriculum
        rng = random.Random(f"passkey-{self.seed}-{index}")
        rows, spans = [], []
        for _ in range(self.batch_size):
            key, depth = pk.random_key(rng), rng.random()
            bare = len(pk.make_passkey_example(0, key, depth, self.tokenizer)[0])
            ids, span = pk.make_passkey_example(n - bare, key, depth, self.tokenizer)
            if len(ids) != n:  # a tokenizer whose tokens merge across the parts of the example
                raise ValueError(f"passkey: example length {len(ids)} != seq_len+1={n} with this tokenizer")
            rows.append(ids)
            spans.append(span)
        seq = torch.tensor(rows, dtype=torch.long)
        if self.loss_on == "all":
            return seq[:, :-1], seq[:, 1:].clone()
        targets = torch.full((self.batch_size, n - 1), -100, dtype=torch.long)
        for r, (s, e) in enumerate(spans):
            targets[r, s - 1: e - 1] = seq[r, s:e]
        return seq[:, :-1], targets


def make_batches(data: str, tokenizer, mode: str, seq_len: int, batch_size: int, seed: int,
                 text_field: str = "text", passkey_loss: str = "answer", passkey_curriculum: int = 0):
    """The batcher for a recipe's ``data`` (comma-separated corpus names / paths, or ``passkey``)."""
    if data == "passkey":
        if mode != "packed":
            raise ValueError("batching: passkey examples are independent; use batching=packed")
        return PasskeyBatches(tokenizer, seq_len, batch_size, seed, passkey_loss, passkey_curriculum)
    from .corpora import read_documents

    texts = [doc for spec in data.split(",") if spec.strip() for doc in read_documents(spec.strip(), text_field)]
    docs = [encode(tokenizer, t) for t in texts if t]
    cls = {"packed": PackedBatches, "document": DocumentBatches}.get(mode)
    if cls is None:
        raise ValueError(f"batching={mode!r}: must be packed or document")
    return cls(docs, eos_id(tokenizer), seq_len, batch_size, seed)
