"""Depth pruning: score layers, pick the ones to drop, drop them, rewrite the config."""

from __future__ import annotations

from compressor.errors import CompressorError
from compressor.plan import Plan, get_module, rewrite_text_config
from compressor.prune.importance import DEPTH_SCORERS, ScoreContext
from compressor.prune.surgery import drop_layers


def select_layers(scores: list[float], n: int, protected: list[int], contiguous: bool = False) -> list[int]:
    """The n layers to drop: lowest scores first, never a protected layer nor the final one.

    With `contiguous`, `scores[l]` is the distance of the block starting at l and the best legal block wins.
    """
    num = len(scores) + (n - 1 if contiguous else 0)
    banned = set(protected) | {num - 1}
    if contiguous:
        starts = [s for s in range(len(scores)) if not banned & set(range(s, s + n))]
        if not starts:
            raise CompressorError(
                f"no block of {n} contiguous layers avoids the protected layers {sorted(banned)}"
            )
        best = min(starts, key=lambda s: (scores[s], s))
        return list(range(best, best + n))
    candidates = [i for i in range(num) if i not in banned]
    if len(candidates) < n:
        raise CompressorError(f"cannot drop {n} of {num} layers with {sorted(banned)} protected")
    return sorted(sorted(candidates, key=lambda i: (scores[i], -i))[:n])


def score(ctx: ScoreContext, plan: Plan) -> list[float]:
    ctx.drop_count = plan.drop_count
    return DEPTH_SCORERS.get(plan.scorer)(ctx)


def apply(model, spec, backbone, dropped: list[int]) -> list[int]:
    """Drop `dropped` from the decoder in place; returns the kept layer indices."""
    decoder = get_module(model, spec.decoder)
    num = len(decoder.layers)
    kept = [i for i in range(num) if i not in set(dropped)]
    decoder.layers = drop_layers(decoder.layers, kept)
    text = model.config.get_text_config()
    new = rewrite_text_config(text.to_dict(), backbone, kept_layers=kept)
    for key in ("num_hidden_layers", "layer_types", *backbone.layer_count_keys):
        if key in new and hasattr(text, key):
            setattr(text, key, new[key])
    for key, value in new.items():  # any other per-layer list
        if (
            isinstance(value, list)
            and isinstance(getattr(text, key, None), list)
            and len(getattr(text, key)) == num
        ):
            setattr(text, key, value)
    return kept
