"""Taylor scoring checkpoints only the layers whose activations do not fit its budget, and the scores do not
depend on which layers it checkpoints."""

from __future__ import annotations

import copy

import torch

from compressor.arch import spec_for
from compressor.prune.importance import ScoreContext
from compressor.prune.importance import taylor as taylor_module
from compressor.tiny import build_model, make_inputs


def test_the_budget_decides_how_many_layers_keep_their_activations():
    assert taylor_module.unchecked_layers(30, weight_bytes=10**9, tokens=100, per_token_layer_bytes=10) == 30
    assert taylor_module.unchecked_layers(30, weight_bytes=1000, tokens=100, per_token_layer_bytes=10) == 0
    budget = taylor_module.UNCHECKED_SHARE * 10**6
    assert taylor_module.unchecked_layers(30, 10**6, 100, 1000) == int(budget // 100_000)


def _score(share: float, monkeypatch):
    monkeypatch.setattr(taylor_module, "UNCHECKED_SHARE", share)
    model = build_model("llava", seed=0).eval()
    config = copy.deepcopy(model.config.to_dict())
    spec, backbone = spec_for(config)
    layers = taylor_module.decoder_layers(model, spec)
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        # a pre-hook: a recompute stops early once it has what the backward needs, before the MLP returns
        layer.mlp.register_forward_pre_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    batches = [make_inputs("llava", model.config, batch_size=1, seed=s) for s in range(2)]
    ctx = ScoreContext(model, spec, backbone, batches)
    kv = model.config.text_config.num_key_value_heads
    scores = taylor_module.taylor(ctx, ["heads", "mlp"], kv, model.config.text_config.head_dim)
    assert all("forward" not in vars(layer) for layer in layers)  # no checkpointing wrapper is left behind
    return scores, calls


def test_checkpointed_layers_recompute_and_scores_do_not_change(monkeypatch):
    free, free_calls = _score(1e9, monkeypatch)  # every layer keeps its activations
    ckpt, ckpt_calls = _score(0.0, monkeypatch)  # every layer recomputes its forward in the backward
    assert free_calls == [2] * len(free_calls)  # one forward per sample
    assert ckpt_calls == [4] * len(ckpt_calls)  # and once more in each backward
    for a, b in ((free.heads, ckpt.heads), (free.mlp, ckpt.mlp)):
        for x, y in zip(a, b):
            torch.testing.assert_close(torch.tensor(x), torch.tensor(y), rtol=1e-5, atol=1e-9)
