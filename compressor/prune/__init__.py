"""Prune a loaded model by a Plan: score, pick, slice, rewrite the config, check the count."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from compressor.arch import ArchSpec, Backbone
from compressor.plan import Plan, count_params

Progress = Callable[[Iterable[Any], str], Iterable[Any]]


class PruneReport(BaseModel):
    method: str
    scorer: str
    num_samples: int
    seconds: float
    layer_scores: list[float] | None = None  # depth: per layer (or per block start when contiguous)
    dropped_layers: list[int] | None = None
    kept_layers: list[int] | None = None
    head_scores: list[list[float]] | None = None  # width: [layer][kv group]
    mlp_scores: list[list[float]] | None = None  # width: [layer][channel]
    kept_heads: list[list[int]] | None = None  # kept KV groups per layer
    kept_channels: list[list[int]] | None = None
    params: dict[str, int | None]
    plan: Plan


def _round(values: list[float]) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def tqdm_progress(iterable: Iterable[Any], desc: str) -> Iterable[Any]:
    from tqdm.auto import tqdm

    return tqdm(list(iterable), desc=desc, unit="sample")


def apply(
    model,
    spec: ArchSpec,
    backbone: Backbone,
    plan: Plan,
    batches: list[dict[str, Any]] | None = None,
    progress: Progress = tqdm_progress,
) -> PruneReport:
    """Prune `model` in place as `plan` says, scoring with `batches` (unused by data-free scorers)."""
    from compressor.prune import depth, width
    from compressor.prune.importance import ScoreContext

    start = time.perf_counter()
    batches = list(batches or [])
    if plan.num_samples and not batches:
        from compressor.errors import CompressorError, fill_in
        from compressor.recipe import Calibration

        text = (
            f"scorer {plan.scorer!r} needs calibration data; {{}} or choose a data-free scorer (depth: last; "
            "width: magnitude)"
        )
        cli, page = fill_in(Calibration, "dataset")
        raise CompressorError(text.format(cli), page=text.format(page))
    ctx = ScoreContext(model, spec, backbone, batches, plan.drop_count, False, progress)
    fields: dict[str, Any] = {}
    if plan.method == "depth":
        ctx.contiguous = plan.scorer == "angular" and plan.contiguous
        scores = depth.score(ctx, plan)
        dropped = depth.select_layers(scores, plan.drop_count, plan.protected_layers, ctx.contiguous)
        kept = depth.apply(model, spec, backbone, dropped)
        fields = {"layer_scores": _round(scores), "dropped_layers": dropped, "kept_layers": kept}
        plan = plan.model_copy(update={"dropped_layers": dropped})
    else:
        scores = width.score(ctx, plan)
        kept = width.apply(model, spec, backbone, plan, scores)
        fields = {
            "head_scores": [_round(s) for s in scores.heads] if "heads" in plan.targets else None,
            "mlp_scores": [_round(s) for s in scores.mlp] if "mlp" in plan.targets else None,
            "kept_heads": kept["heads"] or None,
            "kept_channels": kept["mlp"] or None,
        }
    counts = count_params(model, spec)
    expected = plan.params.backbone_after
    if counts["backbone"] != expected:
        raise RuntimeError(
            f"internal error: pruned backbone has {counts['backbone']} parameters, plan said {expected}"
        )
    return PruneReport(
        method=plan.method,
        scorer=plan.scorer,
        num_samples=len(batches) if plan.num_samples else 0,
        seconds=round(time.perf_counter() - start, 3),
        params=counts,
        plan=plan,
        **fields,
    )
