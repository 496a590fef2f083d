"""The plan's memory estimate (compressor.hardware) against measured peaks, and the hardware it names.

Measured: the peak of live tensor bytes of each stage, run by the product's own code in a fresh process
(weights at the stage's start + the CPU allocator's peak rise recorded by PyTorch's profiler; see
benchmarks/memory_estimate.py for why not RSS). The estimate comes from config.json and the recipe alone.
The whole table, SmolLM2-shaped recovery included: `.venv/bin/python benchmarks/memory_estimate.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import real_shapes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

TOLERANCE = 0.25


@pytest.mark.parametrize(
    "case",
    [
        "tiny:taylor",
        "tiny:block_influence",
        "tiny:recover-projector",
        "tiny:recover-lora",
        "tiny:recover-full",
        "tiny:eval",
        "smollm2:block_influence",
    ],
)
def test_estimate_is_within_25_percent_of_the_measured_peak(case: str) -> None:
    import memory_estimate

    row = memory_estimate.measure(case, timeout=300)
    ratio = row["estimate"] / row["measured"]
    assert abs(ratio - 1) <= TOLERANCE, (
        f"{case}: estimate {row['estimate'] / 1e6:.2f} MB vs measured {row['measured'] / 1e6:.2f} MB "
        f"(weights {row['static'] / 1e6:.2f} + rise {row['dynamic'] / 1e6:.2f}); parts {row['parts']}"
    )


# ---------------------------------------------------------------------------- the plan's hardware


def _plan(config, **sections):
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import parse_recipe

    recipe = parse_recipe({"model": {"source": "x/y"}, **sections})
    spec, backbone = spec_for(config)
    return resolve(config, spec, backbone, recipe.prune, source="test", recipe=recipe)


DEPTH = {"method": "depth", "ratio": 0.3}


def test_flavour_names_are_the_hub_clients() -> None:
    from huggingface_hub import JobHardware

    from compressor import hardware

    known = {h.value for h in JobHardware}
    assert {f.name for f in hardware.FLAVORS} <= known
    assert all(f.gpu is None or f.gpu in hardware.GPUS for f in hardware.FLAVORS)


def test_plan_shows_memory_per_stage_and_the_hardware() -> None:
    from compressor.hardware import suggest_flavor

    plan = _plan(real_shapes.llava_1_5_7b(), prune=DEPTH, recover={"mode": "lora"}, evaluate={"tasks": []})
    stages = [s.stage for s in plan.memory.stages]
    assert stages == ["scoring", "recovery", "evaluation"]
    table = plan.table()
    for stage in stages:
        assert f"memory: {stage}" in table
    assert f"HF Jobs flavour {plan.memory.flavor}" in table
    # 7B: the recovery's student, teacher and activations need more than a 24 GB GPU, and no CPU flavour
    assert plan.memory.gpu not in ("T4", "L4", "A10G") and not suggest_flavor(plan).startswith("cpu")
    assert suggest_flavor(plan) == plan.memory.flavor
    weights = plan.params.total_before * 2
    assert plan.memory.stages[0].gpu_bytes > weights  # the unpruned model in bf16, and the scoring's work


def test_estimate_follows_the_recipe() -> None:
    def recovery(**recover):
        plan = _plan(real_shapes.smolvlm_256m(), prune=DEPTH, recover=recover)
        return plan.memory.stages[1].gpu_bytes

    assert recovery(mode="projector") < recovery(mode="lora") < recovery(mode="full")
    assert recovery(mode="full", sft={"per_device_train_batch_size": 8}) > recovery(mode="full")
    no_ckpt = {"activation_checkpointing": False}
    assert recovery(mode="lora", sft=no_ckpt) > recovery(mode="lora")
    assert recovery(mode="lora", loss={"ce": 1.0}) < recovery(mode="lora")  # no teacher
    only_prune = _plan(real_shapes.smolvlm_256m(), prune=DEPTH)
    assert [s.stage for s in only_prune.memory.stages] == ["scoring"]


def test_small_models_get_a_cpu_flavour_and_unknown_plans_a_guess() -> None:
    from compressor.hardware import suggest_flavor
    from compressor.tiny import tiny_config

    plan = _plan(tiny_config("llava").to_dict(), prune=DEPTH, recover={"mode": "full"})
    assert suggest_flavor(plan) == "cpu-basic"
    bare = plan.model_copy(update={"memory": None})
    assert suggest_flavor(bare) == "cpu-basic"
