"""Is the memory used? The FAM-reset ablation: every block reads the initial FAM instead of the FAM
the previous block wrote. A gain that survives this ablation is not a memory gain.

    model = FamResetEachBlock(model)        # any evaluation that streams through the model
    evaluate_passkey(model, tokenizer, [1024, 4096])
    model, tokenizer = load_in_mode("smollm2-fam", "fam-reset")   # the same, loaded by mode name

The reset FAM is the learned prompt carried through the layers at the positions just before the
block (rules F4, P3), exactly what a stream starting at that block would read.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..core.cache import FamCache


class FamResetEachBlock:
    """A fam-mode FamForCausalLM whose FAM is reset to its initial value after every block.

    Calls are split at block boundaries; it answers ``model(ids, past_key_values=..., use_cache=...,
    logits_to_keep=...)`` like the model (logits, cache), so the streaming evaluations take it as is.
    """

    def __init__(self, model):
        if model.config.attention_mode != "fam":
            raise ValueError(f"FamResetEachBlock: needs a fam-mode model, got {model.config.attention_mode}")
        self.model, self.config = model, model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def eval(self):
        self.model.eval()
        return self

    @torch.no_grad()
    def __call__(self, input_ids, past_key_values: FamCache | None = None, use_cache: bool = True,
                 logits_to_keep: int = 0, **kwargs) -> CausalLMOutputWithPast:
        L, T = self.config.block_size, input_ids.shape[1]
        first_kept = T - logits_to_keep if 0 < logits_to_keep < T else 0  # logits of positions >= this only
        cache, pieces, pos = past_key_values, [], 0
        while pos < T:
            seen = cache.seen_tokens if cache is not None else 0
            n = min(T - pos, L - seen % L)
            keep = pos + n - max(first_kept, pos)  # this piece's positions whose logits are returned
            out = self.model(input_ids[:, pos: pos + n], past_key_values=cache, use_cache=True,
                             logits_to_keep=max(keep, 1), **kwargs)  # not every position's: memory
            cache = out.past_key_values
            if cache.seen_tokens % L == 0:
                self.model.model.reset_fam_(cache)
            if keep > 0:
                pieces.append(out.logits[:, -keep:])
            pos += n
        logits = torch.cat(pieces, dim=1)
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache if use_cache else None)


EVAL_MODES = ("full", "bswa", "fam", "fam-reset")


def load_in_mode(source, mode: str, dtype: str = "auto", device: str = "cpu"):
    """(model, tokenizer) of ``source`` (``hf.loading.load_model``) in an evaluation mode: ``full``,
    ``bswa``, ``fam``, or ``fam-reset`` (the fam-mode weights in ``FamResetEachBlock``). The model's
    ``config`` is the one the run reads, so options set on it afterwards (readers, O6) still apply."""
    from ..hf.loading import load_model

    if mode not in EVAL_MODES:
        raise ValueError(f"mode {mode!r}: choose from {', '.join(EVAL_MODES)}")
    model, tokenizer = load_model(source, "fam" if mode == "fam-reset" else mode, dtype, device)
    return (FamResetEachBlock(model) if mode == "fam-reset" else model), tokenizer
