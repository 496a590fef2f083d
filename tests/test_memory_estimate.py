"""The plan's memory estimate (compressor.hardware) against measured peaks, and the hardware it names.

Measured: the peak of live tensor bytes of each stage, run by the product's own code in a process of its own (forked from compressor.warm's server)
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
    # hand-counted: Vicuna-7B 32 x (4·4096² + 3·4096·11008 + 2·4096) + 2 x 32064·4096 (embedding, untied head)
    # + 4096 = 6 738 939 904; CLIP-L/336 303 507 456; projector 1024·4096 + 4096² + 2·4096 = 20 979 712
    whole = 6_738_939_904 + 303_507_456 + 20_979_712
    pruned = whole - 10 * 202_383_360  # 32 -> 22 layers of 202 383 360
    assert (
        (plan.params.total_before, plan.params.total_after)
        == (whole, pruned)
        == (7_063_427_072, 5_039_593_472)
    )
    stages = {s.stage: s for s in plan.memory.stages}
    assert list(stages) == ["scoring", "recovery", "evaluation"]
    assert stages["scoring"].parts["weights"] == 2 * whole  # bf16
    assert (
        stages["recovery"].parts["teacher"] == 2 * whole and stages["recovery"].parts["student"] > 2 * pruned
    )
    assert (stages["evaluation"].parts["original"], stages["evaluation"].parts["compressed"]) == (
        2 * whole,
        2 * pruned,
    )
    table = plan.table()
    for line in (
        "memory: scoring             14 GB GPU / 28 GB CPU (block_influence, 50 x 1024 tokens)",
        "memory: recovery            28 GB GPU / 57 GB CPU (lora, batch 4 x 2048, teacher)",
        "memory: evaluation          25 GB GPU / 50 GB CPU (original + compressed)",
        "memory: fits                smallest GPU A100 40GB (40 GB); HF Jobs flavour l40sx1",
    ):
        assert line in table.splitlines(), table
    # 7B: the recovery's student, teacher and activations need more than a 24 GB GPU: an A100 40GB; on Jobs
    # the smallest flavour with room is an L40S (48 GB), and no CPU flavour
    assert (plan.memory.gpu, suggest_flavor(plan)) == ("A100 40GB", "l40sx1")


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
