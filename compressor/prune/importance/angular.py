"""Angular distance arccos(cos)/π ("The Unreasonable Ineffectiveness of the Deeper Layers").

Per layer by default; with `contiguous`, the distance between the input of layer l and the output of
layer l+n−1 for every start l, so the best block of n layers can be dropped at once (the seed's
contiguous option). Scores are per layer either way: in contiguous mode each layer gets the distance
of the block it starts, and the block's other layers follow it (see `depth.select_layers`).
"""

from __future__ import annotations

import math

import torch

from compressor.prune.importance.base import DEPTH_SCORERS, ScoreContext, decoder_layers, layer_io_pass
from compressor.prune.importance.block_influence import layer_cosines


def _angle(cos: torch.Tensor) -> torch.Tensor:
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def block_distances(ctx: ScoreContext, n: int) -> list[float]:
    """Angular distance between the input of layer l and the output of layer l+n−1, summed over tokens, per l."""
    starts = len(decoder_layers(ctx.model, ctx.spec)) - n + 1
    totals = [0.0] * starts
    waiting: dict[int, torch.Tensor] = {}  # inputs of the block starts still waiting for their block's end

    def on_input(i: int, h: torch.Tensor) -> None:
        if i < starts:
            waiting[i] = h

    def on_output(i: int, h_out: torch.Tensor) -> None:
        start = i - n + 1
        if start >= 0:
            h_in = waiting.pop(start)
            cos = torch.nn.functional.cosine_similarity(h_in, h_out.to(h_in.device), dim=-1)
            totals[start] += float(_angle(torch.nan_to_num(cos, nan=0.0)).sum())

    layer_io_pass(ctx, "angular distance", on_input, on_output)
    return totals


@DEPTH_SCORERS.register("angular")
def angular(ctx: ScoreContext) -> list[float]:
    if ctx.contiguous:
        return block_distances(ctx, max(ctx.drop_count, 1))
    return layer_cosines(ctx, _angle, "angular distance")
