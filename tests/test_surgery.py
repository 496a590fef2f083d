"""Surgery on bare modules: slicing keeps exactly the chosen rows/columns, in order."""

from __future__ import annotations

import torch
from torch import nn

from compressor.arch.spec import BACKBONES
from compressor.prune.surgery import drop_layers, head_rows, prune_attention, prune_mlp, slice_linear

LLAMA = next(b for b in BACKBONES if b.name == "llama")
PHI = next(b for b in BACKBONES if b.name == "phi")


def test_slice_linear_rows_and_columns_keep_values_and_bias():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5, bias=True)
    rows = slice_linear(lin, [4, 1], dim=0)
    assert rows.weight.shape == (2, 6) and torch.equal(rows.weight, lin.weight[[4, 1]])
    assert torch.equal(rows.bias, lin.bias[[4, 1]])
    cols = slice_linear(lin, [0, 5], dim=1)
    assert cols.weight.shape == (5, 2) and torch.equal(cols.weight, lin.weight[:, [0, 5]])
    assert torch.equal(cols.bias, lin.bias)  # output unchanged by an input slice
    x = torch.randn(3, 6)
    assert torch.allclose(rows(x), lin(x)[:, [4, 1]])


def test_head_rows_cover_whole_groups():
    # 2 query heads per group, head_dim 3: group 1 owns heads 2,3 → rows 6..11
    assert head_rows([1], heads_per_group=2, head_dim=3) == list(range(6, 12))
    assert head_rows([2, 0], 1, 2) == [0, 1, 4, 5]


class Attn(nn.Module):
    def __init__(self, hidden=8, heads=4, kv=2, head_dim=2, o="o_proj"):
        super().__init__()
        self.q_proj = nn.Linear(hidden, heads * head_dim)
        self.k_proj = nn.Linear(hidden, kv * head_dim)
        self.v_proj = nn.Linear(hidden, kv * head_dim)
        setattr(self, o, nn.Linear(heads * head_dim, hidden))
        self.num_key_value_heads = kv


def test_prune_attention_keeps_query_heads_of_kept_groups():
    torch.manual_seed(0)
    attn = Attn()
    q, k, o = attn.q_proj.weight.clone(), attn.k_proj.weight.clone(), attn.o_proj.weight.clone()
    prune_attention(attn, LLAMA, keep_groups=[1], num_kv=2, head_dim=2)
    # group 1 = query heads 2,3 = q rows 4..7, kv rows 2..3
    assert torch.equal(attn.q_proj.weight, q[4:8])
    assert torch.equal(attn.k_proj.weight, k[2:4])
    assert torch.equal(attn.o_proj.weight, o[:, 4:8])
    assert attn.num_key_value_heads == 1


def test_prune_attention_phi_names():
    attn = Attn(o="dense")
    prune_attention(attn, PHI, keep_groups=[0], num_kv=2, head_dim=2)
    assert attn.dense.weight.shape == (8, 4) and attn.q_proj.weight.shape == (4, 8)


class GatedMLP(nn.Module):
    def __init__(self, hidden=4, inter=6):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.intermediate_size = inter

    def forward(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def test_prune_mlp_equals_zeroing_the_removed_channels():
    torch.manual_seed(0)
    mlp = GatedMLP()
    x = torch.randn(5, 4)
    keep = [0, 2, 5]
    reference = GatedMLP()
    reference.load_state_dict(mlp.state_dict())
    with torch.no_grad():
        for j in {1, 3, 4}:
            reference.down_proj.weight[:, j] = 0
    prune_mlp(mlp, LLAMA, keep)
    assert mlp.gate_proj.weight.shape == (3, 4) and mlp.down_proj.weight.shape == (4, 3)
    assert mlp.intermediate_size == 3
    assert torch.allclose(mlp(x), reference(x), atol=1e-6)


class Layer(nn.Module):
    def __init__(self, idx):
        super().__init__()
        self.layer_idx = idx
        self.self_attn = nn.Module()
        self.self_attn.layer_idx = idx


def test_drop_layers_renumbers_every_layer_idx():
    layers = nn.ModuleList([Layer(i) for i in range(5)])
    originals = [layers[i] for i in (0, 2, 4)]
    kept = drop_layers(layers, [4, 0, 2])
    assert list(kept) == originals
    assert [m.layer_idx for m in kept] == [0, 1, 2]
    assert [m.self_attn.layer_idx for m in kept] == [0, 1, 2]
