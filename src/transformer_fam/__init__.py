"""TransformerFAM: Feedback Attention is Working Memory, for Hugging Face transformers.

The package, layer by layer (docs/algorithm.md describes the algorithm):

- ``core``: the model (config, RoPE, block plan, attention backends, streaming state, layers).
- ``hf``: Hugging Face / GGUF / SmolLM2 conversion and LoRA.
- ``data``, ``training``, ``evaluation``, ``experiments``: tokenizers and corpora, the trainer,
  PassKey and perplexity, the PassKey demo and benchmarks.
- ``cli``: the ``fam`` command.
"""

from .core import FamCache, FamConfig, FamForCausalLM, FamModel, StreamResult, stream, stream_chunks
from .hf.loading import from_hf

__all__ = ["FamCache", "FamConfig", "FamForCausalLM", "FamModel", "StreamResult", "from_hf", "stream",
           "stream_chunks"]
__version__ = "0.1.0"
