"""Architecture knowledge, as data.

An :class:`ArchSpec` says, for one MLLM family, where the language decoder, its attention and MLP
projections, the multimodal projector and the vision tower live, which config keys change when the
backbone is pruned, and what is legal to prune. Code elsewhere reads these fields; nothing else in the
package branches on ``model_type``.
"""

from __future__ import annotations

from compressor.arch.spec import ArchSpec, Backbone, spec_for, supported_families

__all__ = ["ArchSpec", "Backbone", "spec_for", "supported_families"]
