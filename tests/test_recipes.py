"""Every recipe file is a test case: it validates, and it plans against its model's real config shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor import api
from compressor.recipe import dump_recipe, load_recipe, parse_recipe
from tests import real_shapes

ROOT = Path(__file__).parent.parent
# recipes/accelerate/ are accelerate configs, not recipes; the demo's recipe ships inside the package
RECIPES = [*sorted((ROOT / "recipes").glob("*.yaml")), ROOT / "compressor" / "demo.yaml"]
SHAPES = {
    "demo/tiny-llava": lambda: __import__("compressor.tiny").tiny.tiny_config("llava").to_dict(),
    "llava-hf/llava-1.5-7b-hf": real_shapes.llava_1_5_7b,
    "BAAI/Bunny-v1_0-3B": real_shapes.bunny_v1_0_3b,
    "Qwen/Qwen2.5-VL-3B-Instruct": real_shapes.qwen2_5_vl_3b,
    "HuggingFaceTB/SmolVLM-256M-Instruct": real_shapes.smolvlm_256m,
}


def test_the_recipes_cover_the_issue():
    names = {p.stem for p in RECIPES}
    for expected in (
        "llava-1.5-7b-depth15-projector",
        "llava-1.5-7b-depth15-kd",
        "llava-1.5-7b-depth30-projector",
        "llava-1.5-7b-depth30-kd",
        "llava-1.5-7b-width30-kd",
        "llava-1.5-7b-width45-kd",
    ):
        assert expected in names
    assert {load_recipe(p).model.source for p in RECIPES} == set(SHAPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_and_plans(path, tmp_path):
    recipe = load_recipe(path)
    assert parse_recipe(__import__("yaml").safe_load(dump_recipe(recipe))) == recipe  # dump round-trips
    (tmp_path / "config.json").write_text(json.dumps(SHAPES[recipe.model.source]()))
    local = recipe.model_copy(update={"model": recipe.model.model_copy(update={"source": str(tmp_path)})})
    plan = api.plan(local)
    assert abs(plan.achieved_ratio - recipe.prune.ratio) < 0.03
    assert plan.params.backbone_after < plan.params.backbone_before
    if recipe.recover is not None and recipe.recover.mode != "projector":
        assert recipe.recover.uses_teacher  # the seed's best: SFT + hidden-state distillation
