"""One layer's streaming state (docs/algorithm.md, rule S1): the window layout of the windowed
modes [memory | FAM | current block] and the methods that read and write it, so that model code
never slices offsets. FamCache (cache.py) holds one such state per layer."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class WindowLayout:
    """Where memory, FAM and current block sit in a layer's key/value window (the sequence axis)."""

    block_size: int  # L
    mem_segments: int  # m
    fam_length: int  # F (0 in bswa mode)

    @property
    def mem_len(self) -> int:
        return self.mem_segments * self.block_size

    @property
    def memory(self) -> slice:
        return slice(0, self.mem_len)

    @property
    def fam(self) -> slice:
        return slice(self.mem_len, self.mem_len + self.fam_length)

    @property
    def current_start(self) -> int:
        return self.mem_len + self.fam_length

    def current(self, n: int) -> slice:
        """The first n positions of the current block."""
        return slice(self.current_start, self.current_start + n)

    @property
    def size(self) -> int:
        return self.mem_len + self.fam_length + self.block_size


@dataclass
class FullState:
    """A full-mode layer's state: every key and value so far, (B, Hk, S, hd) with RoPE applied."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def map(self, fn) -> "FullState":
        return FullState(**{name: fn(t) for name, t in self.tensors().items()})

    def append(self, k: torch.Tensor, v: torch.Tensor) -> "FullState":
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        return FullState(k, v)


@dataclass
class WindowState:
    """A bswa / fam layer's state: the key/value window (B, Hk, layout.size, hd) and the FAM."""

    layout: WindowLayout
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    fam: torch.Tensor | None = None  # (B, F, d) FAM input of this layer for the current block
    fam_q: torch.Tensor | None = None  # (B, H, F, hd) its queries at its positions
    # option O6 (FamConfig.fam_read_shift): the keys/values the current block's queries read, (B, Hk, F, hd),
    # projected from the FAM of the layer below; None: they read this layer's own FAM (the window's FAM slots)
    fam_rk: torch.Tensor | None = None
    fam_rv: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in ("k", "v", "fam", "fam_q", "fam_rk", "fam_rv")
                if getattr(self, name) is not None}

    def map(self, fn) -> "WindowState":
        return WindowState(self.layout, **{name: fn(t) for name, t in self.tensors().items()})

    @classmethod
    def empty(cls, layout: WindowLayout, batch: int, kv_heads: int, head_dim: int, like: torch.Tensor):
        k = like.new_zeros(batch, kv_heads, layout.size, head_dim)
        return cls(layout, k, torch.zeros_like(k))

    # --------------------------------------------------------------- reading
    def memory_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of the m memory blocks (B, Hk, m*L, hd), oldest first."""
        s = self.layout.memory
        return self.k[:, :, s], self.v[:, :, s]

    def fam_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of this layer's own FAM (B, Hk, F, hd): what its FAM update attends to and,
        in the paper's form, what the current block reads."""
        s = self.layout.fam
        return self.k[:, :, s], self.v[:, :, s]

    def read_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of the FAM the current block reads (B, Hk, F, hd): the own FAM's, or with
        option O6 the ones projected from the layer below's FAM."""
        return self.fam_kv() if self.fam_rk is None else (self.fam_rk, self.fam_rv)

    def current_kv(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n cached positions of the current block (B, Hk, n, hd)."""
        s = self.layout.current(n)
        return self.k[:, :, s], self.v[:, :, s]

    def visible_kv(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory, FAM and the first n positions of the current block, as one view."""
        end = self.layout.current_start + n
        return self.k[:, :, :end], self.v[:, :, :end]

    # --------------------------------------------------------------- writing
    def with_fam(self, fam, fam_q, fam_k, fam_v, read_kv=(None, None)) -> "WindowState":
        """A copy whose FAM (and the FAM keys/values in the window) are replaced (autograd-safe);
        read_kv: what the next block reads instead (option O6), or (None, None): the own FAM."""
        s = self.layout.fam

        def put(w, part):
            return torch.cat((w[:, :, : s.start], part, w[:, :, s.stop:]), dim=2)

        return WindowState(self.layout, put(self.k, fam_k), put(self.v, fam_v), fam, fam_q, *read_kv)

    @torch.no_grad()
    def write_current_(self, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write new tokens' keys/values into the current block at ``start`` (in place)."""
        s = slice(self.layout.current_start + start, self.layout.current_start + start + k.shape[2])
        self.k[:, :, s] = k
        self.v[:, :, s] = v

    @torch.no_grad()
    def complete_block_(self, fam=None, fam_q=None, fam_k=None, fam_v=None) -> None:
        """The current block is complete: it becomes the newest memory block (the ring moves by
        one), and the FAM it produced (fam mode) replaces the old one; in place."""
        lay, L = self.layout, self.layout.block_size
        mL, cur = lay.mem_len, lay.current_start
        for w, f_new in ((self.k, fam_k), (self.v, fam_v)):
            if mL:
                w[:, :, : mL - L] = w[:, :, L: mL].clone()
                w[:, :, mL - L: mL] = w[:, :, cur: cur + L]
            if f_new is not None:
                w[:, :, lay.fam] = f_new
        if fam is not None:
            self.fam, self.fam_q = fam, fam_q

    @classmethod
    def from_sequence(cls, layout: WindowLayout, k_seq, v_seq, fam_k, fam_v, done: int, cached_after: int,
                      fam=None, fam_q=None, read_kv=(None, None)) -> "WindowState":
        """The window after a call that touched several blocks (autograd-safe).

        k_seq, v_seq: (B, Hk, m*L + nb*L, hd) the memory before the call, then the touched blocks;
        done: tokens of complete blocks in the touched part (n_complete * L); cached_after: tokens
        of the new partial block; fam_k, fam_v: the own FAM's keys/values for the next block;
        read_kv: what the next block reads instead (option O6), or (None, None).
        """
        mL, L = layout.mem_len, layout.block_size

        def window(seq, fam_part):
            parts = [seq[:, :, done: done + mL]]
            if fam_part is not None:
                parts.append(fam_part)
            parts += [seq[:, :, mL + done: mL + done + cached_after],
                      seq.new_zeros(*seq.shape[:2], L - cached_after, seq.shape[3])]
            return torch.cat(parts, dim=2)

        return cls(layout, window(k_seq, fam_k), window(v_seq, fam_v), fam, fam_q, *read_kv)


LayerState = FullState | WindowState
