"""Hugging Face integration: checkpoint conversion (HF folders, GGUF, the offline SmolLM2) and LoRA."""

from .loading import convert, from_hf, load_model

__all__ = ["convert", "from_hf", "load_model"]
