"""Block Influence (ShortGPT; the seed's depth criterion): Σ over tokens of 1 − cos(h_in, h_out).

Each layer's input and output are read by hooks and reduced at once, so memory holds one layer's
activations, never every layer's for every sample.
"""

from __future__ import annotations

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


def layer_cosines(ctx: ScoreContext, reduce) -> list[float]:
    """Run the calibration set once; `reduce(cos)` maps per-token cosines to the per-layer sum."""
    layers = decoder_layers(ctx.model, ctx.spec)
    totals = [0.0] * len(layers)
    state: dict[str, torch.Tensor | None] = {"mask": None}
    inputs: dict[int, torch.Tensor] = {}

    def pre(i):
        def hook(_m, args, kwargs):
            inputs[i] = hidden_of(args, kwargs).detach()

        return hook

    def post(i):
        def hook(_m, _args, _kwargs, output):
            h_in = masked_tokens(inputs.pop(i), state["mask"]).float()
            h_out = masked_tokens(output_hidden(output).detach(), state["mask"]).float()
            cos = torch.nn.functional.cosine_similarity(h_in, h_out.to(h_in.device), dim=-1)
            totals[i] += float(reduce(torch.nan_to_num(cos, nan=0.5)).sum())

        return hook

    handles = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles += [layer.register_forward_hook(post(i), with_kwargs=True) for i, layer in enumerate(layers)]
    device = input_device(ctx.model)
    with hooks(handles), torch.no_grad():
        for batch in ctx.progress(ctx.batches, "block influence"):
            batch = to_device(batch, device)
            state["mask"] = token_mask(batch)
            ctx.model(**model_inputs(batch), use_cache=False)
    return totals


@DEPTH_SCORERS.register("block_influence")
def block_influence(ctx: ScoreContext) -> list[float]:
    return layer_cosines(ctx, lambda cos: 1 - cos)
