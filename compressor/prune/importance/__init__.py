"""Importance scorers: each returns scores per prunable unit (higher = more important, kept first).

Depth scorers give one score per decoder layer; width scorers give, per layer, one score per KV group
(with its query heads) and one per MLP channel. Scorers never touch weights' shapes: slicing is
`compressor.prune.surgery`'s job.
"""

from __future__ import annotations

# importing the modules registers the scorers
from compressor.prune.importance import activation, angular, block_influence, last, magnitude, taylor  # noqa: F401
from compressor.prune.importance.base import DEPTH_SCORERS, WIDTH_SCORERS, ScoreContext, WidthScores

__all__ = ["DEPTH_SCORERS", "WIDTH_SCORERS", "ScoreContext", "WidthScores"]
