"""Glue between FamForCausalLM and transformers' GenerationMixin (generate() with a FamCache)."""

from __future__ import annotations

from transformers import GenerationMixin


class FamGenerationMixin(GenerationMixin):
    """generate() support for FamForCausalLM."""
