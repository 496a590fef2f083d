"""Activation magnitude (Minitron-style), forward passes only.

A KV group scores the L2 norm of its query heads' outputs (the input of o_proj) summed over tokens; an
MLP channel scores |activation| (the input of the output projection) summed over tokens.
"""

from __future__ import annotations

from compressor.prune.importance.base import (
    WIDTH_SCORERS,
    WidthScores,
    calibration_pass,
    decoder_layers,
    masked_tokens,
)


@WIDTH_SCORERS.register("activation")
def activation(ctx, targets: list[str], num_kv: int, head_dim: int) -> WidthScores:
    layers = decoder_layers(ctx.model, ctx.spec)
    heads = [None] * len(layers)
    mlp = [None] * len(layers)
    state: dict = {"mask": None}

    def on_o(i):
        def hook(_m, args):
            x = masked_tokens(args[0].detach(), state["mask"]).float()  # [tokens, H*d]
            per_head = x.reshape(x.shape[0], -1, head_dim).norm(dim=-1).sum(0)  # [H]
            per_group = per_head.reshape(num_kv, -1).sum(1).cpu()
            heads[i] = per_group if heads[i] is None else heads[i] + per_group

        return hook

    def on_down(i):
        def hook(_m, args):
            x = masked_tokens(args[0].detach(), state["mask"]).float()
            s = x.abs().sum(0).cpu()
            mlp[i] = s if mlp[i] is None else mlp[i] + s

        return hook

    handles = []
    for i, layer in enumerate(layers):
        if "heads" in targets:
            o = getattr(getattr(layer, ctx.backbone.attention), ctx.backbone.o)
            handles.append(o.register_forward_pre_hook(on_o(i)))
        if "mlp" in targets:
            down = getattr(getattr(layer, ctx.backbone.mlp), ctx.backbone.mlp_out)
            handles.append(down.register_forward_pre_hook(on_down(i)))
    calibration_pass(ctx, "activation scores", handles, state)
    return WidthScores(
        heads=[h.tolist() if h is not None else [] for h in heads],
        mlp=[m.tolist() if m is not None else [] for m in mlp],
    )
