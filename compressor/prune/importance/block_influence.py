"""Block Influence (ShortGPT; the seed's depth criterion): Σ over tokens of 1 − cos(h_in, h_out).

Each layer's input and output are read by hooks and reduced at once, so memory holds one layer's
activations, never every layer's for every sample.
"""

from __future__ import annotations

import torch

from compressor.prune.importance.base import DEPTH_SCORERS, ScoreContext, decoder_layers, layer_io_pass


def layer_cosines(ctx: ScoreContext, reduce, desc: str) -> list[float]:
    """Run the calibration set once; `reduce(cos)` maps per-token cosines to the per-layer sum."""
    totals = [0.0] * len(decoder_layers(ctx.model, ctx.spec))
    inputs: dict[int, torch.Tensor] = {}

    def on_output(i: int, h_out: torch.Tensor) -> None:
        h_in = inputs.pop(i)
        cos = torch.nn.functional.cosine_similarity(h_in, h_out.to(h_in.device), dim=-1)
        totals[i] += float(reduce(torch.nan_to_num(cos, nan=0.5)).sum())

    layer_io_pass(ctx, desc, inputs.__setitem__, on_output)
    return totals


@DEPTH_SCORERS.register("block_influence")
def block_influence(ctx: ScoreContext) -> list[float]:
    return layer_cosines(ctx, lambda cos: 1 - cos, "block influence")
