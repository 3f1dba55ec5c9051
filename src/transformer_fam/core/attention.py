"""Attention on q/k/v tensors: the windowed modes' backends and plain causal attention.

Everything here is a pure function of tensors. Shapes use B batch, H query heads, Hk key/value
heads, T new tokens, L block size, m memory segments, F FAM length, hd head dim, nb blocks.

``window_attention`` has two backends that give the same result (tests/test_attention.py):

- ``"sdpa"``, the reference: each block's key window [memory | FAM | current block] is gathered
  and one ``scaled_dot_product_attention`` call applies BlockPlan's mask. Any device, any dtype,
  differentiable.
- ``"cpu_split"``, CPU inference only (~20-40% faster there): each block's attention is split into
  its causal current block and its context (valid memory + FAM), merged through each part's
  log-sum-exp. It needs the log-sum-exp output of the private ATen op
  ``_scaled_dot_product_flash_attention_for_cpu``; where that op is missing, or autograd is on, or
  the call is not on a CPU, "auto" and "cpu_split" fall back to "sdpa".

Which backend ran is counted in ``backend_calls`` (a Counter, keyed by backend name).
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

from .config import BACKENDS
from .plan import BlockPlan

_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
backend_calls: Counter = Counter()


def choose_backend(requested: str, device: torch.device, needs_grad: bool, plan: BlockPlan) -> str:
    """The backend that runs for this call: "sdpa" or "cpu_split".

    ``requested`` is FamConfig.attention_backend. "cpu_split" (asked for, or chosen by "auto")
    runs only where it can: without autograd, on a CPU, with the private kernel present, for calls
    whose queries start at a block boundary; anything else takes the reference "sdpa".
    """
    if requested not in BACKENDS:
        raise ValueError(f"attention backend {requested!r}: choose from {', '.join(BACKENDS)}")
    if requested == "sdpa":
        return "sdpa"
    usable = _flash_cpu is not None and torch.device(device).type == "cpu" and not needs_grad \
        and plan.query_start == 0
    return "cpu_split" if usable else "sdpa"


def _flat(x: torch.Tensor) -> torch.Tensor:
    # (B, nb, h, S, hd) -> (B*nb, h, S, hd): 4-D inputs take SDPA's fused CPU kernel
    return x.reshape(-1, *x.shape[2:])


def _to_blocks(q: torch.Tensor, plan: BlockPlan) -> torch.Tensor:
    """Queries (B, H, T, hd) -> per touched block (B, nb, H, R, hd): one block keeps its T rows;
    several are zero-padded to whole blocks (the partial block's cached rows in front)."""
    B, H, T, hd = q.shape
    if plan.nb == 1:
        return q[:, None]
    L = plan.block_size
    return F.pad(q, (0, 0, plan.cached, plan.nb * L - plan.cached - T)).view(B, H, plan.nb, L, hd).transpose(1, 2)


def _from_blocks(out: torch.Tensor, plan: BlockPlan) -> torch.Tensor:
    """The inverse of ``_to_blocks`` for outputs: (B, nb, H, R, hd) -> (B, H, T, hd)."""
    if plan.nb == 1:
        return out[:, 0]
    B, nb, H, L, hd = out.shape
    return out.transpose(1, 2).reshape(B, H, nb * L, hd)[:, :, plan.cached: plan.cached + plan.new]


def window_attention(q: torch.Tensor, k_seq: torch.Tensor, v_seq: torch.Tensor,
                     fam_k: torch.Tensor | None, fam_v: torch.Tensor | None,
                     plan: BlockPlan, backend: str = "auto", fam_gate: torch.Tensor | None = None,
                     fam_readers: torch.Tensor | None = None) -> torch.Tensor:
    """Block sliding window attention, optionally with the previous FAM of each block (rules M2, M3).

    Args:
        q: (B, H, T, hd) queries of the new tokens.
        k_seq, v_seq: (B, Hk, m*L + nb*L, hd) memory blocks, then the touched blocks (partial
            cached tokens, new tokens, zero padding to a whole block).
        fam_k, fam_v: (B, Hk, nb, F, hd) keys/values of the FAM each touched block sees, or None.
        backend: "auto", "sdpa" or "cpu_split" (see ``choose_backend``).
        fam_gate: None (the paper: the FAM keys join the block's softmax), or (H,) gate values
            tanh(g): the read-gate option (O2), ``out = bswa(q) + fam_gate * softmax-read of the FAM``.
        fam_readers: None (every head reads the FAM), or (H,) bool: option O5, only these heads
            read it; the others' output is the BSWA one (with O2: their gate is held at 0).
    Returns:
        (B, H, T, hd)
    """
    if fam_readers is not None and fam_k is not None:
        if fam_gate is not None:  # O2 already splits the FAM read from the block's: close the others' gates
            return window_attention(q, k_seq, v_seq, fam_k, fam_v, plan, backend, fam_gate * fam_readers.to(fam_gate.dtype))
        bswa = window_attention(q, k_seq, v_seq, None, None, plan.without_fam, backend)
        if not fam_readers.any():
            return bswa
        with_fam = window_attention(q, k_seq, v_seq, fam_k, fam_v, plan, backend)
        return torch.where(fam_readers[None, :, None, None], with_fam, bswa)
    if fam_gate is not None and fam_k is not None:
        out = window_attention(q, k_seq, v_seq, None, None, plan.without_fam, backend)
        return out + fam_gate.to(out.dtype)[None, :, None, None] * fam_read(q, fam_k, fam_v, plan)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k_seq, v_seq, fam_k, fam_v))
    name = choose_backend(backend, q.device, needs_grad, plan)
    backend_calls[name] += 1
    if name == "cpu_split":
        return _window_attention_split(q, k_seq, v_seq, fam_k, fam_v, plan)
    return _window_attention_sdpa(q, k_seq, v_seq, fam_k, fam_v, plan)


