"""Angular distance arccos(cos)/π ("The Unreasonable Ineffectiveness of the Deeper Layers").

Per layer by default; with `contiguous`, the distance between the input of layer l and the output of
layer l+n−1 for every start l, so the best block of n layers can be dropped at once (the seed's
contiguous option). Scores are per layer either way: in contiguous mode each layer gets the distance
of the block it starts, and the block's other layers follow it (see `depth.select_layers`).
"""

from __future__ import annotations

import math

import torch

from compressor.prune.importance.base import (
    DEPTH_SCORERS,
    ScoreContext,
    decoder_layers,
    hidden_of,
    hooks,
    input_device,
    masked_tokens,
    model_inputs,
    output_hidden,
    to_device,
    token_mask,
)
from compressor.prune.importance.block_influence import layer_cosines


def _angle(cos: torch.Tensor) -> torch.Tensor:
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def block_distances(ctx: ScoreContext, n: int) -> list[float]:
    """Mean angular distance between the input of layer l and the output of layer l+n−1, per l."""
    layers = decoder_layers(ctx.model, ctx.spec)
    num = len(layers)
    starts = range(num - n + 1)
    totals = [0.0] * len(starts)
    count = [0]
    state: dict = {"mask": None}
    states: dict[int, torch.Tensor] = {}  # only the block starts still waiting for their end

    def pre(i):
        def hook(_m, args, kwargs):
            if i < len(starts):
                states[i] = masked_tokens(hidden_of(args, kwargs).detach(), state["mask"]).float()

        return hook

    def post(i):
        def hook(_m, _args, _kwargs, output):
            start = i - n + 1
            if start >= 0:
                h_out = masked_tokens(output_hidden(output).detach(), state["mask"]).float()
                h_in = states.pop(start)
                cos = torch.nn.functional.cosine_similarity(h_in, h_out.to(h_in.device), dim=-1)
                totals[start] += float(_angle(torch.nan_to_num(cos, nan=0.0)).sum())

        return hook

    handles = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles += [layer.register_forward_hook(post(i), with_kwargs=True) for i, layer in enumerate(layers)]
    device = input_device(ctx.model)
    with hooks(handles), torch.no_grad():
        for batch in ctx.progress(ctx.batches, "angular distance"):
            batch = to_device(batch, device)
            state["mask"] = token_mask(batch)
            ctx.model(**model_inputs(batch), use_cache=False)
            count[0] += 1
    return totals


@DEPTH_SCORERS.register("angular")
def angular(ctx: ScoreContext) -> list[float]:
    if ctx.contiguous:
        return block_distances(ctx, max(ctx.drop_count, 1))
    return layer_cosines(ctx, _angle)
