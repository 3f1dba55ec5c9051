"""The attention patterns on q/k/v tensors: RoPE, causal, block windows, the FAM update.

Everything here is a pure function of tensors. Shapes use B batch, H query heads, Hk key/value
heads, T new tokens, L block size, m memory segments, F FAM length, hd head dim, nb blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# RoPE with exact positions
# ----------------------------------------------------------------------------------------------
def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,) in float64, with optional linear / llama3 scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim))
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":  # Llama 3.1 wavelength-dependent interpolation
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, sin of shape (*positions.shape, hd) for integer positions.

    Angles are formed and reduced modulo 2*pi in float64, so a block's rotation is as exact at
    position 10M as at 0 (float32 angles lose ~0.06 rad there).
    """
    angles = positions.to(torch.float64).unsqueeze(-1) * inv_freq.to(positions.device)
    angles = torch.remainder(angles, 2 * math.pi)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, hd) by cos/sin (T, hd) (Llama's rotate-half convention)."""
    # x * cos + rotate_half(x) * sin, written as two half-width fused multiply-adds into one
    # output: no rotated copy, ~4x less memory traffic on CPU (autograd-safe: out is fresh)
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


# ----------------------------------------------------------------------------------------------
# Block plan: how the new tokens of one call fall into blocks
# ----------------------------------------------------------------------------------------------
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


def _flat(x: torch.Tensor) -> torch.Tensor:
    # (B, nb, h, S, hd) -> (B*nb, h, S, hd): 4-D inputs take SDPA's fused CPU kernel
    return x.reshape(-1, *x.shape[2:])


def window_attention(q: torch.Tensor, k_seq: torch.Tensor, v_seq: torch.Tensor,
                     fam_k: torch.Tensor | None, fam_v: torch.Tensor | None,
                     plan: BlockPlan) -> torch.Tensor:
    """Block sliding window attention, optionally with the previous FAM of each block.

    Args:
        q: (B, H, T, hd) queries of the new tokens.
        k_seq, v_seq: (B, Hk, m*L + nb*L, hd) memory blocks, then the touched blocks (partial
            cached tokens, new tokens, zero padding to a whole block).
        fam_k, fam_v: (B, Hk, nb, F, hd) keys/values of the FAM each touched block sees, or None.
    Returns:
        (B, H, T, hd)
    """
    B, H, T, hd = q.shape
    L, m, nb, R = plan.block_size, plan.mem_segments, plan.nb, plan.query_rows
    Hk = k_seq.shape[1]
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k_seq, v_seq, fam_k, fam_v))
    if not needs_grad and plan.query_start == 0 and q.device.type == "cpu":
        return _window_attention_split(q, k_seq, v_seq, fam_k, fam_v, plan)
    if nb == 1:
        qb = q[:, :, None]  # (B, H, 1, T, hd)
    else:
        pad_front, pad_back = plan.cached, nb * L - plan.cached - T
        qb = F.pad(q, (0, 0, pad_front, pad_back)).view(B, H, nb, L, hd)
    qb = qb.transpose(1, 2)  # (B, nb, H, R, hd)
    # windows of m+1 blocks, stepping one block: (B, Hk, nb, hd, (m+1)L) -> (B, nb, Hk, (m+1)L, hd)
    kw = k_seq.unfold(2, (m + 1) * L, L).permute(0, 2, 1, 4, 3)
    vw = v_seq.unfold(2, (m + 1) * L, L).permute(0, 2, 1, 4, 3)
    if fam_k is not None:
        # key order: memory (m*L), FAM (F), current block (L), matching plan.mask
        kw = torch.cat((kw[:, :, :, : m * L], fam_k.transpose(1, 2), kw[:, :, :, m * L:]), dim=3)
        vw = torch.cat((vw[:, :, :, : m * L], fam_v.transpose(1, 2), vw[:, :, :, m * L:]), dim=3)
    out = F.scaled_dot_product_attention(_flat(qb), _flat(kw), _flat(vw), attn_mask=plan.batch_mask(B),
                                         enable_gqa=H != Hk)
    out = out.view(B, nb, H, R, hd).transpose(1, 2)  # (B, H, nb, R, hd)
    if nb == 1:
        return out[:, :, 0]
    return out.reshape(B, H, nb * L, hd)[:, :, plan.cached: plan.cached + T]


