"""TransformerFAM: Feedback Attention is Working Memory, for Hugging Face transformers."""

from transformers import AutoConfig, AutoModelForCausalLM

from .cache import FamCache
from .config import FamConfig
from .model import FamForCausalLM, FamModel

AutoConfig.register("fam", FamConfig)
AutoModelForCausalLM.register(FamConfig, FamForCausalLM)

__all__ = ["FamCache", "FamConfig", "FamForCausalLM", "FamModel"]
__version__ = "0.1.0"
