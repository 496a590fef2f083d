"""Registries, the shared context, and the hooks scorers read the decoder through."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compressor.arch import ArchSpec, Backbone
from compressor.plan import get_module
from compressor.registry import Registry

Batch = dict[str, Any]

DEPTH_SCORERS: Registry[Callable[..., list[float]]] = Registry("depth scorer")
WIDTH_SCORERS: Registry[Callable[..., WidthScores]] = Registry("width scorer")


@dataclass
class ScoreContext:
    model: nn.Module
    spec: ArchSpec
    backbone: Backbone
    batches: Iterable[Batch] = ()
    drop_count: int = 0
    contiguous: bool = False
    progress: Callable[[Iterable[Batch], str], Iterable[Batch]] = lambda it, desc: it


@dataclass
class WidthScores:
    heads: list[list[float]] = field(default_factory=list)  # [layer][kv group]
    mlp: list[list[float]] = field(default_factory=list)  # [layer][channel]


def decoder_layers(model: nn.Module, spec: ArchSpec) -> nn.ModuleList:
    return get_module(model, spec.decoder).layers


def input_device(model: nn.Module) -> torch.device:
    """Where the inputs go: the embedding's device, or its execution device when accelerate offloads it."""
    from compressor.models import input_device as device_of

    return device_of(model)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def model_inputs(batch: Batch, with_labels: bool = False) -> Batch:
    return {k: v for k, v in batch.items() if with_labels or k != "labels"}


def token_mask(batch: Batch) -> torch.Tensor | None:
    mask = batch.get("attention_mask")
    return None if mask is None else mask.bool()


def hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def output_hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def masked_tokens(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[batch, seq, ...] → [tokens, ...], padding dropped."""
    if mask is not None and mask.shape == x.shape[:2]:
        return x[mask.to(x.device)]
    return x.reshape(-1, *x.shape[2:])


def calibration_pass(ctx: ScoreContext, desc: str, handles: list, state: dict[str, Any]) -> None:
    """Every calibration batch through the model once, under no_grad, with `handles` hooked in (and the LM head
    bypassed: no scorer reads the logits).

    `state["mask"]` holds the current batch's token mask for the hooks to drop padding with.
    """
    from contextlib import nullcontext

    from compressor.prune.importance.lm_loss import bypassed_head, supports_chunked_loss

    device = input_device(ctx.model)
    # the scorers read the decoder layers only: the LM head's logits over the vocabulary are never computed
    head = ctx.model.get_output_embeddings() if supports_chunked_loss(ctx.model) else None
    skip = bypassed_head(head, {}) if head is not None and not ctx.spec.remote_code else nullcontext()
    with hooks(handles), torch.no_grad(), skip:
        for batch in ctx.progress(ctx.batches, desc):
            batch = to_device(batch, device)
            state["mask"] = token_mask(batch)
            ctx.model(**model_inputs(batch), use_cache=False)


def layer_io_pass(
    ctx: ScoreContext,
    desc: str,
    on_input: Callable[[int, torch.Tensor], None],
    on_output: Callable[[int, torch.Tensor], None],
) -> None:
    """One calibration pass calling `on_input(i, h)` / `on_output(i, h)` with each decoder layer's input and
    output hidden states as [tokens, hidden] float tensors, padding dropped. Nothing is kept by the pass."""
    state: dict[str, Any] = {"mask": None}

    def pre(i):
        def hook(_m, args, kwargs):
            on_input(i, masked_tokens(hidden_of(args, kwargs).detach(), state["mask"]).float())

        return hook

    def post(i):
        def hook(_m, _args, _kwargs, output):
            on_output(i, masked_tokens(output_hidden(output).detach(), state["mask"]).float())

        return hook

    layers = decoder_layers(ctx.model, ctx.spec)
    handles = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles += [layer.register_forward_hook(post(i), with_kwargs=True) for i, layer in enumerate(layers)]
    calibration_pass(ctx, desc, handles, state)
