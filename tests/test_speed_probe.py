"""`plan --speed`: the shapes it times are the plan's, in each family's own decoder class; memory and advice rules."""

from __future__ import annotations

import json

import pytest

from compressor import speed_probe, tiny
from compressor.arch import spec_for
from compressor.cli import main
from compressor.errors import CompressorError
from compressor.plan import get_module, resolve
from compressor.recipe import Prune


def _setup(family: str, method: str):
    config = tiny.tiny_config(family).to_dict()
    spec, backbone = spec_for(config)
    prune = Prune(method=method, ratio=0.3, scorer="magnitude" if method == "width" else "last")
    return config, spec, backbone, prune, resolve(config, spec, backbone, prune)


# Hand-counted from the tiny configs (hidden 64, 6 layers, 4 heads and 2 KV heads of 16, MLP 128, vocabulary 276):
# attention q 64·64 + k, v 64·32 each + o 64·64 = 12288 (+ 64+32+32 q/k/v biases in qwen2, + 16+16 q/k norms in
# gemma3; phi: q, k, v, dense with biases = 12480); gated MLP 3·64·mlp (phi: fc1, fc2 with biases 2·64·mlp + mlp
# + 64); norms 2·64 (gemma3: 4·64; phi: one LayerNorm, 128). Per layer at MLP 128 / 64: llama 36992 / 24704,
# qwen2 37120 / 24832, gemma3 37152 / 24864, phi 29184 / 20928. Plus the embedding 276·64 = 17664, the final
# norm 64 (phi 128) and an untied head's weight 17664 (llava, qwen2_5_vl, llava_phi; gemma3 and internvl tie it).
# Each row: layers, heads, KV heads, MLP width, language-model parameters.
EXPECTED_ROWS = {
    "llava": (
        (6, 4, 2, 128, 6 * 36992 + 35392),
        ("planned: width 28.6%", 6, 4, 2, 64, 6 * 24704 + 35392),
        ("alternative: depth 28.7%", 4, 4, 2, 128, 4 * 36992 + 35392),
    ),
    "qwen2_5_vl": (
        (6, 4, 2, 128, 6 * 37120 + 35392),
        ("planned: width 28.6%", 6, 4, 2, 64, 6 * 24832 + 35392),
        ("alternative: depth 28.8%", 4, 4, 2, 128, 4 * 37120 + 35392),
    ),
    "gemma3": (
        (6, 4, 2, 128, 6 * 37152 + 17728),
        ("planned: depth 30.9%", 4, 4, 2, 128, 4 * 37152 + 17728),
        ("alternative: width 30.6%", 6, 4, 2, 64, 6 * 24864 + 17728),
    ),
    "internvl": (
        (6, 4, 2, 128, 6 * 37120 + 17728),
        ("planned: depth 30.9%", 4, 4, 2, 128, 4 * 37120 + 17728),
        ("alternative: width 30.7%", 6, 4, 2, 64, 6 * 24832 + 17728),
    ),
    "llava_phi": (  # the head's bias (276) is not counted: decoder + head weight
        (6, 4, 2, 128, 6 * 29184 + 35456),
        ("planned: width 23.5%", 6, 4, 2, 64, 6 * 20928 + 35456),
        ("alternative: depth 27.7%", 4, 4, 2, 128, 4 * 29184 + 35456),
    ),
}


@pytest.mark.parametrize(
    ("family", "method"),
    [
        ("llava", "width"),
        ("qwen2_5_vl", "width"),
        ("gemma3", "depth"),
        ("internvl", "depth"),
        ("llava_phi", "width"),
    ],
)
def test_probe_times_the_planned_and_the_other_methods_shapes(family, method):
    config, spec, backbone, prune, plan = _setup(family, method)
    got = speed_probe.probe(config, spec, backbone, plan, prune, rounds=1, batches=(1, 2), new_tokens=2)
    original, planned, alternative = got.rows
    want_original, want_planned, want_alt = EXPECTED_ROWS[family]
    assert (
        original.layers,
        original.heads,
        original.kv_heads,
        original.mlp,
        original.params,
    ) == want_original
    assert (
        planned.label,
        planned.layers,
        planned.heads,
        planned.kv_heads,
        planned.mlp,
        planned.params,
    ) == want_planned
    assert (alternative.label, alternative.layers, alternative.heads, alternative.kv_heads) == want_alt[:4]
    assert (alternative.mlp, alternative.params) == want_alt[4:]
    assert planned.ideal == round(want_original[-1] / want_planned[-1], 3)
    assert (original.ideal, alternative.ideal) == (1.0, round(want_original[-1] / want_alt[-1], 3))
    for row in got.rows:
        assert set(row.tokens_per_s) == {1, 2} and all(v > 0 for v in row.tokens_per_s.values())
    assert original.speedup == {1: 1.0, 2: 1.0} and original.prefill_speedup == 1.0
    assert all(r.prefill_tokens_per_s > 0 for r in got.rows)
    assert "interleaved rounds" in got.method and "float32 on cpu" in got.method


