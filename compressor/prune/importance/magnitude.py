"""Weight magnitude: the L2 norm of every weight a unit owns. Needs no data."""

from __future__ import annotations

import torch

from compressor.prune.importance.base import WIDTH_SCORERS, WidthScores, decoder_layers
from compressor.prune.importance.width_common import layer_units, reduce_to_units, scored_params


@WIDTH_SCORERS.register("magnitude")
def magnitude(ctx, targets: list[str], num_kv: int, head_dim: int) -> WidthScores:
    scores = WidthScores()
    with torch.no_grad():
        for layer in decoder_layers(ctx.model, ctx.spec):
            units = layer_units(layer, ctx.backbone, num_kv, head_dim)
            acc: dict[str, torch.Tensor] = {}
            for kind, name, p in scored_params(units, ctx.backbone, targets):
                part = reduce_to_units(units, ctx.backbone, name, kind, p.detach().float() ** 2)
                if part.numel():
                    acc[kind] = acc.get(kind, 0) + part
            scores.heads.append(acc["heads"].sqrt().tolist() if "heads" in acc else [])
            scores.mlp.append(acc["mlp"].sqrt().tolist() if "mlp" in acc else [])
    return scores
