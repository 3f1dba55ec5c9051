"""FamPreTrainedModel, FamModel, FamForCausalLM: embeddings, the layer stack and the LM head
(docs/algorithm.md). The per-layer schedule lives in layers.py, the streaming state in cache.py.

Parameter names are Hugging Face Llama's, so a Llama state dict loads unchanged
(``transformer_fam.from_hf`` converts one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache import FamCache
from .config import FamConfig
from .generation import FamGenerationMixin
from .layers import FamAttention, FamDecoderLayer, FamRMSNorm, FamWriteGate, StepContext
from .plan import BlockPlan
from .rope import rope_cos_sin, rope_inv_freq


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, shift: bool = True,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` (B, T, V) against ``labels`` (B, T) in float32, -100 ignored.

    ``shift=True``: position t predicts ``labels[:, t + 1]`` (Hugging Face's convention); with
    ``shift=False`` the labels are already the next tokens.
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).to(logits.device),
                           ignore_index=-100, reduction=reduction)


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
        elif isinstance(module, FamAttention) and module.fam_gate is not None:
            module.fam_gate.zero_()  # the read gate starts closed: the model equals BSWA
        elif isinstance(module, FamWriteGate):
            module.weight.zero_()  # z = 1: the paper's update until training moves it
            module.bias.zero_()


class FamModel(FamPreTrainedModel):
    """Embeddings, the decoder layers and the final norm. Returns hidden states and the cache."""

    def __init__(self, config: FamConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(FamDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = FamRMSNorm(config.hidden_size, config.rms_norm_eps)
        if config.attention_mode == "fam":
            # the learned initial FAM, at the token-embedding level (rule F4)
            self.fam_prompt = nn.Parameter(torch.zeros(config.fam_length, config.hidden_size))
        else:
            self.fam_prompt = None
        # a plain attribute, not a buffer: loading on the meta device would leave a buffer empty
        self._inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
        self._initial_cache: tuple | None = None  # (weights key, per-layer initial FAM), inference only
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def _rope(self, positions: torch.Tensor, dtype):
        return rope_cos_sin(positions, self._inv_freq, dtype)

    def _context(self, cache: FamCache, T: int, dtype) -> StepContext:
        cfg, dev = self.config, self.embed_tokens.weight.device
        start = cache.seen_tokens + cache.position_offset
        cos, sin = self._rope(torch.arange(start, start + T, device=dev), dtype)
        ctx = StepContext(mode=cfg.attention_mode, cos=cos, sin=sin, backend=cfg.attention_backend)
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

    def _init_fam_states(self, cache: FamCache, dtype) -> None:
        """Give every layer the FAM the next block reads: the learned prompt carried through the
        layers (rule F4), or the FAM the cache was built from (``FamCache.from_fam_state``, rule
        F5), at the F positions just before the stream's current position (rule P3)."""
        cfg, B = self.config, cache.batch_size
        start = cache.position_offset + cache.seen_tokens
        positions = torch.arange(-cfg.fam_length, 0, device=self.embed_tokens.weight.device) + start
        cos, sin = self._rope(positions, dtype)
        carried = cache.carried_fam
        cache.fam_is_initial = carried is None
        initial = self._initial_fams(cos, sin, dtype, start) if carried is None else None
        for i, layer in enumerate(self.layers):
            if carried is None:
                fam, q, k, v = initial[i]
            else:
                fam = carried[i].to(dtype)
                q, k, v = layer.carried_fam(fam, cos, sin)
            read_kv = (None, None)  # the block reads this layer's own FAM
            if carried is not None and cfg.fam_read_shift and i > 0:  # option O6: the carried FAM of the layer below
                read_kv = tuple(t.expand(B, *t.shape[1:]) for t in layer.carried_fam(carried[i - 1].to(dtype), cos, sin)[1:])
            fam, q, k, v = (t.expand(B, *t.shape[1:]) for t in (fam, q, k, v))
            cache.layers[i] = cache.layers[i].with_fam(fam, q, k, v, read_kv)
        cache.carried_fam = None  # consumed: the stream's FAM now lives in the layers

    @torch.no_grad()
    def reset_fam_(self, cache: FamCache) -> None:
        """Replace every layer's FAM in a started ``cache`` by the initial FAM at the stream's current
        position: what a stream starting there would read (the FAM-reset ablation)."""
        cache.carried_fam = None
        self._init_fam_states(cache, cache.layers[0].k.dtype)

    def _initial_fams(self, cos, sin, dtype, position_offset: int) -> list[tuple[torch.Tensor, ...]]:
        """Per layer (FAM, q, k, v) of the learned prompt carried through the layers. They depend
        on the weights only, so without autograd they are computed once and reused until a
        weight, the dtype, the position offset or a peft adapter's state changes."""
        key = self._weights_key(dtype, position_offset)
        if key is not None and self._initial_cache is not None and self._initial_cache[0] == key:
            return self._initial_cache[1]
        prompt, out = self.fam_prompt.to(dtype)[None], []  # (1, F, d)
        if key is not None:  # kept past this call: not a view of the parameter, which the optimiser
            prompt = prompt.clone()  # changes in place (deepcopy of the model refuses such views)
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

    def _begin(self, cache: FamCache | None, x: torch.Tensor, need_state: bool) -> tuple[FamCache, StepContext]:
        """The cache a call on ``x`` (B, T, d) continues (a new one for None; an empty one is started,
        with the initial FAM in fam mode) and the call's StepContext."""
        B, T, _ = x.shape
        cache = cache if cache is not None else FamCache(self.config)
        cache.check_compatible(self.config, B)
        if cache.is_empty:
            cache.start(B, self.config.num_key_value_heads, self.config.head_dim, x)
            if self.config.attention_mode == "fam":
                self._init_fam_states(cache, x.dtype)
        ctx = self._context(cache, T, x.dtype)
        ctx.need_state = need_state
        return cache, ctx

    def forward_layers(self, layer_inputs) -> list[torch.Tensor]:
        """Layer-wise teacher forcing: layer ``i`` runs on ``layer_inputs[i]`` (B, T, d) instead of the
        previous layer's output, over a fresh stream (its FAM scan included), and the outputs of all
        layers are returned (before the final norm). Fed this model's own ``output_hidden_states``,
        it returns ``hidden_states[1:]``; fed another model's (a full-attention teacher), each layer
        can be trained to reproduce the teacher's layer on its own (attention transfer)."""
        if len(layer_inputs) < len(self.layers):
            raise ValueError(f"forward_layers: {len(layer_inputs)} inputs for {len(self.layers)} layers")
        cache, ctx = self._begin(None, layer_inputs[0], need_state=False)
        return [layer(h, cache.layers[i], ctx)[0] for i, (layer, h) in enumerate(zip(self.layers, layer_inputs))]

    def forward(self, input_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                past_key_values: FamCache | None = None, output_hidden_states: bool = False,
                need_state: bool = True):
        """Returns (last hidden states (B, T, d), cache, all hidden states or None).

        ``need_state=False`` (a one-shot call whose cache nobody reads) skips the work that only
        feeds the cache: the FAM update after the last block and the new windows; the returned
        cache is then not usable."""
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cache, ctx = self._begin(past_key_values, x, need_state)
        hidden = [x] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training:
                x, cache.layers[i] = torch.utils.checkpoint.checkpoint(
                    layer, x, cache.layers[i], ctx, use_reentrant=False)
            else:
                x, cache.layers[i] = layer(x, cache.layers[i], ctx)
            if hidden is not None:
                hidden.append(x)
        cache.advance(x.shape[1])
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
        # a cache passed in is continued unless use_cache=False says nobody reads it afterwards
        need_state = bool(use_cache) or (past_key_values is not None and use_cache is None)
        use_cache = self.config.use_cache if use_cache is None and past_key_values is not None else bool(use_cache)
        h, cache, hidden = self.model(input_ids, inputs_embeds, past_key_values, bool(output_hidden_states),
                                      need_state=need_state)
        if labels is None and logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = next_token_loss(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache if use_cache else None,
                                      hidden_states=tuple(hidden) if hidden is not None else None)
