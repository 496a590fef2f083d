"""Every family, both methods: prune, save, reload in plain transformers, and prove nothing drifted.

The proof per family: reload with AutoModelForImageTextToText and no custom code; logits identical to
the in-memory pruned model; greedy `generate` identical with and without the KV cache; parameter count
equal to the plan.
"""

from __future__ import annotations

import copy

import pytest
import torch

from compressor import prune as pruning
from compressor.arch import spec_for
from compressor.plan import count_params, resolve
from compressor.recipe import Prune
from compressor.tiny import FAMILIES, build_model, make_inputs

NO_HEADS = {"qwen2_vl", "qwen2_5_vl"}  # head_dim = hidden / heads in their text attention


def _quiet(it, _desc):
    return it


def _prune(family: str, method: str, scorer: str, targets=None, ratio: float = 0.35):
    model = build_model(family, seed=0)
    config = copy.deepcopy(model.config.to_dict())
    spec, backbone = spec_for(config)
    if targets and family in NO_HEADS:
        targets = ("mlp",)
    prune = Prune(method=method, ratio=ratio, scorer=scorer, round_to=8, targets=targets)
    plan = resolve(config, spec, backbone, prune)
    batches = [make_inputs(family, model.config, batch_size=1, seed=s) for s in range(3)]
    report = pruning.apply(model, spec, backbone, plan, batches, progress=_quiet)
    return model, spec, plan, report


def _generate(model, inputs, use_cache: bool):
    gen_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    return model.generate(**gen_inputs, max_new_tokens=5, do_sample=False, use_cache=use_cache)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("method", "scorer", "targets"),
    [("depth", "block_influence", None), ("width", "taylor", None), ("width", "activation", ("heads",))],
    ids=["depth", "width", "heads"],
)
def test_pruned_checkpoint_reloads_identically(family, method, scorer, targets, tmp_path):
    from transformers import AutoModelForImageTextToText

    model, spec, plan, report = _prune(family, method, scorer, targets, ratio=0.2 if targets else 0.35)
    counts = count_params(model, spec)
    assert counts["backbone"] == plan.params.backbone_after
    assert counts["total"] == plan.params.total_after
    assert plan.achieved_ratio > 0.1

    text = model.config.get_text_config()
    if method == "depth":
        assert len(report.dropped_layers) == plan.drop_count > 0
        assert text.num_hidden_layers == plan.num_layers_after
        for new_idx, layer in enumerate(model.get_decoder().layers):
            assert layer.self_attn.layer_idx == new_idx
    else:
        assert text.intermediate_size == plan.intermediate_after
        if family in NO_HEADS:
            assert plan.targets == ["mlp"]
        elif targets == ("heads",):
            assert text.num_key_value_heads == plan.kv_heads_after < plan.kv_heads_before
            assert text.num_attention_heads == plan.heads_after
            assert text.head_dim == plan.head_dim
            assert len(report.kept_heads[0]) == plan.kv_heads_after

    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert count_params(reloaded, spec)["total"] == plan.params.total_after

    inputs = make_inputs(family, model.config, batch_size=2, seed=11)
    with torch.no_grad():
        a = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        b = reloaded(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    assert torch.equal(a, b)

    cached = _generate(reloaded, inputs, use_cache=True)
    uncached = _generate(reloaded, inputs, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape[1] == inputs["input_ids"].shape[1] + 5
