"""BlockPlan: how the new tokens of one forward call fall onto the block grid, and the mask
of the windowed modes (docs/algorithm.md, rules M2-M3)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass
class BlockPlan:
    """Where the T new tokens of a call sit relative to the block grid (shared by all layers).

    The call continues a stream whose current partial block already holds ``cached`` tokens.
    Touched blocks ``0..nb-1`` (local numbering) start at that partial block; the first
    ``n_complete`` of them are complete after this call and get a FAM update.
    """

    block_size: int
    mem_segments: int
    fam_length: int  # 0 in bswa mode (no FAM columns in the mask)
    cached: int  # tokens of the partial block held in the cache (0 <= cached < L)
    new: int  # T
    mem_valid: int  # how many of the m memory slots hold real blocks before local block 0
    nb: int
    n_complete: int
    query_rows: int  # query rows per block in the attention (L, or T when nb == 1)
    query_start: int  # row of the first new token inside block 0
    device: torch.device

    @classmethod
    def make(cls, block_size: int, mem_segments: int, fam_length: int, cached: int, new: int,
             mem_valid: int, device) -> "BlockPlan":
        L = block_size
        nb = -(-(cached + new) // L)
        query_rows, query_start = (new, cached) if nb == 1 else (L, 0)
        return cls(L, mem_segments, fam_length, cached, new, mem_valid, nb, (cached + new) // L,
                   query_rows, query_start, torch.device(device))

    @cached_property
    def mask(self) -> torch.Tensor:
        """(nb, 1, query_rows, m*L + F + L) bool, True = attend. Built on first use only: the
        inference prefill path needs no mask."""
        L, m, Fl, nb, R, dev = (self.block_size, self.mem_segments, self.fam_length, self.nb, self.query_rows,
                                self.device)
        # Query row r of local block i has in-block index qi = r + query_start (block 0 only
        # when nb == 1). Keys: m*L memory (slot s holds the block i-m+s), F FAM, L current.
        rows = torch.arange(R, device=dev) + self.query_start  # (R,)
        cur = torch.arange(L, device=dev)
        block = torch.arange(nb, device=dev)
        valid_len = torch.clamp(self.cached + self.new - block * L, max=L)  # keys present per block
        cur_ok = (cur[None, None, :] <= rows[None, :, None]) & (cur[None, None, :] < valid_len[:, None, None])
        slot = torch.arange(m, device=dev)
        mem_ok = (block[:, None] - m + slot[None, :]) >= -self.mem_valid  # (nb, m)
        mem_ok = mem_ok[:, :, None].expand(nb, m, L).reshape(nb, 1, m * L).expand(nb, R, m * L)
        fam_ok = torch.ones(nb, R, Fl, dtype=torch.bool, device=dev)
        return torch.cat((mem_ok, fam_ok, cur_ok.expand(nb, R, L)), dim=-1)[:, None]

    def batch_mask(self, batch: int) -> torch.Tensor:
        """The mask repeated for B rows, (B*nb, 1, R, S); built once per call, shared by layers."""
        if batch not in self._batch_masks:
            m = self.mask
            self._batch_masks[batch] = m[None].expand(batch, *m.shape).reshape(batch * self.nb, *m.shape[1:])
        return self._batch_masks[batch]

    @cached_property
    def _batch_masks(self) -> dict:
        return {}

    @cached_property
    def without_fam(self) -> "BlockPlan":
        """The same plan with no FAM columns (the token part of the read-gate option, O2); built
        once per call, shared by the layers."""
        return dataclasses.replace(self, fam_length=0)
