"""The model itself: config, RoPE, block plan, attention backends, streaming state, layers, model.

Imports nothing from the rest of the package (tests/test_layout.py checks it).
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .cache import FamCache
from .state import WindowLayout
from .config import FamConfig
from .model import FamForCausalLM, FamModel
from .streaming import StreamResult, stream, stream_chunks

# AutoModelForCausalLM.from_pretrained(folder) loads a saved FAM model once the core is imported
AutoConfig.register("fam", FamConfig, exist_ok=True)
AutoModelForCausalLM.register(FamConfig, FamForCausalLM, exist_ok=True)

__all__ = ["FamCache", "FamConfig", "FamForCausalLM", "FamModel", "StreamResult", "WindowLayout", "stream",
           "stream_chunks"]
