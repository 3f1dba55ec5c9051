"""The decoder layer and its parts: RMSNorm, SwiGLU MLP, attention projections, and the per-layer
schedule of docs/algorithm.md (rules M1-M3, F1-F6, X1).

Each layer runs its projections, attention and FFN for all new tokens at once; the only loop
over blocks is the FAM scan, which touches F vectors per block. Parameter names are Hugging
Face Llama's, so a Llama state dict loads unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .attention import causal_attention, decode_attention, window_attention
from .state import LayerState, WindowState
from .config import FamConfig
from .plan import BlockPlan
from .rope import apply_rope


class FamRMSNorm(nn.Module):
    """RMSNorm computed in float32, as Hugging Face Llama does."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        if not _grad_needed(x, self.weight):  # inference: no second temporary
            return x.to(dtype).mul_(self.weight)
        return self.weight * x.to(dtype)


def _grad_needed(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def cap_rms(x: torch.Tensor, max_rms: float) -> torch.Tensor:
    """Scale each vector (last dim) down to RMS ``max_rms`` if it is above (computed in float32)."""
    rms = x.float().pow(2).mean(-1, keepdim=True).sqrt()
    return x * (max_rms / rms).clamp(max=1.0).to(x.dtype)


def center_slots(fam: torch.Tensor) -> torch.Tensor:
    """FAM vectors (..., F, d) minus their mean over the F slots: what the readers see under
    option O3 (FamConfig.fam_center)."""
    return fam - fam.mean(dim=-2, keepdim=True)


class FamWriteGate(nn.Module):
    """Option O4 (FamConfig.fam_write_gate): scales each FAM increment u (..., F, d) by its own
    gate z = 2 sigmoid(w . u / rms(u) + c), computed in float32. w = c = 0 at initialisation
    (z = 1: the paper's update); a gate near 0 leaves its FAM vector unchanged."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, dim))
        self.bias = nn.Parameter(torch.zeros(1))

    def gate(self, u: torch.Tensor) -> torch.Tensor:
        """z (..., F, 1) for the increments u (..., F, d), float32."""
        u = u.float()
        n = u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-12)
        return 2.0 * torch.sigmoid(F.linear(n, self.weight.float(), self.bias.float()))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.gate(u).to(u.dtype)


class FamMLP(nn.Module):
    def __init__(self, config: FamConfig):
        super().__init__()
        d, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, f, bias=bias)
        self.up_proj = nn.Linear(d, f, bias=bias)
        self.down_proj = nn.Linear(f, d, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]
        self._silu = config.hidden_act in ("silu", "swish")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        if not _grad_needed(gate, up) and self._silu:
            # inference: activation and product in place (large CPU temporaries cost page faults)
            return self.down_proj(F.silu(gate, inplace=True).mul_(up))
        return self.down_proj(self.act_fn(gate) * up)


class FamAttention(nn.Module):
    """Llama attention projections (+ optional Qwen3 q/k norm); the pattern lives in attention.py."""

    def __init__(self, config: FamConfig):
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        qkv_bias = config.attention_bias or config.qkv_bias
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=config.attention_bias)
        if config.qk_norm:
            self.q_norm = FamRMSNorm(hd, config.rms_norm_eps)
            self.k_norm = FamRMSNorm(hd, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        if config.attention_mode == "fam" and config.fam_read_gate:
            # the read-gate option (O2): per-head g, block queries add tanh(g) * (their FAM read); 0 = BSWA
            self.fam_gate = nn.Parameter(torch.zeros(self.num_heads))
        else:
            self.fam_gate = None

    def read_gate(self) -> torch.Tensor | None:
        """tanh(g) per head (the read-gate option), or None (the paper's joint softmax)."""
        return None if self.fam_gate is None else torch.tanh(self.fam_gate)

    def project(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """h (B, T, d) -> q (B, H, T, hd), k, v (B, Hk, T, hd), RoPE applied to q and k."""
        B, T, _ = h.shape
        q = self.q_proj(h).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(h).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(h).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        return q, k, v.transpose(1, 2)

    def merge(self, o: torch.Tensor) -> torch.Tensor:
        """(B, H, T, hd) attention output -> (B, T, d) through o_proj."""
        B, H, T, hd = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * hd))


@dataclass
class StepContext:
    """What every layer of one forward call shares: the block plan and the rotations."""

    mode: str
    cos: torch.Tensor  # (T, hd) rotations of the new tokens
    sin: torch.Tensor
    plan: BlockPlan | None = None  # bswa / fam
    fam_cos: torch.Tensor | None = None  # (n_complete, F, hd): positions of each FAM produced
    fam_sin: torch.Tensor | None = None
    zero_residual: bool = False  # the first FAM update starts from the learned prompt
    need_state: bool = True  # False: nobody reads the cache after this call (no final FAM update)
    backend: str = "auto"  # window_attention backend (FamConfig.attention_backend)
    # option O6 (fam_read_shift): layer index -> that layer's FAMs after each block this call updated,
    # for the layer above to read
    fams: dict = field(default_factory=dict)


class FamDecoderLayer(nn.Module):
    def __init__(self, config: FamConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.config = config  # read at run time: fam_max_rms / fam_center may be changed on a built model
        self.self_attn = FamAttention(config)
        self.mlp = FamMLP(config)
        self.input_layernorm = FamRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = FamRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.compile_fam_update = False  # a run-time switch (compile_fam_scan), not part of the model's config
        if config.attention_mode == "fam" and config.fam_write_gate:
            # the write-gate option (O4): z = 2 sigmoid(w . u/rms(u) + c) scales each FAM increment u; 0 = paper
            self.fam_write_gate = FamWriteGate(config.hidden_size)
        else:
            self.fam_write_gate = None

    def _ffn_residual(self, a: torch.Tensor) -> torch.Tensor:
        return a + self.mlp(self.post_attention_layernorm(a))

    def fam_projections(self, fam: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """QKV of Norm1(FAM) at the FAM's positions (same weights as the tokens); with the
        fam_center option (O3) of Norm1(FAM - its mean over the F vectors)."""
        if self.config.fam_center:
            fam = center_slots(fam)
        return self.self_attn.project(self.input_layernorm(fam), cos, sin)

    def carried_fam(self, fam: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """QKV of a FAM carried in from an earlier step (RSP). Called outside this layer's forward
        only, so that FSDP2 can gather the weights for it (register_fsdp_forward_method)."""
        return self.fam_projections(fam, cos, sin)

    def initial_fam(self, prompt_in: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Carry the learned prompt through this layer on its own (rule F4).

        prompt_in: (1, F, d), this layer's initial FAM. The F vectors attend to each other
        bidirectionally. Returns (next layer's initial FAM, (q, k, v) of prompt_in).
        """
        q, k, v = self.fam_projections(prompt_in, cos, sin)
        a = prompt_in + self.self_attn.merge(
            F.scaled_dot_product_attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1]))
        return self._ffn_residual(a), (q, k, v)

    def forward(self, x: torch.Tensor, state: LayerState, ctx: StepContext):
        """x (B, T, d) -> (B, T, d), and this layer's new state."""
        q, k, v = self.self_attn.project(self.input_layernorm(x), ctx.cos, ctx.sin)
        if ctx.mode == "full":
            new_state = state.append(k, v)
            o = causal_attention(q, new_state.k, new_state.v)
        else:
            o, new_state = self._windowed(q, k, v, state, ctx)
        a = x + self.self_attn.merge(o)
        return self._ffn_residual(a), new_state

    def _fam_update(self, fam, fq, kv_k, kv_v, residual: bool, cos, sin):
        """One FAM update (Algorithm 2): the F queries attend to [previous FAM ; whole block],
        then the same layer's FFN. kv_k/kv_v: (B, Hk, F + L, hd). Returns the new FAM and its QKV.
        With ``compile_fam_scan`` on, the torch.compile'd form of the same function."""
        if self.compile_fam_update:
            return _compiled_fam_update()(self, fam, fq, kv_k, kv_v, residual, cos, sin)
        return self._fam_update_eager(fam, fq, kv_k, kv_v, residual, cos, sin)

    def _fam_update_eager(self, fam, fq, kv_k, kv_v, residual: bool, cos, sin):
        att = F.scaled_dot_product_attention(fq, kv_k, kv_v, enable_gqa=fq.shape[1] != kv_k.shape[1])
        a = self.self_attn.merge(att)  # (B, F, d)
        if residual and self.fam_write_gate is not None:
            fam = fam + self.fam_write_gate(self._ffn_residual(a + fam) - fam)
        else:
            fam = self._ffn_residual(a + fam if residual else a)
        if self.config.fam_max_rms is not None:
            fam = cap_rms(fam, self.config.fam_max_rms)
        return (fam, *self.fam_projections(fam, cos, sin))

    def _windowed(self, q, k, v, state: WindowState, ctx: StepContext):
        plan = ctx.plan
        L, mL, nb, T, c = plan.block_size, state.layout.mem_len, plan.nb, plan.new, plan.cached
        shift = ctx.mode == "fam" and self.config.fam_read_shift
        if nb == 1 and not torch.is_grad_enabled() and not state.k.requires_grad and not shift:
            return self._decode_in_place(q, k, v, state, ctx)
        pad = nb * L - c - T
        mem_k, mem_v = state.memory_kv()
        cur_k, cur_v = state.current_kv(c)
        # (B, Hk, mL + nb*L, hd): memory blocks, then the touched blocks zero-padded
        k_seq = torch.cat((mem_k, cur_k, F.pad(k, (0, 0, 0, pad))), dim=2)
        v_seq = torch.cat((mem_v, cur_v, F.pad(v, (0, 0, 0, pad))), dim=2)
        fam_k = fam_v = None
        fam, fq = state.fam, state.fam_q
        fk, fv = state.fam_kv()
        read_kv = (state.fam_rk, state.fam_rv)
        if ctx.mode == "fam":
            ks, vs, fams = [fk], [fv], []
            # the FAM scan: F queries per block (the update after the last block only feeds the state)
            for i in range(plan.n_complete if ctx.need_state else min(plan.n_complete, nb - 1)):
                blk = slice(mL + i * L, mL + (i + 1) * L)
                fam, fq, fk, fv = self._fam_update(
                    fam, fq, torch.cat((fk, k_seq[:, :, blk]), 2), torch.cat((fv, v_seq[:, :, blk]), 2),
                    not (ctx.zero_residual and i == 0), ctx.fam_cos[i], ctx.fam_sin[i])
                ks.append(fk)
                vs.append(fv)
                fams.append(fam)
            if shift:
                ks, vs = self._shifted_reads(state, ctx, fams, ks, vs)
                if plan.n_complete and ctx.need_state and self.layer_idx > 0:
                    read_kv = (ks[plan.n_complete], vs[plan.n_complete])
            fam_k = torch.stack(ks[:nb], dim=2)  # (B, Hk, nb, F, hd): FAM seen by each block
            fam_v = torch.stack(vs[:nb], dim=2)
        o = window_attention(q, k_seq, v_seq, fam_k, fam_v, plan, ctx.backend, self.self_attn.read_gate(),
                             None if fam_k is None else self._readers(q.device))
        if self._skips_initial_read(ctx):  # option O7: the block reading the initial FAM is read as in BSWA
            n0 = min(T, L - c)  # the new tokens of touched block 0
            first = BlockPlan.make(L, plan.mem_segments, 0, c, n0, plan.mem_valid, q.device)
            o0 = window_attention(q[:, :, :n0], k_seq[:, :, : mL + L], v_seq[:, :, : mL + L], None, None, first,
                                  ctx.backend)
            o = o0 if n0 == T else torch.cat((o0, o[:, :, n0:]), dim=2)
        if not ctx.need_state:
            return o, WindowState(state.layout)
        done = plan.n_complete * L
        return o, WindowState.from_sequence(state.layout, k_seq, v_seq, fk, fv, done, c + T - done, fam, fq,
                                            read_kv if shift else (None, None))

    def _shifted_reads(self, state: WindowState, ctx: StepContext, fams: list, ks: list, vs: list):
        """Option O6: the keys/values each block of this call reads, [the state's, then one per
        completed block]: this layer's projections of the layer below's FAM after that block, at the
        FAM's positions. Records this layer's own FAMs for the layer above. Layer 0 reads its own."""
        ctx.fams[self.layer_idx] = fams
        if self.layer_idx == 0:
            return ks, vs
        below = ctx.fams[self.layer_idx - 1]  # the layer below ran first in this call
        reads = [state.read_kv()] + [self.fam_projections(f, ctx.fam_cos[i], ctx.fam_sin[i])[1:]
                                     for i, f in enumerate(below)]
        return [k for k, _ in reads], [v for _, v in reads]

    def _skips_initial_read(self, ctx: StepContext) -> bool:
        """Option O7 (FamConfig.fam_skip_initial_read): this call's first touched block reads the
        initial FAM (the stream starts here or was reset) and must not. Read at run time."""
        return ctx.mode == "fam" and ctx.zero_residual and self.config.fam_skip_initial_read

    def _readers(self, device) -> torch.Tensor | None:
        """Option O5 (FamConfig.fam_read_heads): a (H,) bool of this layer's query heads that read
        the FAM, or None when all do (the paper). Read from the config at run time."""
        heads = self.config.fam_readers(self.layer_idx)
        if heads is None:
            return None
        key = (tuple(heads), torch.device(device))
        if getattr(self, "_readers_cache", (None,))[0] != key:  # built once, not on every forward
            readers = torch.zeros(self.self_attn.num_heads, dtype=torch.bool, device=device)
            readers[heads] = True
            self._readers_cache = (key, readers)
        return self._readers_cache[1]

    @torch.no_grad()
    def _decode_in_place(self, q, k, v, state: WindowState, ctx: StepContext):
        """New tokens that stay inside one block, without autograd: write them into the
        preallocated window and attend to it directly (no copies of the memory)."""
        plan = ctx.plan
        L, c, T = plan.block_size, plan.cached, plan.new
        state.write_current_(c, k, v)
        keys, values = state.visible_kv(c + T)
        mask = plan.mask[0, 0, :, : keys.shape[2]]  # (T, keys): memory slots not yet filled, causal rows
        reads = ctx.mode == "fam" and not self._skips_initial_read(ctx)
        gate = self.self_attn.read_gate() if reads else None
        readers = self._readers(q.device) if reads else None
        if ctx.mode == "fam" and not reads:  # option O7: the initial FAM's columns are not read
            mask = mask.clone()
            mask[:, state.layout.fam] = False
        elif gate is not None:  # read-gate option (O2): the FAM columns leave this softmax, read on their own
            mask = mask.clone()
            mask[:, state.layout.fam] = False
            if readers is not None:  # with O5 the other heads' gate is held at 0
                gate = gate * readers.to(gate.dtype)
        elif readers is not None:  # option O5: heads that do not read the FAM lose its columns
            mask = mask[None].repeat(len(readers), 1, 1)
            mask[~readers, :, state.layout.fam] = False
        o = decode_attention(q, keys, values, mask)
        if gate is not None:
            fk, fv = state.fam_kv()
            o = o + gate.to(o.dtype)[None, :, None, None] * F.scaled_dot_product_attention(
                q, fk, fv, enable_gqa=q.shape[1] != fk.shape[1])
        if c + T < L:
            return o, state
        if ctx.mode == "fam":
            fk, fv = state.fam_kv()
            cur_k, cur_v = state.current_kv(L)
            state.complete_block_(*self._fam_update(state.fam, state.fam_q, torch.cat((fk, cur_k), 2),
                                                    torch.cat((fv, cur_v), 2), not ctx.zero_residual,
                                                    ctx.fam_cos[0], ctx.fam_sin[0]))
        else:
            state.complete_block_()
        return o, state


@functools.cache
def _compiled_fam_update():
    """``FamDecoderLayer._fam_update_eager`` under torch.compile, built once and shared by every layer
    (the layer is an argument: its weights are graph inputs, so the layers of a model reuse one graph)."""
    return torch.compile(FamDecoderLayer._fam_update_eager, dynamic=False)


def compile_fam_scan(model: nn.Module, on: bool = True) -> int:
    """Run the FAM update of every layer of ``model`` (a FamForCausalLM, also inside a peft wrapper)
    through torch.compile, or back in eager mode. Not the paper's concern, only speed: the FAM scan
    is a loop of blocks x layers of small steps (launch-bound on a GPU); compiled, each step is a few
    fused kernels. The first call of each shape compiles (tens of seconds); results equal eager mode's
    to float rounding. Returns how many layers were switched."""
    layers = [m for m in model.modules() if isinstance(m, FamDecoderLayer)]
    for layer in layers:
        layer.compile_fam_update = bool(on)
    return len(layers)
