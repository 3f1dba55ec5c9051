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

A state can be kept on disk and continued later, in another process (rule S4):

    cache.save("book.fam-state", model)              # safetensors + JSON metadata, written atomically
    cache = FamCache.load("book.fam-state", model)   # a mismatching model, mode or dtype is an error

In bswa / fam mode the file's size does not depend on how many tokens were read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .config import FamConfig
from .state import FullState, LayerState, WindowLayout, WindowState



STATE_FORMAT = "transformer-fam-state/1"
_SHAPE_FIELDS = ("attention_mode", "block_size", "mem_segments", "fam_length", "num_hidden_layers", "hidden_size",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "rope_theta", "rope_scaling",
                 "fam_max_rms", "fam_center", "fam_write_gate", "fam_read_heads", "qk_norm", "qkv_bias", "attention_bias", "rms_norm_eps")
# fields added after the format was fixed, with the value a state saved before them implies: left
# out of the fingerprint at that value, so such states still load
_LATER_FIELDS = {"fam_center": False, "fam_write_gate": False, "fam_read_heads": None}


def model_fingerprint(model) -> str:
    """A hash of a model's config fields that shape its computation and of all its weights (names,
    shapes, dtypes, values): a saved state continues only the model it was read with. Computed once
    per set of weights (cached on the model until a parameter is replaced or edited in place)."""
    try:
        key = tuple((n, p.data_ptr(), p._version) for n, p in model.named_parameters())
    except (RuntimeError, NotImplementedError):
        key = None
    cached = getattr(model, "_fam_fingerprint", None)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.blake2b(digest_size=16)
    cfg = {f: getattr(model.config, f, None) for f in _SHAPE_FIELDS}
    cfg = {f: v for f, v in cfg.items() if f not in _LATER_FIELDS or v != _LATER_FIELDS[f]}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    if key is not None:
        model._fam_fingerprint = (key, digest)
    return digest


class FamCache:
    """Streaming state for ``FamForCausalLM`` (see module docstring).

    Args:
        config: the model's FamConfig; the cache only accepts models of the same shape and mode.
        position_offset: absolute position of the stream's first token (0 at inference; the
            training-time Random Position Offset sets it, see training/techniques.py).
    """

    def __init__(self, config: FamConfig, position_offset: int = 0):
        self.config = config
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
        self.extra: dict = {}  # the caller's metadata of a saved state (save / load)

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

    def copy(self) -> "FamCache":
        """An independent copy (tensors cloned): continuing it leaves this one as it is."""
        state = self.state_dict()
        state["layers"] = [None if st is None else {k: v.clone() for k, v in st.items()} for st in state["layers"]]
        copy = FamCache.from_state_dict(self.config, state)
        copy.extra = dict(self.extra)
        return copy

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

    # ------------------------------------------------------------------ files
    def save(self, path, model, extra: dict | None = None) -> int:
        """Write the state to ``path`` (safetensors tensors + JSON metadata: the model's fingerprint,
        mode and shape, tokens seen, position offset, dtype, and the caller's JSON-able ``extra``).

        Written to a temporary file in the same folder, flushed to disk and renamed over ``path``,
        so a crash, even SIGKILL, leaves the previous file or the new one, never a torn one.
        Returns the file's size in bytes.
        """
        from safetensors.torch import save_file

        if self.is_empty:
            raise ValueError("FamCache.save: the cache has read nothing yet")
        state = self.state_dict()
        tensors, dtypes = {}, set()
        for i, layer in enumerate(state["layers"]):
            for name, t in layer.items():
                tensors[f"layers.{i}.{name}"] = t.detach().cpu().contiguous()
                dtypes.add(str(t.dtype).removeprefix("torch."))
        if state["carried_fam"] is not None:
            for i, f in enumerate(state["carried_fam"]):
                tensors[f"carried_fam.{i}"] = f.detach().cpu().contiguous()
        meta = {"format": STATE_FORMAT, "fingerprint": model_fingerprint(model),
                "shape": {f: getattr(model.config, f, None) for f in _SHAPE_FIELDS},
                "dtype": ",".join(sorted(dtypes)), "layer_tensors": sorted({n for st in state["layers"] for n in st}),
                **{k: state[k] for k in ("seen_tokens", "position_offset", "mem_valid", "fam_is_initial",
                                         "batch_size")},
                "extra": extra or {}}
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            text = json.dumps(meta, default=str)
            text = json.dumps({**meta, "pad": " " * (-(len(text) + 11) % 512)}, default=str)  # a constant size
            save_file(tensors, str(tmp), metadata={"fam_cache": text})
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path.stat().st_size

    @classmethod
    def load(cls, path, model, device=None) -> "FamCache":
        """Read a state written by ``save`` for ``model`` (no code runs: safetensors). A state read
        with another model (weights, mode, block size, ...) or dtype is a ValueError naming the
        mismatch. The caller's ``extra`` comes back as ``cache.extra``."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such state file")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get("fam_cache", "null"))
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable state file ({str(err).splitlines()[0]})") from None
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a transformer-fam state file (format {None if not meta else meta.get('format')!r})")
        ours = {f: getattr(model.config, f, None) for f in _SHAPE_FIELDS}
        theirs = {**_LATER_FIELDS, **meta["shape"]}
        for f in _SHAPE_FIELDS:
            if json.dumps(theirs.get(f), sort_keys=True, default=str) != json.dumps(ours[f], sort_keys=True, default=str):
                raise ValueError(f"{path}: the state was read with {f}={theirs.get(f)}, the model has {f}={ours[f]}")
        want = str(model.dtype).removeprefix("torch.")
        if meta["dtype"] != want:
            raise ValueError(f"{path}: the state holds {meta['dtype']} tensors, the model runs in {want}")
        if meta["fingerprint"] != model_fingerprint(model):
            raise ValueError(f"{path}: the state was read by a model with other weights (fingerprint "
                             f"{meta['fingerprint'][:12]}, this model {model_fingerprint(model)[:12]})")
        layers = []
        for i in range(model.config.num_hidden_layers):
            layers.append({n: tensors[f"layers.{i}.{n}"] for n in meta["layer_tensors"] if f"layers.{i}.{n}" in tensors})
        carried = [tensors[f"carried_fam.{i}"] for i in range(model.config.num_hidden_layers)] \
            if "carried_fam.0" in tensors else None
        state = {k: meta[k] for k in ("seen_tokens", "position_offset", "mem_valid", "fam_is_initial", "batch_size")}
        cache = cls.from_state_dict(model.config, {**state, "layers": layers, "carried_fam": carried},
                                    device if device is not None else model.device)
        cache.extra = meta.get("extra") or {}
        return cache

    def fam_state(self) -> list[torch.Tensor]:
        """The FAM each layer will read for the next block: a list of (B, F, d) tensors."""
        if self.attention_mode != "fam" or self.is_empty:
            raise ValueError("fam_state: the cache holds no FAM (not fam mode, or nothing seen yet)")
        return [st.fam for st in self.layers]
