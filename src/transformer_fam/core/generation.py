"""Glue between FamForCausalLM and transformers' GenerationMixin (generate() with a FamCache).

``model.generate(ids, max_new_tokens=...)`` creates a FamCache, feeds the prompt once and then
only the new token at each step; in ``bswa`` / ``fam`` mode the cache has a constant size, so a
prompt of any length costs constant memory (pass ``prefill_chunk_size=block_size`` to also keep
the prompt's activations bounded, or read it first with ``core.streaming.stream``, which can
show a progress bar).

A cache that already holds a prefix can be passed back: ``generate(all_ids, past_key_values=cache)``
feeds only ``all_ids[:, cache.get_seq_length():]``.
"""

from __future__ import annotations

import torch
from transformers import GenerationMixin

from .cache import FamCache
from .streaming import stream


class FamGenerationMixin(GenerationMixin):
    """generate() support for FamForCausalLM: a FamCache instead of a DynamicCache."""

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, batch_size,
                                      max_cache_length):
        cache = model_kwargs.get("past_key_values")
        if generation_config.cache_implementation not in (None, "dynamic"):
            raise ValueError(f"cache_implementation={generation_config.cache_implementation!r}: FamForCausalLM "
                             f"uses its own FamCache; leave cache_implementation unset")
        if cache is not None:
            if not isinstance(cache, FamCache):
                raise ValueError(f"past_key_values: expected a FamCache, got {type(cache).__name__}")
            cache._is_user_defined = True  # generate() then returns it to the caller
            return
        if generation_config.use_cache is False:
            return
        model_kwargs["past_key_values"] = FamCache(self.config)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, is_first_iteration=False, **kwargs):
        """Feed only the tokens the cache has not seen (the whole prompt first, then one token)."""
        next_sequence_length = kwargs.pop("next_sequence_length", None)
        kwargs.pop("cache_position", None)
        seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        # How many tokens are new: as in transformers, a 2-D attention mask spans past + new tokens;
        # without one, input_ids holds the whole sequence when it is longer than what the cache has
        # seen, else only new tokens (a chunk of a chunked prefill).
        if attention_mask is not None:
            new = attention_mask.shape[1] - seen
        elif next_sequence_length is not None:
            new = next_sequence_length
        else:
            new = input_ids.shape[1] - seen if input_ids.shape[1] > seen else input_ids.shape[1]
        inputs = {}
        if inputs_embeds is not None and is_first_iteration and seen < inputs_embeds.shape[1]:
            inputs["inputs_embeds"] = inputs_embeds[:, seen:]
        else:
            if new < 1 or new > input_ids.shape[1]:
                raise ValueError(f"generate: the cache has seen {seen} tokens and input_ids holds "
                                 f"{input_ids.shape[1]}; pass the whole sequence (prefix included)")
            inputs["input_ids"] = input_ids[:, -new:].contiguous()
        if past_key_values is not None:
            inputs["past_key_values"] = past_key_values
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        kwargs.pop("position_ids", None)  # positions come from the cache
        inputs.update({k: v for k, v in kwargs.items() if v is not None})  # forward() rejects unknown ones
        return inputs

    def _prepare_attention_mask_for_generation(self, inputs_tensor, generation_config, model_kwargs):
        # No padding (the stream position is the token index): a pad id inside the prompt is a token,
        # not padding to infer. A mask the caller passes is still checked by forward().
        return torch.ones(inputs_tensor.shape[:2], dtype=torch.long, device=inputs_tensor.device)

    def _valid_auto_compile_criteria(self, model_kwargs, generation_config) -> bool:
        return False  # the FamCache's shapes change inside a block; no static-cache compilation

    def generate_from(self, cache, new_ids: torch.LongTensor, chunk_size: int | None = None, **generate_kwargs):
        """Continue a stream held in ``cache`` (e.g. ``FamCache.load``-ed) with ``new_ids`` (B, n >= 1)
        and generate; returns only the generated tokens (B, n_generated).

        The cache is continued in place. ``new_ids[:, :-1]`` is read in chunks of ``chunk_size``
        (default: one block) first, so a long question costs constant memory too; the result equals
        ``generate`` on the whole sequence read in one go (rule S2).
        """
        if new_ids.dim() != 2 or new_ids.shape[1] < 1:
            raise ValueError(f"generate_from: new_ids must be (batch, n >= 1), got {tuple(new_ids.shape)}")
        if new_ids.shape[1] > 1:
            stream(self, new_ids[:, :-1], chunk_size or self.config.block_size, cache=cache)
        seen = cache.get_seq_length()
        # the positions the cache already holds are never read: placeholders stand in for them
        ids = torch.cat((new_ids.new_zeros(new_ids.shape[0], seen), new_ids[:, -1:]), dim=1)
        out = self.generate(ids, past_key_values=cache, **generate_kwargs)
        return out[:, ids.shape[1]:]

    def _reorder_cache(self, past_key_values, beam_idx):
        past_key_values.select_batch_(beam_idx)
        return past_key_values