_flash_cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _window_attention_split(q, k_seq, v_seq, fam_k, fam_v, plan: BlockPlan) -> torch.Tensor:
    """Inference path of window_attention without a mask (same result, ~20-40% faster on CPU).

    Each block's attention is split into its causal current block (the fused kernel's
    ``is_causal``) and its context (valid memory blocks + FAM, no mask), merged through the
    log-sum-exp of each part. Memory slots the stream has not filled yet are not computed at
    all. The kernel's log-sum-exp output has no gradient, hence inference only.
    """
    B, H, T, hd = q.shape
    L, m, nb, R = plan.block_size, plan.mem_segments, plan.nb, plan.query_rows
    mL = m * L
    if plan.cached == 0 and plan.mem_valid == 0 and nb <= m + 1:
        return _fresh_short_attention(q, k_seq[:, :, mL: mL + T], v_seq[:, :, mL: mL + T], fam_k, fam_v, plan)
    if nb == 1:
        qb = q[:, :, None]
    else:
        qb = F.pad(q, (0, 0, plan.cached, nb * L - plan.cached - T)).view(B, H, nb, L, hd)
    qb = qb.transpose(1, 2)  # (B, nb, H, R, hd)
    kw = k_seq.unfold(2, (m + 1) * L, L).permute(0, 2, 1, 4, 3)  # (B, nb, Hk, (m+1)L, hd)
    vw = v_seq.unfold(2, (m + 1) * L, L).permute(0, 2, 1, 4, 3)
    out, lse = _flash_cpu(_flat(qb), _flat(kw[:, :, :, mL: mL + R]), _flat(vw[:, :, :, mL: mL + R]),
                          is_causal=True)
    out, lse = out.view(B, nb, H, R, hd), lse.view(B, nb, H, R)
    # blocks before the memory ring is full see fewer memory slots; the rest see all m
    first_full = max(0, m - plan.mem_valid)
    groups = [(i, i + 1, plan.mem_valid + i) for i in range(min(first_full, nb))]
    if first_full < nb:
        groups.append((first_full, nb, m))
    parts_out = []
    for a, b, g in groups:
        ks, vs = [kw[:, a:b, :, mL - g * L: mL]], [vw[:, a:b, :, mL - g * L: mL]]
        if fam_k is not None:
            ks.append(fam_k[:, :, a:b].transpose(1, 2))
            vs.append(fam_v[:, :, a:b].transpose(1, 2))
        o1, l1 = out[:, a:b], lse[:, a:b]
        if sum(k.shape[3] for k in ks) > 0:
            o2, l2 = _flash_cpu(_flat(qb[:, a:b]), _flat(torch.cat(ks, 3)), _flat(torch.cat(vs, 3)))
            o1 = _merge(o1, l1, o2.view(o1.shape), l2.view(l1.shape))
        parts_out.append(o1)
    out = torch.cat(parts_out, dim=1).transpose(1, 2)  # (B, H, nb, R, hd)
    if nb == 1:
        return out[:, :, 0]
    return out.reshape(B, H, nb * L, hd)[:, :, plan.cached: plan.cached + T]


def _merge(o1, l1, o2, l2):
    """Softmax over the union of two key sets from each part's output and log-sum-exp (in place
    into o1 and o2)."""
    lse_all = torch.logaddexp(l1, l2)
    w1, w2 = (torch.exp(part - lse_all)[..., None].to(o1.dtype) for part in (l1, l2))
    return o1.mul_(w1).add_(o2.mul_(w2))  # inference only: both outputs are fresh kernel results


def _fresh_short_attention(q, k, v, fam_k, fam_v, plan: BlockPlan) -> torch.Tensor:
    """A stream's first call spanning at most m+1 blocks: every block sees all earlier blocks of
    the call, so the token part is one causal pass over the T tokens (as full attention); in fam
    mode each block's FAM keys are merged in by log-sum-exp. k, v: (B, Hk, T, hd)."""
    out, lse = _flash_cpu(q, k, v, is_causal=True)
    if fam_k is None:
        return out
    B, H, T, hd = q.shape
    nb, L = plan.nb, plan.block_size
    R = plan.query_rows if nb == 1 else L
    qb = (q if nb == 1 else F.pad(q, (0, 0, 0, nb * L - T))).view(B, H, nb, R, hd).transpose(1, 2)
    o2, l2 = _flash_cpu(_flat(qb), _flat(fam_k.transpose(1, 2)), _flat(fam_v.transpose(1, 2)))
    o2 = o2.view(B, nb, H, R, hd).transpose(1, 2).reshape(B, H, nb * R, hd)[:, :, :T]
    l2 = l2.view(B, nb, H, R).transpose(1, 2).reshape(B, H, nb * R)[:, :, :T]
    return _merge(out, lse, o2, l2)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain causal attention of the last T = q.shape[2] positions of k/v (full mode).

    q: (B, H, T, hd); k, v: (B, Hk, P + T, hd) with P positions cached before the queries.
    """
    T, S = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if S == T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if T == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    rows = torch.arange(T, device=q.device)[:, None] + (S - T)
    mask = torch.arange(S, device=q.device)[None, :] <= rows
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
