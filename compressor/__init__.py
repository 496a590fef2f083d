"""compressor: structurally prune a multimodal LLM's language backbone, recover, evaluate, publish."""

from compressor.errors import CompressorError

__all__ = ["CompressorError"]
__version__ = "0.1.0"
