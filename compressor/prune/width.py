"""Width pruning: score KV groups and MLP channels, keep the top ones in every layer, rewrite the config."""

from __future__ import annotations

from compressor.plan import Plan, get_module, head_dim_of
from compressor.prune.importance import WIDTH_SCORERS, ScoreContext, WidthScores
from compressor.prune.surgery import prune_attention, prune_mlp


def top_k(scores: list[float], k: int) -> list[int]:
    """Indices of the k highest scores, in their original order (ties keep the lower index)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


def score(ctx: ScoreContext, plan: Plan) -> WidthScores:
    text = ctx.model.config.get_text_config().to_dict()
    return WIDTH_SCORERS.get(plan.scorer)(ctx, plan.targets, plan.kv_heads_before, head_dim_of(text))


def apply(model, spec, backbone, plan: Plan, scores: WidthScores) -> dict[str, list[list[int]]]:
    """Slice every layer to the plan's widths by the scores; returns kept indices per layer."""
    decoder = get_module(model, spec.decoder)
    text = model.config.get_text_config()
    head_dim = head_dim_of(text.to_dict())
    kept: dict[str, list[list[int]]] = {"heads": [], "mlp": []}
    for i, layer in enumerate(decoder.layers):
        if "heads" in plan.targets:
            groups = top_k(scores.heads[i], plan.kv_heads_after)
            prune_attention(
                getattr(layer, backbone.attention), backbone, groups, plan.kv_heads_before, head_dim
            )
            kept["heads"].append(groups)
        if "mlp" in plan.targets:
            channels = top_k(scores.mlp[i], plan.intermediate_after)
            prune_mlp(getattr(layer, backbone.mlp), backbone, channels)
            kept["mlp"].append(channels)
    if "heads" in plan.targets:
        text.num_attention_heads = plan.heads_after
        text.num_key_value_heads = plan.kv_heads_after
        text.head_dim = head_dim
    if "mlp" in plan.targets:
        text.intermediate_size = plan.intermediate_after
    return kept
