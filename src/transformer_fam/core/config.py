"""FamConfig: Llama-style sizes plus the attention pattern (full / bswa / fam)."""

from __future__ import annotations

from transformers import PretrainedConfig

ATTENTION_MODES = ("full", "bswa", "fam")
BACKENDS = ("auto", "sdpa", "cpu_split")  # core/attention.py


def parse_read_heads(text: str) -> list[list[int]] | None:
    """'17.3,18.6' -> [[17, 3], [18, 6]] (LAYER.HEAD pairs, option O5's ``fam_read_heads``);
    '' or 'all' -> None (every head reads the FAM, the paper). ValueError on anything else."""
    if text.strip() in ("", "all"):
        return None
    pairs = []
    for item in (x.strip() for x in text.split(",")):
        layer, dot, head = item.partition(".")
        if not (dot and layer.isdigit() and head.isdigit()):
            raise ValueError(f"{item!r} is not LAYER.HEAD; give e.g. 17.3,18.6 (or all)")
        pairs.append([int(layer), int(head)])
    return pairs


class FamConfig(PretrainedConfig):
    """Configuration of a FamForCausalLM.

    The size fields and their names are those of Hugging Face's ``LlamaConfig`` so that a Llama
    family checkpoint maps onto this model unchanged. The attention fields:

    Args:
        attention_mode: ``"full"`` (causal), ``"bswa"`` (block sliding window) or ``"fam"``
            (BSWA plus feedback attention memory), see docs/algorithm.md.
        block_size: L, tokens per block (bswa / fam).
        mem_segments: m, how many previous blocks a block attends to (bswa / fam).
        fam_length: F, FAM vectors per layer (fam); requires ``fam_length <= block_size``.
        qkv_bias: bias on q/k/v only (Qwen2); ``attention_bias`` puts it on q/k/v/o (Llama).
        qk_norm: RMSNorm per head on queries and keys before RoPE (Qwen3).
        rope_scaling: ``None`` or a dict with ``rope_type`` ``"linear"`` or ``"llama3"``.
        attention_backend: ``"auto"`` (default), ``"sdpa"`` or ``"cpu_split"``: which kernel path
            computes the windowed attention (core/attention.py; all give the same result).
        fam_max_rms: ``None`` (the paper's additive update, default) or a cap c on the RMS of
            each FAM vector after every update, ``F <- F * min(1, c / rms(F))``. An option that
            departs from the paper: it bounds the FAM norm over unbounded streams (the paper's
            form grows linearly), and is a no-op while the FAM stays below c.
        fam_read_gate: ``False`` (the paper: block queries read the FAM in the same softmax as
            the memory and current block, default) or ``True``, an option that departs from the
            paper (O2): block queries read the FAM through a softmax of their own, added with a
            per-layer, per-head gate, ``out = out_bswa + tanh(g) * out_fam``, g initialised to 0,
            so a converted model equals its BSWA form until fine-tuning opens the gate.
        fam_center: ``False`` (the paper, default) or ``True``, an option that departs from the
            paper (O3): every FAM vector has the mean of its layer's F vectors subtracted before
            its QKV projection (before Norm1), so a component that all F slots share is invisible
            to every reader of the FAM (block queries and the FAM's own update). The state itself
            keeps the paper's additive update. Aimed at the drift the paper's form shows on long
            fillers, most of which all slots share (docs/results.md). Requires ``fam_length >= 2``.
        fam_write_gate: ``False`` (the paper's additive update, default) or ``True``, an option
            that departs from the paper (O4): each FAM vector's increment is scaled by a learned,
            input-dependent write gate, ``F_b = F_{b-1} + z * (F_b^paper - F_{b-1})`` with
            ``z = 2 * sigmoid(w . u / rms(u) + c)``, ``u`` the increment, one ``w, c`` per layer
            (new weights, zero at initialisation, so ``z = 1``: exactly the paper's form until
            training moves them). A closed gate leaves a slot unchanged, so a memory can hold still
            over filler instead of drifting with every block. The zero-residual first update is
            not gated.
        fam_read_heads: ``None`` (the paper: every head of every layer reads the FAM, default) or
            a list of ``[layer, head]`` pairs, an option that departs from the paper (O5): only
            those query heads read the FAM; every other head attends to its memory and current
            block only, exactly as in BSWA. The FAM itself is still updated in every layer (the
            write side is unchanged). DuoAttention's split into retrieval and streaming heads: a
            converted model whose memory is taught to a few retrieval heads leaves the rest of
            the model its BSWA form. Read at run time, so it may be set on a built model.
        fam_read_shift: ``False`` (the paper, rule F3: block queries of layer ``l`` read ``F_{b-1}^l``,
            default) or ``True``, an option that departs from the paper (O6): block ``b >= 1`` of
            layer ``l >= 1`` reads ``F_{b-1}^{l-1}``, the FAM of the layer below, through layer
            ``l``'s own input norm and k/v projections at the same positions. ``F_{b-1}^l`` is layer
            ``l``'s *output* for the FAM vectors, which lives where layer ``l+1``'s inputs live; a
            pretrained layer was trained to read keys and values of its own inputs, and
            ``F_{b-1}^{l-1}`` is one of those (as is the initial FAM, rule F4, which block 0 still
            reads). The FAM updates are unchanged (each layer's FAM queries still attend to their
            own previous FAM and the block); layer 0 reads its own FAM. Read at run time.
        fam_skip_initial_read: ``False`` (the paper, rules F3-F4: block 0 reads the initial FAM,
            default) or ``True``, an option that departs from the paper (O7): block queries never
            read the initial FAM (the learned prompt carried through the layers). A stream's first
            block, and every block after a FAM reset, attends to its memory and current block
            only, exactly as in BSWA; a carried FAM state (Random State Passing, a saved or passed
            cache) is still read. The FAM updates are unchanged: the FAM queries still start from
            the initial FAM, so block 1 reads ``F_0`` as in the paper. A learned constant read by
            the first block cost a converted SmolLM2 ~1.5 points of accuracy inside the window
            (docs/smollm2_memory.md); with this option the first block is the BSWA model's. Read
            at run time, so it may be set on a built model.
    """

    model_type = "fam"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 32000
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    mlp_bias: bool = False
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    attention_mode: str = "fam"
    block_size: int = 1024
    mem_segments: int = 3
    fam_length: int = 64
    attention_backend: str = "auto"
    fam_max_rms: float | None = None
    fam_read_gate: bool = False
    fam_center: bool = False
    fam_write_gate: bool = False
    fam_read_heads: list | None = None
    fam_read_shift: bool = False
    fam_skip_initial_read: bool = False

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        derived_head_dim = self.head_dim is None
        if derived_head_dim and isinstance(self.num_attention_heads, int) and self.num_attention_heads > 0:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"FamConfig.hidden_size={self.hidden_size}: must be a multiple of "
                    f"num_attention_heads={self.num_attention_heads} (or set head_dim)")
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        def bad(field: str, why: str):
            raise ValueError(f"FamConfig.{field}={getattr(self, field)!r}: {why}")

        if self.attention_mode not in ATTENTION_MODES:
            bad("attention_mode", f"must be one of {', '.join(ATTENTION_MODES)}")
        for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                      "num_attention_heads", "num_key_value_heads", "head_dim"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(field, "must be a positive integer")
        if self.head_dim % 2:
            bad("head_dim", "must be even (RoPE rotates pairs)")
        if self.num_attention_heads % self.num_key_value_heads:
            bad("num_key_value_heads", f"must divide num_attention_heads={self.num_attention_heads}")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            bad("block_size", "must be an integer >= 1")
        if not isinstance(self.mem_segments, int) or self.mem_segments < 0:
            bad("mem_segments", "must be an integer >= 0")
        if not isinstance(self.fam_length, int) or self.fam_length < 1:
            bad("fam_length", "must be an integer >= 1")
        if self.attention_mode == "fam" and self.fam_length > self.block_size:
            bad("fam_length", f"must be <= block_size={self.block_size} in fam mode")
        if self.attention_backend not in BACKENDS:
            bad("attention_backend", f"must be one of {', '.join(BACKENDS)}")
        if self.fam_max_rms is not None and (isinstance(self.fam_max_rms, bool) or not isinstance(
                self.fam_max_rms, (int, float)) or not self.fam_max_rms > 0):
            bad("fam_max_rms", "must be None (the paper's update) or a number > 0")
        if not isinstance(self.fam_read_gate, bool):
            bad("fam_read_gate", "must be true or false")
        if not isinstance(self.fam_center, bool):
            bad("fam_center", "must be true or false")
        if not isinstance(self.fam_write_gate, bool):
            bad("fam_write_gate", "must be true or false")
        if not isinstance(self.fam_read_shift, bool):
            bad("fam_read_shift", "must be true or false")
        if not isinstance(self.fam_skip_initial_read, bool):
            bad("fam_skip_initial_read", "must be true or false")
        self._validate_read_heads()
        if self.fam_center and self.attention_mode == "fam" and self.fam_length < 2:
            bad("fam_center", "needs fam_length >= 2 (one centred vector is zero)")
        if self.rope_theta <= 0:
            bad("rope_theta", "must be > 0")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("default", "linear", "llama3"):
                bad("rope_scaling", "supported rope_type values are default, linear, llama3")

    def _validate_read_heads(self) -> None:
        heads = self.fam_read_heads
        if heads is None:
            return
        where = f"FamConfig.fam_read_heads={heads!r}"
        if not isinstance(heads, (list, tuple)) or not heads:
            raise ValueError(f"{where}: must be None (every head reads the FAM) or a non-empty list of [layer, head]")
        for pair in heads:
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)):
                raise ValueError(f"{where}: {pair!r} is not a [layer, head] pair of integers")
            layer, head = pair
            if not 0 <= layer < self.num_hidden_layers or not 0 <= head < self.num_attention_heads:
                raise ValueError(f"{where}: [{layer}, {head}] is outside the model's "
                                 f"{self.num_hidden_layers} layers x {self.num_attention_heads} heads")

    def fam_readers(self, layer: int) -> list[int] | None:
        """The query heads of ``layer`` that read the FAM: None for all (the paper), else a
        sorted list, possibly empty (option O5, ``fam_read_heads``)."""
        if self.fam_read_heads is None:
            return None
        return sorted({h for lay, h in self.fam_read_heads if lay == layer})
