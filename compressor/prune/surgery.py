"""Pure slicing of modules by kept indices. No scoring, no config files: tested on bare modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compressor.arch import Backbone


def slice_linear(linear: nn.Linear, keep: Sequence[int] | torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping output rows (dim=0) or input columns (dim=1) `keep`, in that order."""
    idx = torch.as_tensor(keep, dtype=torch.long, device=linear.weight.device)
    weight = linear.weight.detach().index_select(dim, idx)
    has_bias = linear.bias is not None
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=has_bias, device="meta", dtype=weight.dtype)
    new.weight = nn.Parameter(weight.clone(), requires_grad=linear.weight.requires_grad)
    if has_bias:
        bias = linear.bias.detach()
        bias = bias.index_select(0, idx) if dim == 0 else bias
        new.bias = nn.Parameter(bias.clone(), requires_grad=linear.bias.requires_grad)
    return new


def head_rows(groups: Sequence[int], heads_per_group: int, head_dim: int) -> list[int]:
    """Row indices (in q_proj's output) of every query head in the kept KV groups, in order."""
    rows: list[int] = []
    for g in sorted(groups):
        for h in range(g * heads_per_group, (g + 1) * heads_per_group):
            rows.extend(range(h * head_dim, (h + 1) * head_dim))
    return rows


def prune_attention(
    attn: nn.Module, backbone: Backbone, keep_groups: Sequence[int], num_kv: int, head_dim: int
) -> None:
    """Keep whole KV groups with their query heads (GQA-aware); in place on the attention module."""
    q = getattr(attn, backbone.q)
    heads_per_group = q.out_features // head_dim // num_kv
    q_rows = head_rows(keep_groups, heads_per_group, head_dim)
    kv_rows = head_rows(keep_groups, 1, head_dim)
    setattr(attn, backbone.q, slice_linear(q, q_rows, 0))
    setattr(attn, backbone.k, slice_linear(getattr(attn, backbone.k), kv_rows, 0))
    setattr(attn, backbone.v, slice_linear(getattr(attn, backbone.v), kv_rows, 0))
    setattr(attn, backbone.o, slice_linear(getattr(attn, backbone.o), q_rows, 1))
    kept = len(keep_groups)
    for name, value in (
        ("num_heads", kept * heads_per_group),
        ("num_key_value_heads", kept),
        ("head_dim", head_dim),
    ):
        if hasattr(attn, name):
            setattr(attn, name, value)


def prune_mlp(mlp: nn.Module, backbone: Backbone, keep: Sequence[int]) -> None:
    """Keep MLP channels `keep`: rows of the input projections, columns of the output one."""
    for name in backbone.mlp_in:
        setattr(mlp, name, slice_linear(getattr(mlp, name), keep, 0))
    setattr(mlp, backbone.mlp_out, slice_linear(getattr(mlp, backbone.mlp_out), keep, 1))
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def drop_layers(layers: nn.ModuleList, keep: Sequence[int]) -> nn.ModuleList:
    """The kept layers in order, every `layer_idx` inside renumbered so the KV cache indexes match."""
    kept = nn.ModuleList([layers[i] for i in sorted(keep)])
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    return kept
