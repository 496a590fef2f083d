"""First-order Taylor importance |w · ∂L/∂w| summed per unit (LLM-Pruner; the seed's width criterion).

Memory: only the scored weights require grad, calibration samples go one at a time, and a hook on each
scored weight folds its gradient into the per-unit scores and frees it the moment it is accumulated,
so at most a few weights' gradients exist at once (LLM-Pruner and Torch-Pruning keep the whole
backward's gradients). Decoder layers whose saved activations do not fit in `UNCHECKED_SHARE` of the weights'
size run under activation checkpointing (their inputs are kept, their insides recomputed in the backward), so a
long calibration sample costs about one layer's activations, and a short one no recomputation. The loss is
computed a chunk of positions at a time (`lm_loss`): the full logits never exist. The model stays in eval mode:
no dropout touches the scores. Scores are summed over samples: Σ_samples Σ_w |w · g_sample(w)|.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import torch
from torch.utils.checkpoint import checkpoint

from compressor import hardware
from compressor.plan import head_dim_of
from compressor.prune.importance.base import (
    WIDTH_SCORERS,
    WidthScores,
    decoder_layers,
    hooks,
    input_device,
    model_inputs,
    to_device,
)
from compressor.prune.importance.lm_loss import chunked_lm_loss, supports_chunked_loss
from compressor.prune.importance.width_common import layer_units, reduce_to_units, scored_params

# Layers run without checkpointing while their saved activations fit in this share of the weights' bytes; the
# rest recompute their forward in the backward. Scoring's peak then stays near 1.5x the weights (the other ~0.2 is
# the checkpointed layers' inputs, one recomputed layer and one chunk of the loss), and short calibration samples
# of a model pay no recomputation at all. The value lives with the memory estimate, which models the same budget.
UNCHECKED_SHARE = hardware.UNCHECKED_SHARE


def unchecked_layers(num_layers: int, weight_bytes: int, tokens: int, per_token_layer_bytes: int) -> int:
    """How many decoder layers keep their activations (no recomputation) within this module's budget."""
    return hardware.unchecked_layers(num_layers, weight_bytes, tokens, per_token_layer_bytes, UNCHECKED_SHARE)


def _per_token_layer_bytes(model, spec, backbone, dtype_bytes: int) -> int:
    text = spec.text_config(model.config.to_dict())
    d = head_dim_of(text)
    q, kv = (
        text["num_attention_heads"] * d,
        (text.get("num_key_value_heads") or text["num_attention_heads"]) * d,
    )
    return hardware.layer_saved(
        text["hidden_size"], q, kv, text["intermediate_size"], len(backbone.mlp_in), dtype_bytes
    )


@contextmanager
def checkpointed(layers):
    """Run each layer's forward under non-reentrant activation checkpointing, in eval mode.

    A layer dispatched by accelerate (`device_map`) already has an instance `forward` (its hook): that one is
    wrapped and put back afterwards, so the hook survives; only a wrapper we added is deleted.
    """

    def wrap(forward):
        return lambda *args, **kwargs: checkpoint(forward, *args, use_reentrant=False, **kwargs)

    own = [vars(layer).get("forward") for layer in layers]  # accelerate's hooked forward, or None
    for layer in layers:
        layer.forward = wrap(layer.forward)
    try:
        yield
    finally:
        for layer, forward in zip(layers, own):
            if forward is None:
                del layer.forward  # back to the class's forward
            else:
                layer.forward = forward


def _offloaded(module) -> bool:
    """Whether accelerate keeps this module's weights off the device (cpu/disk offload) between forwards."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None or "_old_forward" not in vars(module):
        return False
    return any(getattr(h, "offload", False) for h in getattr(hook, "hooks", [hook]))


@contextmanager
def live_weight_hooks(module, hooks_by_name: dict[str, object]):
    """Register each gradient hook on the weight as it exists during each forward of an offloaded `module`.

    accelerate materialises an offloaded weight as a new Parameter for every forward (and puts a meta tensor
    back after it), so a hook on the parameter object seen at set-up would never fire. The wrapper sits
    inside accelerate's hook (`_old_forward`), where the materialised weights are in place.
    """
    original = module._old_forward

    def forward(*args, **kwargs):
        for name, hook in hooks_by_name.items():
            p = module._parameters[name]
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(hook)
        return original(*args, **kwargs)

    module._old_forward = forward
    try:
        yield
    finally:
        module._old_forward = original


@WIDTH_SCORERS.register("taylor")
def taylor(ctx, targets: list[str], num_kv: int, head_dim: int) -> WidthScores:
    model = ctx.model
    layers = decoder_layers(model, ctx.spec)
    acc: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    previous = {
        n: p.requires_grad for n, p in model.named_parameters()
    }  # by name: offloaded ones get replaced
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

    handles, offloaded = [], ExitStack()
    for i, layer in enumerate(layers):
        units = layer_units(layer, ctx.backbone, num_kv, head_dim)
        live: dict[int, tuple[object, dict[str, object]]] = {}
        for kind, name, p in scored_params(units, ctx.backbone, targets):
            p.requires_grad_(True)  # an offloaded weight's copies inherit it
            owner = getattr(units.attention if kind == "heads" else units.mlp, name.split(".")[0])
            if _offloaded(owner):
                live.setdefault(id(owner), (owner, {}))[1][name.split(".")[1]] = fold(i, units, kind, name)
            else:
                handles.append(p.register_post_accumulate_grad_hook(fold(i, units, kind, name)))
        for owner, by_name in live.values():
            offloaded.enter_context(live_weight_hooks(owner, by_name))
    device = input_device(model)
    chunked = supports_chunked_loss(model) and not ctx.spec.remote_code
    batches = list(ctx.batches)
    weight = next(iter(layers.parameters()))
    free = (
        0
        if ctx.spec.remote_code
        else unchecked_layers(  # remote code may splice in unseen image tokens
            len(layers),
            sum(p.numel() * p.element_size() for p in model.parameters()),
            max((b["input_ids"].numel() for b in batches if "input_ids" in b), default=0),
            _per_token_layer_bytes(model, ctx.spec, ctx.backbone, weight.element_size()),
        )
    )
    try:
        with offloaded, hooks(handles), checkpointed(layers[free:]):
            for batch in ctx.progress(batches, "taylor scores"):
                batch = to_device(batch, device)
                if "labels" not in batch:
                    raise ValueError("taylor scoring needs calibration batches with labels")
                if chunked:
                    loss = chunked_lm_loss(model, model_inputs(batch), batch["labels"])
                else:
                    loss = model(**model_inputs(batch, with_labels=True), use_cache=False).loss
                loss.backward()
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(previous.get(n, p.requires_grad))
            p.grad = None
    return WidthScores(
        heads=[a["heads"].tolist() if "heads" in a else [] for a in acc],
        mlp=[a["mlp"].tolist() if "mlp" in a else [] for a in acc],
    )