def test_built_decoder_is_the_familys_class_with_the_pruned_widths():
    config, spec, backbone, prune, plan = _setup("qwen2_5_vl", "width")
    import torch

    from compressor.plan import meta_model

    text = speed_probe.shaped_text(spec.text_config(config), backbone, plan)
    decoder, head = speed_probe.build_language_model(config, spec, backbone, text, "cpu", torch.float32)
    meta = meta_model(config, spec, backbone)
    assert type(decoder) is type(get_module(meta, spec.decoder))
    tied = meta.get_output_embeddings().weight is meta.get_input_embeddings().weight
    built = sum(p.numel() for p in decoder.parameters()) + (0 if tied else head.weight.numel())
    assert (
        built == plan.params.backbone_after
    )  # the timed model is the plan's student, parameter for parameter
    layer = decoder.layers[0]
    assert layer.mlp.down_proj.in_features == plan.intermediate_after
    assert layer.self_attn.k_proj.out_features == plan.kv_heads_after * plan.head_dim
    assert head.weight.shape == (text["vocab_size"], text["hidden_size"])
    assert all(torch.isfinite(p).all() for p in decoder.parameters())  # initialised, not empty memory


def test_placement_refuses_what_cannot_fit_and_interleaves_only_what_fits_twice():
    gib = 2**30
    with pytest.raises(
        CompressorError, match=r"27\.0 GiB, but only 20\.0 GiB is free there.*leave --speed out"
    ):
        speed_probe.placement([27 * gib, 19 * gib], 20 * gib, "cpu")
    assert speed_probe.placement([4 * gib, 3 * gib, 3 * gib], 20 * gib, "cpu") is True
    assert speed_probe.placement([8 * gib, 6 * gib], 20 * gib, "cuda") is False  # one at a time


def _row(label, up1, ideal=1.4):
    return speed_probe.ProbeRow(
        label=label, layers=1, heads=1, kv_heads=1, mlp=1, params=1, ideal=ideal,
        tokens_per_s={1: up1, 8: 1.0}, speedup={1: up1, 8: 1.0}, prefill_tokens_per_s=1.0, prefill_speedup=1.0,
    )  # fmt: skip


def test_advice_names_the_faster_method_only_when_it_is_clearly_faster():
    slow = [_row("original", 1.0), _row("planned: width 29.6%", 1.1), _row("alternative: depth 28.5%", 1.5)]
    note = speed_probe.advice(slow)
    assert "depth 28.5% student decodes 1.50x" in note and "planned one 1.10x (ideal 1.40x)" in note
    assert "prune.method depth" in note and "keeps every layer" in note
    close = [_row("original", 1.0), _row("planned: width 29.6%", 1.4), _row("alternative: depth 28.5%", 1.5)]
    assert speed_probe.advice(close) is None
    assert speed_probe.advice(slow[:2]) is None  # no alternative shape at this ratio


def test_cli_plan_speed_from_config_only(tmp_path, capsys):
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny.tiny_config("llava").to_dict()))
    argv = ["plan", str(folder), "--method", "width", "--ratio", "0.3", "--speed"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "speed here" in out and "random weights, language model only" in out and "prefill" in out
    assert "planned: width 28.6%" in out and "6 L, q 4 / kv 2, MLP 64" in out
    assert "alternative: depth" in out and "4 L, q 4 / kv 2, MLP 128" in out
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["label"].split(":")[0] for r in plan["speed"]["rows"]] == ["original", "planned", "alternative"]
    assert main(argv[:-1]) == 0
    assert "speed here" not in capsys.readouterr().out  # only when asked


def test_cli_plan_speed_on_remote_code_bunny_times_its_native_backbone(tmp_path, capsys):
    from tests.bunny_remote import save_tiny_bunny

    folder = save_tiny_bunny(tmp_path / "bunny")
    argv = [
        "plan",
        str(folder),
        "--method",
        "depth",
        "--ratio",
        "0.3",
        "--speed",
        "--trust-remote-code",
        "--json",
    ]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["speed"]["rows"]
    assert [(r["layers"], r["mlp"]) for r in rows][:2] == [(6, 128), (4, 128)]
    assert rows[2]["label"].startswith("alternative: width") and rows[2]["mlp"] < 128
