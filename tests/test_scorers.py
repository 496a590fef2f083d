"""Scorers against straightforward reference computations, and the selection rules."""

from __future__ import annotations

import pytest
import torch

from compressor.arch import spec_for
from compressor.prune.depth import select_layers
from compressor.prune.importance import DEPTH_SCORERS, WIDTH_SCORERS, ScoreContext
from compressor.prune.width import top_k
from compressor.tiny import build_model, make_inputs


@pytest.fixture(scope="module")
def llava():
    model = build_model("llava", seed=0)
    spec, backbone = spec_for(model.config.to_dict())
    batches = [make_inputs("llava", model.config, batch_size=1, seed=s) for s in range(3)]
    return model, spec, backbone, batches


def _reference_taylor(model, batches):
    """Per sample: a plain full backward, then |w·g| per KV group (q,k,v rows + o columns) and channel."""
    layers = model.model.language_model.layers
    heads = torch.zeros(len(layers), 2, dtype=torch.float64)
    mlp = torch.zeros(len(layers), 128, dtype=torch.float64)
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch, use_cache=False).loss.backward()
        for i, layer in enumerate(layers):
            a, m = layer.self_attn, layer.mlp
            s = lambda lin: (lin.weight * lin.weight.grad).abs().double()  # noqa: E731
            heads[i] += s(a.q_proj).sum(1).view(2, -1).sum(1) + s(a.k_proj).sum(1).view(2, -1).sum(1)
            heads[i] += s(a.v_proj).sum(1).view(2, -1).sum(1) + s(a.o_proj).sum(0).view(2, -1).sum(1)
            mlp[i] += s(m.gate_proj).sum(1) + s(m.up_proj).sum(1) + s(m.down_proj).sum(0)
    model.zero_grad(set_to_none=True)
    return heads, mlp


def test_taylor_equals_per_sample_full_backward(llava):
    model, spec, backbone, batches = llava
    ref_heads, ref_mlp = _reference_taylor(model, batches)
    scores = WIDTH_SCORERS.get("taylor")(
        ScoreContext(model, spec, backbone, batches), ["heads", "mlp"], 2, 16
    )
    assert torch.allclose(torch.tensor(scores.heads, dtype=torch.float64), ref_heads, rtol=1e-4)
    assert torch.allclose(torch.tensor(scores.mlp, dtype=torch.float64), ref_mlp, rtol=1e-4)
    # nothing left behind: no gradients, requires_grad restored, still in eval mode
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training
    assert "forward" not in vars(model.model.language_model.layers[0])


def test_block_influence_equals_one_minus_cosine_of_hidden_states(llava):
    model, spec, backbone, batches = llava
    scores = DEPTH_SCORERS.get("block_influence")(ScoreContext(model, spec, backbone, batches))
    ref = torch.zeros(6)
    with torch.no_grad():
        for batch in batches:
            hs = model(
                **{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True
            ).hidden_states
            for i in range(5):  # the last entry is post-norm; compare the first five layers
                ref[i] += (1 - torch.nn.functional.cosine_similarity(hs[i][0], hs[i + 1][0], dim=-1)).sum()
    assert torch.allclose(torch.tensor(scores[:5]), ref[:5], rtol=1e-4)
    assert len(scores) == 6 and scores[5] > 0


def test_magnitude_is_the_l2_norm_of_each_unit(llava):
    model, spec, backbone, _ = llava
    scores = WIDTH_SCORERS.get("magnitude")(ScoreContext(model, spec, backbone), ["heads", "mlp"], 2, 16)
    layer = model.model.language_model.layers[2]
    a, m = layer.self_attn, layer.mlp
    group1 = torch.cat(
        [
            a.q_proj.weight[32:64].flatten(),
            a.k_proj.weight[16:32].flatten(),
            a.v_proj.weight[16:32].flatten(),
            a.o_proj.weight[:, 32:64].flatten(),
        ]
    )
    assert scores.heads[2][1] == pytest.approx(float(group1.detach().norm()), rel=1e-5)
    ch = torch.cat([m.gate_proj.weight[7], m.up_proj.weight[7], m.down_proj.weight[:, 7]])
    assert scores.mlp[2][7] == pytest.approx(float(ch.detach().norm()), rel=1e-5)


def test_activation_scores_every_unit_positively(llava):
    model, spec, backbone, batches = llava
    scores = WIDTH_SCORERS.get("activation")(
        ScoreContext(model, spec, backbone, batches), ["heads", "mlp"], 2, 16
    )
    assert len(scores.heads) == 6 and all(len(h) == 2 and min(h) > 0 for h in scores.heads)
    assert all(len(c) == 128 and min(c) >= 0 for c in scores.mlp)


def test_angular_contiguous_scores_block_starts(llava):
    model, spec, backbone, batches = llava
    ctx = ScoreContext(model, spec, backbone, batches, drop_count=2, contiguous=True)
    starts = DEPTH_SCORERS.get("angular")(ctx)
    assert len(starts) == 5  # blocks of 2 in 6 layers
    assert all(0 <= s <= len(batches) * 40 for s in starts)


def test_select_layers_never_drops_protected_or_final():
    scores = [0.1, 0.0, 0.5, 0.2, 0.3, -1.0]
    assert select_layers(scores, 2, protected=[1]) == [0, 3]
    assert select_layers(scores, 3, protected=[]) == [0, 1, 3]
    # contiguous: block starts 0..4 for n=2; start 4 would hit the final layer
    assert select_layers([0.9, 0.2, 0.8, 0.7, 0.1], 2, protected=[], contiguous=True) == [1, 2]


def test_top_k_keeps_original_order_and_breaks_ties_low():
    assert top_k([0.5, 2.0, 1.0, 2.0], 2) == [1, 3]
    assert top_k([1.0, 1.0, 1.0], 2) == [0, 1]


def test_unknown_scorer_names_the_known_ones():
    from compressor.errors import CompressorError

    with pytest.raises(
        CompressorError, match=r"unknown width scorer 'taylr' \(did you mean 'taylor'\?\); known: "
    ):
        WIDTH_SCORERS.get("taylr")
