"""Plans from config shapes alone: layer counts, legal widths, parameter counts, refusals, warnings."""

from __future__ import annotations

import json

import pytest

from compressor.arch import spec_for, supported_families
from compressor.errors import CompressorError
from compressor.plan import count_params, meta_model, resolve, rewrite_text_config
from compressor.recipe import Prune
from tests import real_shapes

SEED_LAYERS_REMOVED = {0.15: 5, 0.30: 10, 0.45: 15, 0.60: 21}  # VLMCompression's LLaVA-1.5-7B sweeps


@pytest.fixture(scope="module")
def llava7b():
    return real_shapes.llava_1_5_7b()


def _plan(config, trust=False, **prune):
    spec, backbone = spec_for(config, trust_remote_code=trust)
    return resolve(config, spec, backbone, Prune(**prune), source="test")


@pytest.mark.parametrize("ratio", [0.15, 0.30, 0.45])
def test_llava7b_depth_matches_the_seed_layer_counts(llava7b, ratio):
    plan = _plan(llava7b, method="depth", ratio=ratio)
    assert plan.drop_count == SEED_LAYERS_REMOVED[ratio]
    assert plan.num_layers_after == 32 - plan.drop_count
    assert abs(plan.achieved_ratio - ratio) < 0.01
    assert (
        plan.params.backbone_before == 32 * 202_383_360 + 2 * 32064 * 4096 + 4096
    )  # layers, embed + head, norm
    assert plan.params.per_layer_before == 202_383_360
    assert plan.params.backbone_after == plan.params.backbone_before - plan.drop_count * 202_383_360
    assert plan.dropped_layers is None  # block influence picks them only once scored


def test_llava7b_depth_60_is_nearest_whole_layer_and_warns(llava7b):
    plan = _plan(llava7b, method="depth", ratio=0.60)
    assert plan.drop_count == 20  # 20 layers = 60.1 %; the seed's 21 layers are 63.1 %
    assert any("above 50%" in w for w in plan.warnings)


def test_llava7b_width_heads_only_take_values_llama_config_accepts(llava7b):
    plan = _plan(llava7b, method="width", ratio=0.30)
    assert 4096 % plan.heads_after == 0  # LlamaConfig refuses hidden_size % heads != 0
    assert plan.heads_after == 16 and plan.intermediate_after % 64 == 0
    assert abs(plan.achieved_ratio - 0.30) < 0.005
    small = _plan(llava7b, method="width", ratio=0.15)
    assert small.heads_after == 32 and small.intermediate_after == 8448
    assert any("accepts only 1, 2, 4, 8, 16, 32 query heads" in w for w in small.warnings)


def test_plan_parameters_equal_a_model_built_from_the_pruned_config(llava7b):
    plan = _plan(llava7b, method="width", ratio=0.45)
    spec, backbone = spec_for(llava7b)
    text = rewrite_text_config(
        llava7b["text_config"], backbone, kv_heads=plan.kv_heads_after, intermediate=plan.intermediate_after
    )
    counts = count_params(meta_model({**llava7b, "text_config": text}, spec, backbone), spec)
    assert counts["backbone"] == plan.params.backbone_after
    assert counts["total"] == plan.params.total_after
    assert (
        plan.params.total_before - plan.params.total_after
        == plan.params.backbone_before - plan.params.backbone_after
    )


def test_round_to_snaps_mlp_width():
    plan = _plan(real_shapes.smolvlm_256m(), method="width", ratio=0.2, targets=["mlp"], round_to=128)
    assert plan.intermediate_after % 128 == 0 and plan.heads_after == 9


def test_gqa_heads_go_by_whole_kv_groups():
    plan = _plan(real_shapes.smolvlm_256m(), method="width", ratio=0.4)
    assert plan.kv_heads_after < 3
    assert plan.heads_after == plan.kv_heads_after * 3  # 3 query heads per KV group
    assert plan.head_dim == 64


def test_qwen2_vl_refuses_explicit_head_pruning_and_says_why():
    with pytest.raises(
        CompressorError, match=r"hidden_size / num_attention_heads.*--targets mlp.*--method depth"
    ):
        _plan(real_shapes.qwen2_vl_2b(), method="width", ratio=0.3, targets=["heads", "mlp"])


def test_qwen2_5_vl_width_defaults_to_mlp_with_a_warning():
    plan = _plan(real_shapes.qwen2_5_vl_3b(), method="width", ratio=0.3)
    assert plan.targets == ["mlp"] and plan.heads_after == 16
    assert any("heads not pruned" in w for w in plan.warnings)
    depth = _plan(real_shapes.qwen2_5_vl_3b(), method="depth", ratio=0.3)
    assert depth.num_layers_after < 36


