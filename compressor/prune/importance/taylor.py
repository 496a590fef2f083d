"""First-order Taylor importance |w · ∂L/∂w| summed per unit (LLM-Pruner; the seed's width criterion).

Memory: only the scored weights require grad, calibration samples go one at a time, and a hook on each
scored weight folds its gradient into the per-unit scores and frees it the moment it is accumulated,
so at most a few weights' gradients exist at once (LLM-Pruner and Torch-Pruning keep the whole
backward's gradients). Decoder layers run under activation checkpointing (their inputs are kept, their
insides recomputed in the backward), so activations cost one layer's worth plus the logits, not every
layer's. The model stays in eval mode: no dropout touches the scores. Scores are summed over samples:
Σ_samples Σ_w |w · g_sample(w)|.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint

from compressor.prune.importance.base import (
    WIDTH_SCORERS,
    WidthScores,
    decoder_layers,
    hooks,
    input_device,
    model_inputs,
    to_device,
)
from compressor.prune.importance.width_common import layer_units, reduce_to_units, scored_params


@contextmanager
def checkpointed(layers):
    """Run each layer's forward under non-reentrant activation checkpointing, in eval mode."""

    def wrap(forward):
        return lambda *args, **kwargs: checkpoint(forward, *args, use_reentrant=False, **kwargs)

    originals = [layer.forward for layer in layers]
    for layer, forward in zip(layers, originals):
        layer.forward = wrap(forward)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # back to the class's forward


@WIDTH_SCORERS.register("taylor")
def taylor(ctx, targets: list[str], num_kv: int, head_dim: int) -> WidthScores:
    model = ctx.model
    layers = decoder_layers(model, ctx.spec)
    acc: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    previous = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)

    def fold(i, units, kind, name):
        def hook(p: torch.Tensor) -> None:
            with torch.no_grad():
                part = reduce_to_units(units, ctx.backbone, name, kind, (p.detach() * p.grad).abs().float())
                if part.numel():
                    acc[i][kind] = acc[i].get(kind, 0) + part.cpu().double()
            p.grad = None

        return hook

    handles = []
    for i, layer in enumerate(layers):
        units = layer_units(layer, ctx.backbone, num_kv, head_dim)
        for kind, name, p in scored_params(units, ctx.backbone, targets):
            p.requires_grad_(True)
            handles.append(p.register_post_accumulate_grad_hook(fold(i, units, kind, name)))
    device = input_device(model)
    try:
        with hooks(handles), checkpointed(layers):
            for batch in ctx.progress(ctx.batches, "taylor scores"):
                batch = to_device(batch, device)
                if "labels" not in batch:
                    raise ValueError("taylor scoring needs calibration batches with labels")
                loss = model(**model_inputs(batch, with_labels=True), use_cache=False).loss
                loss.backward()
    finally:
        for p in model.parameters():
            p.requires_grad_(previous[id(p)])
            p.grad = None
    return WidthScores(
        heads=[a["heads"].tolist() if "heads" in a else [] for a in acc],
        mlp=[a["mlp"].tolist() if "mlp" in a else [] for a in acc],
    )