def _window_attention_sdpa(q, k_seq, v_seq, fam_k, fam_v, plan: BlockPlan) -> torch.Tensor:
    """The reference backend: every block's key window gathered, one masked SDPA call."""
    B, H, T, hd = q.shape
    L, m, nb, R = plan.block_size, plan.mem_segments, plan.nb, plan.query_rows
    Hk = k_seq.shape[1]
    qb = _to_blocks(q, plan)  # (B, nb, H, R, hd)
    # windows of m+1 blocks, stepping one block: (B, Hk, nb, hd, (m+1)L) -> (B, nb, Hk, (m+1)L, hd)
    kw = k_seq.unfold(2, (m + 1) * L, L).permute(0, 2, 1, 4, 3)
    vw = v_seq.unfold(2, (m + 1) * L, L).permute(0, 2, 1, 4, 3)
    if fam_k is not None:
        # key order: memory (m*L), FAM (F), current block (L), matching plan.mask
        kw = torch.cat((kw[:, :, :, : m * L], fam_k.transpose(1, 2), kw[:, :, :, m * L:]), dim=3)
        vw = torch.cat((vw[:, :, :, : m * L], fam_v.transpose(1, 2), vw[:, :, :, m * L:]), dim=3)
    out = F.scaled_dot_product_attention(_flat(qb), _flat(kw), _flat(vw), attn_mask=plan.batch_mask(B),
                                         enable_gqa=H != Hk)
    return _from_blocks(out.view(B, nb, H, R, hd), plan)


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
    qb = _to_blocks(q, plan)  # (B, nb, H, R, hd)
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
    return _from_blocks(torch.cat(parts_out, dim=1), plan)


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
    qb = _to_blocks(q, plan)  # cached == 0 here: padding at the back only
    o2, l2 = _flash_cpu(_flat(qb), _flat(fam_k.transpose(1, 2)), _flat(fam_v.transpose(1, 2)))
    o2 = _from_blocks(o2.view(qb.shape), plan)
    l2 = l2.view(B, nb, H, R).transpose(1, 2).reshape(B, H, nb * R)[:, :, :T]
    return _merge(out, lse, o2, l2)


def fam_read(q: torch.Tensor, fam_k: torch.Tensor, fam_v: torch.Tensor, plan: BlockPlan) -> torch.Tensor:
    """The read-gate option's FAM read (O2): each new token attends to its block's FAM only, in a
    softmax of its own (no mask: the F vectors are all visible). q (B, H, T, hd); fam_k, fam_v
    (B, Hk, nb, F, hd). Returns (B, H, T, hd)."""
    qb = _to_blocks(q, plan)  # (B, nb, H, R, hd)
    out = F.scaled_dot_product_attention(_flat(qb), _flat(fam_k.transpose(1, 2)), _flat(fam_v.transpose(1, 2)),
                                         enable_gqa=q.shape[1] != fam_k.shape[1])
    return _from_blocks(out.view(qb.shape), plan)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tokens inside one block attending to a preallocated window (memory | FAM | current block so
    far); mask (T, S) bool, True = attend, dropped when it masks nothing."""
    backend_calls["decode"] += 1
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if bool(mask.all()) else mask,
                                          enable_gqa=q.shape[1] != k.shape[1])


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