def test_layer_range_is_refused_with_the_reason():
    from compressor.recipe import parse_recipe

    with pytest.raises(
        CompressorError, match=r"prune.layers is not supported.*per_layer_config.*remove `layers`"
    ):
        parse_recipe(
            {"model": {"source": "x"}, "prune": {"method": "width", "ratio": 0.3, "layers": [3, 21]}}
        )


def test_unknown_family_lists_supported_ones():
    with pytest.raises(CompressorError, match="unsupported model_type 'blip-2'") as err:
        spec_for({"model_type": "blip-2"})
    for family in supported_families():
        assert family in str(err.value)


def test_bunny_needs_trust_remote_code_then_plans_its_backbone():
    bunny = real_shapes.bunny_v1_0_3b()
    with pytest.raises(CompressorError, match="--trust-remote-code"):
        spec_for(bunny)
    plan = _plan(bunny, trust=True, method="depth", ratio=0.15)
    assert plan.family == "bunny" and plan.backbone == "phi"
    assert plan.drop_count == 5  # 5 of 32 Phi-2 layers ≈ 14 %, as in the seed
    assert 2.7e9 < plan.params.backbone_before < 2.8e9
    assert plan.params.total_before is None  # the vision tower needs the repo's own code


def test_depth_rewrites_every_per_layer_list_and_window_count():
    spec, backbone = spec_for(real_shapes.qwen2_5_vl_3b())
    text = {
        "num_hidden_layers": 4,
        "layer_types": ["full_attention", "full_attention", "sliding_attention", "sliding_attention"],
        "max_window_layers": 2,
    }
    out = rewrite_text_config(text, backbone, kept_layers=[0, 2, 3])
    assert out["num_hidden_layers"] == 3
    assert out["layer_types"] == ["full_attention", "sliding_attention", "sliding_attention"]
    assert out["max_window_layers"] == 1


def test_plan_json_round_trips(llava7b):
    plan = _plan(llava7b, method="depth", ratio=0.3, scorer="last")
    data = json.loads(plan.model_dump_json())
    assert data["dropped_layers"] == list(range(21, 31))  # the last 10 before the final layer
    assert data["params"]["backbone_after"] == plan.params.backbone_after


def test_tiny_ratio_that_removes_nothing_is_an_error():
    with pytest.raises(CompressorError, match="less than one legal unit"):
        _plan(real_shapes.smolvlm_256m(), method="width", ratio=0.001, targets=["mlp"], round_to=512)


def test_light_recovery_above_20_percent_gets_the_studys_warning(tmp_path):
    import json

    from compressor.api import plan
    from compressor.recipe import parse_recipe

    (tmp_path / "config.json").write_text(json.dumps(real_shapes.llava_1_5_7b()))

    def warnings(ratio, mode):
        recipe = {"model": {"source": str(tmp_path)}, "prune": {"method": "depth", "ratio": ratio}}
        if mode:
            recipe["recover"] = {"mode": mode}
        return [w for w in plan(parse_recipe(recipe)).warnings if w.startswith("recover.mode")]

    assert "consider recover.mode: full" in warnings(0.3, "lora")[0]
    assert warnings(0.3, "projector") and not warnings(0.3, "full") and not warnings(0.15, "lora")
    assert not warnings(0.3, None)  # no recovery asked for

    def method_warnings(method, ratio, max_steps=40):
        recipe = {"model": {"source": str(tmp_path)}, "prune": {"method": method, "ratio": ratio}}
        recipe["recover"] = {"max_steps": max_steps}
        return [w for w in plan(parse_recipe(recipe)).warnings if w.startswith("prune.method depth")]

    said = method_warnings("depth", 0.3)
    assert len(said) == 1 and "74%" in said[0] and "98%" in said[0] and "--method width" in said[0]
    assert not method_warnings("width", 0.3) and not method_warnings("depth", 0.15)
    assert not method_warnings("depth", 0.3, max_steps=None)  # one pass over 5 %: what brought depth back

    def data_warnings(data):
        recipe = {"model": {"source": str(tmp_path)}, "prune": {"method": "width", "ratio": 0.3}}
        recipe["recover"] = {"data": data}
        return [w for w in plan(parse_recipe(recipe)).warnings if w.startswith("recover.data has one source")]

    assert "21% with general text rows mixed in 3:1" in data_warnings({"dataset": "a"})[0]
    assert not data_warnings([{"dataset": "a", "weight": 3}, {"dataset": "b"}])


