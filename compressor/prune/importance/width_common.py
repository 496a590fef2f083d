"""Per-unit reductions shared by the width scorers.

A KV group g owns rows [g·r·d, (g+1)·r·d) of q (r query heads per group, head_dim d), rows
[g·d, (g+1)·d) of k and v, and the matching columns of o. MLP channel j owns row j of each input
projection and column j of the output projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compressor.arch import Backbone


@dataclass
class LayerUnits:
    """The scored weights of one decoder layer and how each reduces to units."""

    attention: nn.Module
    mlp: nn.Module
    num_kv: int
    head_dim: int

    def group_rows(self, t: torch.Tensor) -> torch.Tensor:
        """[rows, ...] of q/k/v (or a bias) → [num_kv] summed per group."""
        return t.reshape(self.num_kv, -1).sum(1)


def layer_units(layer: nn.Module, backbone: Backbone, num_kv: int, head_dim: int) -> LayerUnits:
    return LayerUnits(getattr(layer, backbone.attention), getattr(layer, backbone.mlp), num_kv, head_dim)


def reduce_to_units(
    units: LayerUnits, backbone: Backbone, name: str, kind: str, t: torch.Tensor
) -> torch.Tensor:
    """Reduce an elementwise score tensor of parameter `name` (weight or bias) to its units.

    kind is "heads" or "mlp"; name is e.g. "q_proj.weight".
    """
    module, param = name.rsplit(".", 1)
    if kind == "heads":
        if module == backbone.o:  # columns belong to heads
            return (
                t.sum(0).reshape(units.num_kv, -1).sum(1) if param == "weight" else t.new_zeros(units.num_kv)
            )
        rows = t.sum(1) if param == "weight" else t
        return units.group_rows(rows)
    if module == backbone.mlp_out:
        return t.sum(0) if param == "weight" else t.new_zeros(0)
    return t.sum(1) if param == "weight" else t


def scored_params(
    units: LayerUnits, backbone: Backbone, targets: list[str]
) -> list[tuple[str, str, nn.Parameter]]:
    """(kind, "module.param", parameter) for every weight a width scorer reads."""
    out: list[tuple[str, str, nn.Parameter]] = []
    if "heads" in targets:
        for name in (backbone.q, backbone.k, backbone.v, backbone.o):
            lin = getattr(units.attention, name)
            out.append(("heads", f"{name}.weight", lin.weight))
            if lin.bias is not None and name != backbone.o:
                out.append(("heads", f"{name}.bias", lin.bias))
    if "mlp" in targets:
        for name in (*backbone.mlp_in, backbone.mlp_out):
            lin = getattr(units.mlp, name)
            out.append(("mlp", f"{name}.weight", lin.weight))
            if lin.bias is not None and name != backbone.mlp_out:
                out.append(("mlp", f"{name}.bias", lin.bias))
    return out
