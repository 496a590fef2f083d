"""Baseline: drop the last n blocks before the final one. Needs no data."""

from __future__ import annotations

from compressor.prune.importance.base import DEPTH_SCORERS, ScoreContext, decoder_layers


@DEPTH_SCORERS.register("last")
def last(ctx: ScoreContext) -> list[float]:
    n = len(decoder_layers(ctx.model, ctx.spec))
    # lower = dropped first: the deepest blocks score lowest, the final block highest
    return [float(n - i) for i in range(n - 1)] + [float("inf")]