# LLaVA-1.5-7B at 30 %, hand-computed: a layer is 4·4096² attention (32 heads of 128) + 3·4096·11008 MLP =
# 202 383 360, the backbone 6 738 939 904. Halving the heads (32 -> 16, KV too) removes 4·4096·2048 = 33 554 432
# per layer; each MLP channel 3·4096 = 12 288. gpu / vllm (multiples of 128): 16 heads + MLP 8576 (67·128):
# 32·(33 554 432 + 2432·12 288) / 6 738 939 904 = 30.12 %. gguf (256): no legal head count fits, MLP alone 5888
# (23·256): 32·5120·12 288 / ... = 29.88 %. vllm-tp2: 128 per shard = 256, as gguf. vllm-tp4: 512 per layer,
# 16 heads + MLP 8704 (17·512): 32·(33 554 432 + 2304·12 288) / ... = 29.38 %.
@pytest.mark.parametrize(
    "target, round_to, mlp, heads, ratio",
    [
        ("gpu", 128, 8576, 16, 0.301241),
        ("gguf", 256, 5888, 32, 0.298751),
        ("vllm", 128, 8576, 16, 0.301241),
        ("vllm-tp2", 256, 5888, 32, 0.298751),
        ("vllm-tp4", 512, 8704, 16, 0.293772),
    ],
)
def test_serving_targets_set_the_widths(target, round_to, mlp, heads, ratio):
    plan = _plan(real_shapes.llava_1_5_7b(), method="width", ratio=0.3, target=target)
    assert (plan.round_to, plan.intermediate_after, plan.heads_after, plan.kv_heads_after) == (
        round_to,
        mlp,
        heads,
        heads,
    )
    assert plan.achieved_ratio == pytest.approx(ratio, abs=1e-6)
    rows = [line for line in plan.table().splitlines() if line.startswith("serving target ")]
    assert len(rows) == 1 and rows[0].split(None, 2)[2].startswith(f"{target}: "), rows
    default = _plan(real_shapes.llava_1_5_7b(), method="width", ratio=0.3)
    assert (default.target, default.round_to, default.intermediate_after) == ("default", 64, 8576)
    assert "serving target" not in default.table()


def test_a_tp_target_keeps_head_counts_divisible():
    """LLaVA-1.5-7B at 45 %: every head count the plan may pick under tensor parallel 4 divides by 4."""
    text = dict(real_shapes.llava_1_5_7b())
    plan = _plan(text, method="width", ratio=0.45, target="vllm-tp4")
    assert plan.heads_after % 4 == 0 and plan.kv_heads_after % 4 == 0


def test_target_on_depth_is_refused_with_the_reason():
    from compressor.recipe import parse_recipe

    with pytest.raises(CompressorError, match="applies to method: width only"):
        parse_recipe({"model": {"source": "x"}, "prune": {"method": "depth", "ratio": 0.3, "target": "gguf"}})


def test_a_gguf_target_holds_in_the_pruned_checkpoint(tmp_path):
    from transformers import AutoModelForImageTextToText

    from compressor import api
    from compressor.recipe import parse_recipe
    from compressor.tiny import build_model, build_processor

    source = tmp_path / "src"
    build_model("llava", intermediate_size=1024).save_pretrained(source)
    build_processor("llava").save_pretrained(source)
    recipe = parse_recipe(
        {
            "model": {"source": str(source)},
            "prune": {"method": "width", "ratio": 0.3, "scorer": "magnitude", "target": "gguf"},
        }
    )
    report = api.prune(recipe, tmp_path / "out")
    assert report.plan.target == "gguf" and report.plan.round_to == 256
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    inter = model.config.text_config.intermediate_size
    assert inter % 256 == 0 and inter < 1024
    assert all(layer.mlp.down_proj.in_features == inter for layer in model.model.language_model.layers)


def test_the_gguf_target_warns_about_rows_it_cannot_align():
    """SmolLM2's hidden 576 is never a multiple of 256 and 6 query heads x 64 = 384 is not either (llama.cpp keeps
    those tensors in a bigger type, measured in benchmarks/serving.py); LLaVA-1.5-7B's widths all align."""
    small = _plan(real_shapes.smolvlm_256m(), method="width", ratio=0.45, target="gguf")
    gguf = [w for w in small.warnings if w.startswith("gguf:")]
    assert any("hidden size 576" in w for w in gguf)
    q = small.heads_after * small.head_dim
    assert (f"rows of {q}" in " ".join(gguf)) == (q % 256 != 0 and q != 576)
    big = _plan(real_shapes.llava_1_5_7b(), method="width", ratio=0.3, target="gguf")
    assert not [w for w in big.warnings if w.startswith("gguf:")]
    assert not [
        w for w in _plan(real_shapes.smolvlm_256m(), method="width", ratio=0.45).warnings if "gguf" in w
    ]
