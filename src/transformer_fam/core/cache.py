"""FamCache: the constant-size streaming state of a FamForCausalLM (docs/algorithm.md, rules S1-S4).

Per layer, in ``bswa`` / ``fam`` mode: one preallocated key/value window laid out as
[the last ``mem_segments`` complete blocks | the FAM's keys | the current partial block]
(unfilled memory slots are masked), and in ``fam`` mode the FAM itself (F vectors) with its
queries. ``WindowLayout`` names the three parts; model code reads and writes the window only
through ``WindowState``'s methods. Decoding writes into the window in place; its size never
changes. In ``full`` mode the state is an ordinary growing KV cache. Pass it back in to continue:

    out = model(chunk1, use_cache=True)
    out = model(chunk2, past_key_values=out.past_key_values, use_cache=True)

A stream can also start from a FAM carried over from elsewhere (Random State Passing, another
document): ``FamCache.from_fam_state(config, fams)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .config import FamConfig


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

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in ("k", "v", "fam", "fam_q") if getattr(self, name) is not None}

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
        """Keys/values of the FAM the current block reads (B, Hk, F, hd)."""
        s = self.layout.fam
        return self.k[:, :, s], self.v[:, :, s]

    def current_kv(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n cached positions of the current block (B, Hk, n, hd)."""
        s = self.layout.current(n)
        return self.k[:, :, s], self.v[:, :, s]

    def visible_kv(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory, FAM and the first n positions of the current block, as one view."""
        end = self.layout.current_start + n
        return self.k[:, :, :end], self.v[:, :, :end]

    # --------------------------------------------------------------- writing
    def with_fam(self, fam, fam_q, fam_k, fam_v) -> "WindowState":
        """A copy whose FAM (and the FAM keys/values in the window) are replaced (autograd-safe)."""
        s = self.layout.fam

        def put(w, part):
            return torch.cat((w[:, :, : s.start], part, w[:, :, s.stop:]), dim=2)

        return WindowState(self.layout, put(self.k, fam_k), put(self.v, fam_v), fam, fam_q)

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
                      fam=None, fam_q=None) -> "WindowState":
        """The window after a call that touched several blocks (autograd-safe).

        k_seq, v_seq: (B, Hk, m*L + nb*L, hd) the memory before the call, then the touched blocks;
        done: tokens of complete blocks in the touched part (n_complete * L); cached_after: tokens
        of the new partial block; fam_k, fam_v: the FAM keys/values for the next block.
        """
        mL, L = layout.mem_len, layout.block_size

        def window(seq, fam_part):
            parts = [seq[:, :, done: done + mL]]
            if fam_part is not None:
                parts.append(fam_part)
            parts += [seq[:, :, mL + done: mL + done + cached_after],
                      seq.new_zeros(*seq.shape[:2], L - cached_after, seq.shape[3])]
            return torch.cat(parts, dim=2)

        return cls(layout, window(k_seq, fam_k), window(v_seq, fam_v), fam, fam_q)


LayerState = FullState | WindowState


class FamCache:
    """Streaming state for ``FamForCausalLM`` (see module docstring).

    Args:
        config: the model's FamConfig; the cache only accepts models of the same shape and mode.
        position_offset: absolute position of the stream's first token (0 at inference; the
            training-time Random Position Offset sets it, see training/techniques.py).
    """

    def __init__(self, config: FamConfig, position_offset: int = 0):
        self.attention_mode = config.attention_mode
        self.block_size = config.block_size
        self.mem_segments = config.mem_segments
        self.fam_length = config.fam_length if config.attention_mode == "fam" else 0
        self.num_layers = config.num_hidden_layers
        self.layout = WindowLayout(self.block_size, self.mem_segments, self.fam_length)
        self._shape = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                       config.head_dim)
        self.layers: list[LayerState | None] = [None] * self.num_layers
        self.seen_tokens = 0
        self.position_offset = int(position_offset)
        self.mem_valid = 0  # memory slots holding real blocks (<= mem_segments)
        self.fam_is_initial = True  # next FAM update starts from the learned prompt: zero residual
        self.carried_fam: list[torch.Tensor] | None = None  # a FAM to start from instead of the prompt
        self.batch_size: int | None = None

    @classmethod
    def from_fam_state(cls, config: FamConfig, fams: list[torch.Tensor], position_offset: int = 0) -> "FamCache":
        """An empty stream whose first block reads ``fams`` (one (B or 1, F, d) tensor per layer)
        instead of the initial FAM; its first FAM update keeps the residual (rule F5)."""
        if config.attention_mode != "fam":
            raise ValueError(f"FamCache.from_fam_state: attention_mode={config.attention_mode!r} holds no FAM")
        if len(fams) != config.num_hidden_layers:
            raise ValueError(f"FamCache.from_fam_state: {len(fams)} FAM tensors for "
                             f"{config.num_hidden_layers} layers")
        want = (config.fam_length, config.hidden_size)
        for i, f in enumerate(fams):
            if f.dim() != 3 or tuple(f.shape[1:]) != want:
                raise ValueError(f"FamCache.from_fam_state: layer {i} FAM has shape {tuple(f.shape)}, "
                                 f"expected (batch, {want[0]}, {want[1]})")
        cache = cls(config, position_offset)
        cache.carried_fam = list(fams)
        return cache

    # ------------------------------------------------------------------ bookkeeping
    @property
    def is_empty(self) -> bool:
        return self.layers[0] is None

    @property
    def cached_in_block(self) -> int:
        """Tokens of the current partial block held in the state."""
        return 0 if self.attention_mode == "full" else self.seen_tokens % self.block_size

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens seen so far (transformers' Cache API)."""
        return self.seen_tokens

    def num_elements(self) -> int:
        """Total number of tensor elements held (constant in bswa / fam mode)."""
        return sum(t.numel() for st in self.layers if st is not None for t in st.tensors().values())

    def check_compatible(self, config: FamConfig, batch_size: int) -> None:
        """Raise ValueError if this cache was built for another model shape, mode or batch."""
        shape = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim)
        theirs = (config.attention_mode, config.block_size, config.mem_segments,
                  config.fam_length if config.attention_mode == "fam" else 0, config.num_hidden_layers, shape)
        ours = (self.attention_mode, self.block_size, self.mem_segments, self.fam_length, self.num_layers,
                self._shape)
        if ours != theirs:
            raise ValueError(
                f"past_key_values: this FamCache was made for mode={ours[0]} block_size={ours[1]} "
                f"mem_segments={ours[2]} fam_length={ours[3]} layers={ours[4]} sizes={ours[5]}, but the model "
                f"has mode={theirs[0]} block_size={theirs[1]} mem_segments={theirs[2]} fam_length={theirs[3]} "
                f"layers={theirs[4]} sizes={theirs[5]}")
        if self.batch_size is not None and batch_size != self.batch_size:
            raise ValueError(f"past_key_values: the cache holds batch size {self.batch_size}, "
                             f"the input has batch size {batch_size}")
        if self.carried_fam is not None and self.is_empty:
            rows = {f.shape[0] for f in self.carried_fam}
            if not rows <= {1, batch_size}:
                raise ValueError(f"past_key_values: the carried FAM has batch size {sorted(rows)}, "
                                 f"the input has batch size {batch_size}")

    def start(self, batch_size: int, kv_heads: int, head_dim: int, like: torch.Tensor) -> None:
        """Allocate every layer's empty state for a stream of ``batch_size`` rows."""
        for i in range(self.num_layers):
            self.layers[i] = (FullState() if self.attention_mode == "full" else
                              WindowState.empty(self.layout, batch_size, kv_heads, head_dim, like))
        self.batch_size = batch_size

    def advance(self, new_tokens: int) -> None:
        """Move the stream position after every layer has consumed ``new_tokens``."""
        if self.attention_mode != "full":
            completed = (self.cached_in_block + new_tokens) // self.block_size
            self.mem_valid = min(self.mem_segments, self.mem_valid + completed)
            if completed:
                self.fam_is_initial = False
        self.seen_tokens += new_tokens

    # ------------------------------------------------------------------ whole-state operations
    def detach_(self) -> "FamCache":
        """Cut the autograd graph (truncated backpropagation across calls), in place."""
        self.layers = [None if st is None else st.map(torch.Tensor.detach) for st in self.layers]
        if self.carried_fam is not None:
            self.carried_fam = [f.detach() for f in self.carried_fam]
        return self

    def select_batch_(self, index: torch.Tensor) -> "FamCache":
        """Keep / reorder batch rows (beam search), in place."""
        self.layers = [None if st is None else st.map(lambda t: t.index_select(0, index.to(t.device)))
                       for st in self.layers]
        self.batch_size = int(index.numel())
        return self

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        self.select_batch_(beam_idx)

    def state_dict(self) -> dict:
        """The whole state as plain tensors and numbers (``torch.load(weights_only=True)`` reads it)."""
        return {"seen_tokens": self.seen_tokens, "position_offset": self.position_offset,
                "mem_valid": self.mem_valid, "fam_is_initial": self.fam_is_initial, "batch_size": self.batch_size,
                "carried_fam": None if self.carried_fam is None else [f.contiguous() for f in self.carried_fam],
                "layers": [None if st is None else {k: v.contiguous() for k, v in st.tensors().items()}
                           for st in self.layers]}

    @classmethod
    def from_state_dict(cls, config: FamConfig, state: dict, device=None) -> "FamCache":
        """The inverse of ``state_dict`` for a model with ``config``, tensors moved to ``device``."""
        cache = cls(config, position_offset=state["position_offset"])
        cache.seen_tokens, cache.mem_valid = state["seen_tokens"], state["mem_valid"]
        cache.fam_is_initial, cache.batch_size = state["fam_is_initial"], state["batch_size"]
        if state.get("carried_fam") is not None:
            cache.carried_fam = [f.to(device) for f in state["carried_fam"]]

        def layer(st):
            tensors = {k: v.to(device) for k, v in st.items()}
            return FullState(**tensors) if cache.attention_mode == "full" else WindowState(cache.layout, **tensors)

        cache.layers = [None if st is None else layer(st) for st in state["layers"]]
        return cache

    def fam_state(self) -> list[torch.Tensor]:
        """The FAM each layer will read for the next block: a list of (B, F, d) tensors."""
        if self.attention_mode != "fam" or self.is_empty:
            raise ValueError("fam_state: the cache holds no FAM (not fam mode, or nothing seen yet)")
        return [st.fam for st in self.layers]
