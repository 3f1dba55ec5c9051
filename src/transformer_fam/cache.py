"""FamCache: the constant-size streaming state of a FamForCausalLM.

Per layer, in ``bswa`` / ``fam`` mode: one preallocated key/value window laid out as
[the last ``mem_segments`` complete blocks | the FAM's keys | the current partial block]
(unfilled memory slots are masked), and in ``fam`` mode the FAM itself (F vectors) with its
queries. Decoding writes into the window in place; its size never changes. In ``full`` mode it is an ordinary growing
KV cache. Pass it back in to continue a sequence:

    out = model(chunk1, use_cache=True)
    out = model(chunk2, past_key_values=out.past_key_values, use_cache=True)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .config import FamConfig


@dataclass
class LayerState:
    """One layer's state. k/v tensors are (B, Hk, S, hd) with RoPE already applied."""

    k: torch.Tensor | None = None  # full mode: every key so far
    v: torch.Tensor | None = None
    win_k: torch.Tensor | None = None  # bswa / fam: (B, Hk, m*L + F + L, hd) memory | FAM | current block
    win_v: torch.Tensor | None = None
    fam: torch.Tensor | None = None  # (B, F, d) FAM input of this layer for the current block
    fam_q: torch.Tensor | None = None  # (B, H, F, hd) its queries at its positions

    def tensors(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def map(self, fn) -> "LayerState":
        return LayerState(**{name: fn(t) for name, t in self.tensors().items()})


class FamCache:
    """Streaming state for ``FamForCausalLM`` (see module docstring).

    Args:
        config: the model's FamConfig; the cache only accepts models of the same shape and mode.
        position_offset: absolute position of the stream's first token (0 at inference; the
            training-time Random Position Offset sets it).
    """

    def __init__(self, config: FamConfig, position_offset: int = 0):
        self.attention_mode = config.attention_mode
        self.block_size = config.block_size
        self.mem_segments = config.mem_segments
        self.fam_length = config.fam_length if config.attention_mode == "fam" else 0
        self.num_layers = config.num_hidden_layers
        self._shape = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                       config.head_dim)
        self.layers: list[LayerState | None] = [None] * self.num_layers
        self.seen_tokens = 0
        self.position_offset = int(position_offset)
        self.mem_valid = 0  # memory slots holding real blocks (<= mem_segments)
        self.fam_is_initial = True  # next FAM update starts from the learned prompt: zero residual
        self.batch_size: int | None = None

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
        return self

    def select_batch_(self, index: torch.Tensor) -> "FamCache":
        """Keep / reorder batch rows (beam search), in place."""
        self.layers = [None if st is None else st.map(lambda t: t.index_select(0, index.to(t.device)))
                       for st in self.layers]
        self.batch_size = int(index.numel())
        return self

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        self.select_batch_(beam_idx)

    def fam_state(self) -> list[torch.Tensor]:
        """The FAM each layer will read for the next block: a list of (B, F, d) tensors."""
        if self.attention_mode != "fam" or self.is_empty:
            raise ValueError("fam_state: the cache holds no FAM (not fam mode, or nothing seen yet)")
        return [st.fam for st in self.layers]
