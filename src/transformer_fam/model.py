"""FamDecoderLayer, FamModel, FamForCausalLM: the layer-wise schedule of FAM_SPEC §9.

Each layer runs its projections, attention and FFN for all new tokens at once; the only loop
over blocks is the FAM scan, which touches F vectors per block. Parameter names are Hugging
Face Llama's, so a Llama state dict loads unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from .attention import BlockPlan, apply_rope, causal_attention, rope_cos_sin, rope_inv_freq, window_attention
from .cache import FamCache, LayerState
from .config import FamConfig
from .generation import FamGenerationMixin


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


class FamDecoderLayer(nn.Module):
    def __init__(self, config: FamConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.config = config  # read at run time: fam_max_rms may be changed on a built model
        self.self_attn = FamAttention(config)
        self.mlp = FamMLP(config)
        self.input_layernorm = FamRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = FamRMSNorm(config.hidden_size, config.rms_norm_eps)

    def _ffn_residual(self, a: torch.Tensor) -> torch.Tensor:
        return a + self.mlp(self.post_attention_layernorm(a))

    def fam_projections(self, fam: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """QKV of Norm1(FAM) at the FAM's positions (same weights as the tokens)."""
        return self.self_attn.project(self.input_layernorm(fam), cos, sin)

    def carried_fam(self, fam: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """QKV of a FAM carried in from an earlier step (RSP). Called outside this layer's forward
        only, so that FSDP2 can gather the weights for it (register_fsdp_forward_method)."""
        return self.fam_projections(fam, cos, sin)

    def initial_fam(self, prompt_in: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Carry the learned prompt through this layer on its own (FAM_SPEC §4).

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
            if state.k is not None:
                k, v = torch.cat((state.k, k), dim=2), torch.cat((state.v, v), dim=2)
            o = causal_attention(q, k, v)
            new_state = LayerState(k=k, v=v)
        else:
            o, new_state = self._windowed(q, k, v, state, ctx)
        a = x + self.self_attn.merge(o)
        return self._ffn_residual(a), new_state

    def _fam_update(self, fam, fq, kv_k, kv_v, residual: bool, cos, sin):
        """One FAM update (Algorithm 2): the F queries attend to [previous FAM ; whole block],
        then the same layer's FFN. kv_k/kv_v: (B, Hk, F + L, hd). Returns the new FAM and its QKV."""
        att = F.scaled_dot_product_attention(fq, kv_k, kv_v, enable_gqa=fq.shape[1] != kv_k.shape[1])
        a = self.self_attn.merge(att)  # (B, F, d)
        fam = self._ffn_residual(a + fam if residual else a)
        if self.config.fam_max_rms is not None:
            fam = cap_rms(fam, self.config.fam_max_rms)
        return (fam, *self.fam_projections(fam, cos, sin))

    def _windowed(self, q, k, v, state: LayerState, ctx: StepContext):
        plan = ctx.plan
        L, mL, Fl, nb, T, c = (plan.block_size, plan.mem_segments * plan.block_size, plan.fam_length, plan.nb,
                               plan.new, plan.cached)
        if nb == 1 and not torch.is_grad_enabled() and not state.win_k.requires_grad:
            return self._decode_in_place(q, k, v, state, ctx)
        win_k, win_v = state.win_k, state.win_v  # (B, Hk, mL + F + L, hd): memory | FAM | current block
        pad = nb * L - c - T
        # (B, Hk, mL + nb*L, hd): memory blocks, then the touched blocks zero-padded
        k_seq = torch.cat((win_k[:, :, :mL], win_k[:, :, mL + Fl: mL + Fl + c], F.pad(k, (0, 0, 0, pad))), dim=2)
        v_seq = torch.cat((win_v[:, :, :mL], win_v[:, :, mL + Fl: mL + Fl + c], F.pad(v, (0, 0, 0, pad))), dim=2)
        fam_k = fam_v = None
        fam, fq, fk, fv = state.fam, state.fam_q, win_k[:, :, mL: mL + Fl], win_v[:, :, mL: mL + Fl]
        if ctx.mode == "fam":
            ks, vs = [fk], [fv]
            # the FAM scan: F queries per block (the update after the last block only feeds the state)
            for i in range(plan.n_complete if ctx.need_state else min(plan.n_complete, nb - 1)):
                blk = slice(mL + i * L, mL + (i + 1) * L)
                fam, fq, fk, fv = self._fam_update(
                    fam, fq, torch.cat((fk, k_seq[:, :, blk]), 2), torch.cat((fv, v_seq[:, :, blk]), 2),
                    not (ctx.zero_residual and i == 0), ctx.fam_cos[i], ctx.fam_sin[i])
                ks.append(fk)
                vs.append(fv)
            fam_k = torch.stack(ks[:nb], dim=2)  # (B, Hk, nb, F, hd): FAM seen by each block
            fam_v = torch.stack(vs[:nb], dim=2)
        o = window_attention(q, k_seq, v_seq, fam_k, fam_v, plan)
        if not ctx.need_state:
            return o, LayerState()
        done = plan.n_complete * L
        rest = L - (c + T - done)  # free rows of the new current block

        def window(seq, fam_part):
            return torch.cat((seq[:, :, done: done + mL], fam_part, seq[:, :, mL + done: mL + c + T],
                              seq.new_zeros(*seq.shape[:2], rest, seq.shape[3])), dim=2)

        return o, LayerState(win_k=window(k_seq, fk), win_v=window(v_seq, fv), fam=fam, fam_q=fq)

    @torch.no_grad()
    def _decode_in_place(self, q, k, v, state: LayerState, ctx: StepContext):
        """New tokens that stay inside one block, without autograd: write them into the
        preallocated window and attend to it directly (no copies of the memory)."""
        plan = ctx.plan
        L, mL, Fl, c, T = plan.block_size, plan.mem_segments * plan.block_size, plan.fam_length, plan.cached, plan.new
        win_k, win_v = state.win_k, state.win_v
        cur = mL + Fl
        win_k[:, :, cur + c: cur + c + T] = k
        win_v[:, :, cur + c: cur + c + T] = v
        mask = plan.mask[0, 0, :, : cur + c + T]  # (T, keys): memory slots not yet filled, causal rows
        o = F.scaled_dot_product_attention(q, win_k[:, :, : cur + c + T], win_v[:, :, : cur + c + T],
                                           attn_mask=None if bool(mask.all()) else mask,
                                           enable_gqa=q.shape[1] != win_k.shape[1])
        if c + T < L:
            return o, state
        fam, fq, fk, fv = state.fam, state.fam_q, None, None
        if ctx.mode == "fam":
            fam, fq, fk, fv = self._fam_update(fam, fq, win_k[:, :, mL:], win_v[:, :, mL:], not ctx.zero_residual,
                                               ctx.fam_cos[0], ctx.fam_sin[0])
        for w, f_new in ((win_k, fk), (win_v, fv)):
            if mL:  # the ring moves by one block: the completed block becomes the newest memory
                w[:, :, : mL - L] = w[:, :, L: mL].clone()
                w[:, :, mL - L: mL] = w[:, :, cur: cur + L]
            if f_new is not None:
                w[:, :, mL: cur] = f_new
        return o, LayerState(win_k=win_k, win_v=win_v, fam=fam, fam_q=fq)


class FamPreTrainedModel(PreTrainedModel):
    config_class = FamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FamDecoderLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, FamRMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, FamModel) and module.fam_prompt is not None:
            module.fam_prompt.normal_(0.0, std)


class FamModel(FamPreTrainedModel):
    """Embeddings, the decoder layers and the final norm. Returns hidden states and the cache."""

    def __init__(self, config: FamConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(FamDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = FamRMSNorm(config.hidden_size, config.rms_norm_eps)
        if config.attention_mode == "fam":
            # the learned initial FAM, at the token-embedding level (FAM_SPEC §4)
            self.fam_prompt = nn.Parameter(torch.zeros(config.fam_length, config.hidden_size))
        else:
            self.fam_prompt = None
        # a plain attribute, not a buffer: loading on the meta device would leave a buffer empty
        self._inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
        self.rsp_state: list[torch.Tensor] | None = None  # Random State Passing: FAM saved last step
        self._initial_cache: tuple | None = None  # (weights key, per-layer initial FAM), inference only
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def _rope(self, positions: torch.Tensor, dtype):
        return rope_cos_sin(positions, self._inv_freq, dtype)

    def _start_stream(self, cache: FamCache, x: torch.Tensor) -> list[torch.Tensor] | None:
        """Fill an empty cache's memory with zeros; returns a carried FAM when RSP picks one."""
        cfg, B = self.config, x.shape[0]
        hd, Hk = cfg.head_dim, cfg.num_key_value_heads
        if self.training and cfg.random_position_offset and cache.position_offset == 0:
            if torch.rand(()) >= 0.5:
                cache.position_offset = int(torch.randint(0, int(2 * math.pi * cfg.rope_theta), ()))
        for i in range(cfg.num_hidden_layers):
            if cfg.attention_mode == "full":
                cache.layers[i] = LayerState()
            else:  # memory | FAM | current block; unfilled memory slots are masked
                size = cfg.mem_segments * cfg.block_size + cache.fam_length + cfg.block_size
                cache.layers[i] = LayerState(win_k=x.new_zeros(B, Hk, size, hd), win_v=x.new_zeros(B, Hk, size, hd))
        cache.batch_size = B
        if (cfg.attention_mode == "fam" and self.training and cfg.rsp_prob > 0 and self.rsp_state is not None
                and torch.rand(()) < cfg.rsp_prob):
            return self.rsp_state
        return None

    def _context(self, cache: FamCache, T: int, dtype) -> StepContext:
        cfg, dev = self.config, self.embed_tokens.weight.device
        start = cache.seen_tokens + cache.position_offset
        cos, sin = self._rope(torch.arange(start, start + T, device=dev), dtype)
        ctx = StepContext(mode=cfg.attention_mode, cos=cos, sin=sin)
        if cfg.attention_mode == "full":
            return ctx
        L, Fl = cfg.block_size, cache.fam_length
        ctx.plan = BlockPlan.make(L, cfg.mem_segments, Fl, cache.cached_in_block, T, cache.mem_valid, dev)
        if cfg.attention_mode == "fam":
            first_block = cache.seen_tokens // L
            ends = (torch.arange(ctx.plan.n_complete, device=dev) + first_block + 1) * L + cache.position_offset
            ctx.fam_cos, ctx.fam_sin = self._rope(ends[:, None] - Fl + torch.arange(Fl, device=dev), dtype)
            ctx.zero_residual = cache.fam_is_initial
        return ctx

    def _init_fam_states(self, cache: FamCache, carried: list[torch.Tensor] | None, dtype) -> None:
        """Give every layer its FAM for block 0: the learned prompt carried through the layers
        (FAM_SPEC §4), or a FAM carried over from an earlier step (RSP)."""
        cfg, B = self.config, cache.batch_size
        Fl = cfg.fam_length
        positions = torch.arange(-Fl, 0, device=self.embed_tokens.weight.device) + cache.position_offset
        cos, sin = self._rope(positions, dtype)
        cache.fam_is_initial = carried is None
        initial = self._initial_fams(cos, sin, dtype, cache.position_offset) if carried is None else None
        for i, layer in enumerate(self.layers):
            if carried is None:
                fam, q, k, v = initial[i]
            else:
                fam = carried[i].to(dtype)
                q, k, v = layer.carried_fam(fam, cos, sin)
            st = cache.layers[i]
            mL = cfg.mem_segments * cfg.block_size
            st.fam, st.fam_q, k, v = (t.expand(B, *t.shape[1:]) for t in (fam, q, k, v))
            st.win_k = torch.cat((st.win_k[:, :, :mL], k, st.win_k[:, :, mL + Fl:]), dim=2)
            st.win_v = torch.cat((st.win_v[:, :, :mL], v, st.win_v[:, :, mL + Fl:]), dim=2)

    def _initial_fams(self, cos, sin, dtype, position_offset: int) -> list[tuple[torch.Tensor, ...]]:
        """Per layer (FAM, q, k, v) of the learned prompt carried through the layers. They depend
        on the weights only, so without autograd they are computed once and reused until a
        weight, the dtype, the position offset or a peft adapter's state changes."""
        key = self._weights_key(dtype, position_offset)
        if key is not None and self._initial_cache is not None and self._initial_cache[0] == key:
            return self._initial_cache[1]
        prompt, out = self.fam_prompt.to(dtype)[None], []  # (1, F, d)
        for layer in self.layers:
            fam = prompt
            prompt, (q, k, v) = layer.initial_fam(prompt, cos, sin)
            out.append((fam, q, k, v))
        self._initial_cache = None if key is None else (key, out)
        return out

    def _weights_key(self, dtype, position_offset: int):
        """What the initial FAM depends on, or None when it must not be cached (autograd on)."""
        if torch.is_grad_enabled():
            return None
        try:  # in-place updates bump _version; replaced or moved tensors change data_ptr
            params = tuple((p.data_ptr(), p._version) for p in self.parameters())
        except (RuntimeError, NotImplementedError):  # inference-mode tensors have no version counter;
            return None  # sharded (DTensor) parameters may have no single storage
        adapters = tuple((m.disable_adapters, tuple(m.active_adapters), m.merged) for m in self.modules()
                         if hasattr(m, "disable_adapters") and hasattr(m, "merged"))  # peft layers
        return dtype, position_offset, params, adapters

    def forward(self, input_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                past_key_values: FamCache | None = None, output_hidden_states: bool = False,
                need_state: bool = True):
        """Returns (last hidden states (B, T, d), cache, all hidden states or None).

        ``need_state=False`` (a one-shot call whose cache nobody reads) skips the work that only
        feeds the cache: the FAM update after the last block and the new windows; the returned
        cache is then not usable."""
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        cache = past_key_values if past_key_values is not None else FamCache(self.config)
        cache.check_compatible(self.config, B)
        if cache.is_empty:
            carried = self._start_stream(cache, x)
            if self.config.attention_mode == "fam":
                self._init_fam_states(cache, carried, x.dtype)
        ctx = self._context(cache, T, x.dtype)
        ctx.need_state = need_state or (self.training and self.config.rsp_prob > 0)
        hidden = [x] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training:
                x, cache.layers[i] = torch.utils.checkpoint.checkpoint(
                    layer, x, cache.layers[i], ctx, use_reentrant=False)
            else:
                x, cache.layers[i] = layer(x, cache.layers[i], ctx)
            if hidden is not None:
                hidden.append(x)
        cache.advance(T)
        if self.training and self.config.attention_mode == "fam" and self.config.rsp_prob > 0:
            self.rsp_state = [st.fam[:1].detach() for st in cache.layers]
        return self.norm(x), cache, hidden


class FamForCausalLM(FamPreTrainedModel, FamGenerationMixin):
    """A causal language model whose attention is ``full``, ``bswa`` or ``fam``.

    ``model(input_ids, labels=None, past_key_values=None, use_cache=False)`` returns logits
    (B, T, vocab), the shifted next-token loss when labels are given, and with ``use_cache``
    a FamCache that continues the sequence in any chunking.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: FamConfig):
        super().__init__(config)
        self.model = FamModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_hf(cls, model_or_path, **kwargs) -> "FamForCausalLM":
        """Convert a Llama-family Hugging Face model (object, folder or GGUF file); see convert.py."""
        from .convert import from_hf

        return from_hf(model_or_path, **kwargs)

    @property
    def fam_prompt(self) -> nn.Parameter | None:
        """The learned initial FAM (fam_length, hidden_size); None outside fam mode."""
        return self.model.fam_prompt

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def _check_inputs(self, input_ids, inputs_embeds, attention_mask):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("FamForCausalLM: pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids: expected shape (batch, seq_len), got {tuple(input_ids.shape)}")
            if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise ValueError(f"input_ids: expected an integer tensor, got {input_ids.dtype}")
            if input_ids.shape[1] == 0:
                raise ValueError("input_ids: empty sequence (seq_len 0)")
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"input_ids: token id {bad} is outside the vocabulary [0, {self.config.vocab_size})")
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[1] == 0:
            raise ValueError(f"inputs_embeds: expected a non-empty (batch, seq_len, hidden), "
                             f"got {tuple(inputs_embeds.shape)}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask: padding is not supported; the stream position is the token "
                             "index, so batch sequences of equal length (or one at a time)")

    def forward(self, input_ids: torch.LongTensor | None = None, labels: torch.LongTensor | None = None,
                past_key_values: FamCache | None = None, use_cache: bool | None = None,
                inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, logits_to_keep: int = 0,
                output_hidden_states: bool | None = None, output_attentions: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Args:
            input_ids: (B, T) token ids (or inputs_embeds (B, T, d)).
            labels: (B, T), shifted inside; -100 is ignored.
            past_key_values: a FamCache from an earlier call of this model, continued in place.
            use_cache: return the cache in ``.past_key_values``.
            position_ids: ignored except for a consistency check; positions come from the cache.
            logits_to_keep: if > 0, compute logits for the last N positions only.
        """
        kwargs.pop("cache_position", None)
        if kwargs:
            raise TypeError(f"FamForCausalLM.forward: unexpected arguments {sorted(kwargs)}")
        if output_attentions:
            raise ValueError("output_attentions: not supported (attention runs in fused kernels)")
        self._check_inputs(input_ids, inputs_embeds, attention_mask)
        if past_key_values is not None and not isinstance(past_key_values, FamCache):
            raise ValueError(f"past_key_values: expected a FamCache, got {type(past_key_values).__name__}")
        if position_ids is not None and past_key_values is not None:
            if int(position_ids.reshape(-1)[0]) != past_key_values.seen_tokens:
                raise ValueError(f"position_ids: start at {int(position_ids.reshape(-1)[0])}, but the cache "
                                 f"has seen {past_key_values.seen_tokens} tokens")
        use_cache = self.config.use_cache if use_cache is None and past_key_values is not None else bool(use_cache)
        need_state = use_cache or past_key_values is not None
        h, cache, hidden = self.model(input_ids, inputs_embeds, past_key_values, bool(output_hidden_states),
                                      need_state=need_state)
        if labels is None and logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache if use_cache else None,
                                      hidden_states=tuple(hidden) if hidden is not None else None)
