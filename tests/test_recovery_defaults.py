"""Issue 20's defaults and data: `recover.mode: auto`, mixed recovery data (text-only + image rows), calibration on
text on purpose, and the quality gate (`publish.require`) in front of the push."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compressor.errors import CompressorError
from tests import real_shapes
from tests.test_recover import fast, make_student, write_rows

GB = 10**9


def _plan(config, recover=None, ratio=0.3):
    from compressor.arch import spec_for
    from compressor.plan import resolve
    from compressor.recipe import parse_recipe

    recipe = parse_recipe(
        {"model": {"source": "x/y"}, "prune": {"method": "depth", "ratio": ratio}, "recover": recover or {}}
    )
    spec, backbone = spec_for(config)
    return resolve(config, spec, backbone, recipe.prune, source="test", recipe=recipe), recipe, spec, backbone


def test_auto_mode_picks_by_ratio_and_by_the_memory_estimate() -> None:
    from compressor.hardware import choose_recovery

    config = real_shapes.llava_1_5_7b()
    plan, recipe, spec, backbone = _plan(config)
    assert recipe.recover.mode == "auto"  # the default

    def choose(ratio, device):
        return choose_recovery(ratio, plan, config, spec, backbone, recipe.recover, device=device)

    small = choose(0.15, ("cuda:0 (L4)", 24 * GB))
    assert small.mode == "projector" and "15%" in small.reason
    big = choose(0.30, ("cuda:0 (H200)", 141 * GB))
    assert big.mode == "full" and big.need_bytes < 141 * GB
    tight = choose(0.30, ("cuda:0 (L4)", 24 * GB))
    assert tight.mode == "lora" and tight.need_bytes > 24 * GB and "24" in tight.reason
    # full training of a 7B on the CPU of this kind of machine does not fit either
    assert choose(0.30, ("cpu", 24 * GB)).mode == "lora"
    # full training of the 30 % student (about 4.7 B trainable, AdamW) needs about 100 GB: more than an H100
    assert choose(0.30, ("cuda:0 (H100)", 80 * GB)).mode == "lora"
    # the recipe's own settings count: a batch of 64 needs more than an H200 holds
    heavy = recipe.recover.model_copy(update={"sft": {"per_device_train_batch_size": 64}})
    h200 = ("cuda:0 (H200)", 141 * GB)
    assert choose_recovery(0.30, plan, config, spec, backbone, heavy, device=h200).mode == "lora"


def test_the_plan_says_what_auto_chose_and_why_and_estimates_that_mode() -> None:
    plan, *_ = _plan(real_shapes.smolvlm_256m(), ratio=0.3)
    assert plan.recovery is not None and plan.recovery.mode == "full"  # 256 M fits this machine's RAM
    assert "recovery (auto)" in plan.table() and plan.recovery.reason in plan.table()
    recovery = next(s for s in plan.memory.stages if s.stage == "recovery")
    assert recovery.detail.startswith("full,")
    plan15, *_ = _plan(real_shapes.smolvlm_256m(), ratio=0.15)
    assert plan15.recovery.mode == "projector"
    assert next(s for s in plan15.memory.stages if s.stage == "recovery").detail.startswith("projector,")
    named, *_ = _plan(real_shapes.smolvlm_256m(), recover={"mode": "lora"})
    assert named.recovery is None  # a recipe that names its mode keeps it


def _text_rows(folder: Path, n: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"Say something about {i}."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "words " * (3 + i % 3)}]},
            ]
        }
        for i in range(n)
    ]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("family", ["llava", "idefics3", "qwen2_vl", "gemma3", "internvl", "llava_next"])
def test_mixed_sources_train_in_mixed_batches_with_the_weights_shares(tiny_saved, tmp_path, family) -> None:
    from compressor.recover import run

    teacher = tiny_saved(family)
    student = make_student(teacher, family, tmp_path / "student")
    images, text = write_rows(tmp_path / "images", n=12), _text_rows(tmp_path / "text", n=6)
    cfg = fast(
        max_steps=4,
        data=[{"dataset": str(images), "weight": 3}, {"dataset": str(text), "weight": 1, "fraction": 0.5}],
        sft={"per_device_train_batch_size": 4},
    )
    report = run(student, teacher, cfg, None, tmp_path / "out")
    # auto: a 30 % depth-pruned tiny model trains fully on this machine
    assert report.mode == "full" and report.mode_choice["mode"] == "full"
    sources = report.data["sources"]
    assert [s["drawn"] for s in sources] == [12, 3]  # each source's own fraction
    assert [s["stream"] for s in sources] == [11, 4] and sum(s["stream"] for s in sources) == report.data[
        "used"
    ]
    assert [s["share"] for s in sources] == [round(11 / 15, 4), round(4 / 15, 4)]  # 3:1 of 15 rows
    seen = report.data["seen"]
    assert sum(seen.values()) >= 15 and seen[str(text)] >= 3  # 4 steps over the 15 rows, text rows among them
    assert report.data["mixed_batches"] >= 1  # image and text-only rows in one batch
    assert report.losses and all(e["loss"] == e["loss"] for e in report.losses)  # finite, not NaN
    card_line = json.loads((tmp_path / "out" / "train_report.json").read_text())["data"]["sources"]
    assert card_line == sources


def test_the_interleaving_keeps_the_proportions_in_every_stretch() -> None:
    from compressor.recover.data import interleave, shares

    assert shares([100, 10], [3, 1]) == [83, 27] and sum(shares([7, 5, 1], [1, 1, 1])) == 13
    order = interleave([75, 25])
    assert len(order) == 100 and order.count(1) == 25
    assert all(order[i : i + 4].count(1) == 1 for i in range(0, 100, 4))  # one text row per four, throughout
    assert interleave([75, 25]) == order  # reproducible


def test_data_flag_repeats_with_weights_and_a_bad_weight_is_named(tmp_path) -> None:
    import argparse

    from compressor.recover.command import add_parser, config_from_args

    root = argparse.ArgumentParser().add_subparsers()
    parser = add_parser(root)
    args = parser.parse_args(
        ["s", "--out", "o", "--data", "vqa-rows:3", "--data", "org/text:1", "--split", "x"]
    )
    cfg, _ = config_from_args(args)
    assert [(d.dataset, d.weight, d.split) for d in cfg.sources] == [
        ("vqa-rows", 3.0, "x"),
        ("org/text", 1.0, "x"),
    ]
    one, _ = config_from_args(parser.parse_args(["s", "--out", "o", "--data", "org/rows"]))
    assert one.sources[0].dataset == "org/rows" and one.mode == "auto"
    with pytest.raises(CompressorError, match=r"--data 'b:x'.*must be a number"):
        config_from_args(parser.parse_args(["s", "--out", "o", "--data", "a:1", "--data", "b:x"]))
    from compressor.recover.config import parse_recover

    with pytest.raises(CompressorError, match="weight"):
        parse_recover({"data": [{"dataset": "a", "weight": 0}, {"dataset": "b"}]})
    with pytest.raises(CompressorError, match="needs its dataset"):
        parse_recover({"data": [{"dataset": "a"}, {"split": "train"}]})


def test_calibration_on_text_only_when_asked_and_refused_otherwise(tiny_saved, tmp_path) -> None:
    from compressor import api
    from compressor.arch import spec_for
    from compressor.models import load_processor
    from compressor.recipe import parse_recipe

    source = tiny_saved("llava")
    config = json.loads((source / "config.json").read_text())
    spec, _ = spec_for(config)
    processor = load_processor(source)
    images, text = write_rows(tmp_path / "images", n=6), _text_rows(tmp_path / "text", n=6)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    rows = [json.loads(x) for x in (images / "data.jsonl").read_text().splitlines()]
    rows = [{**r, "images": [f"../images/{r['images'][0]}"]} for r in rows]
    rows += [json.loads(x) for x in (text / "data.jsonl").read_text().splitlines()]
    (mixed / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def batches(dataset, modality=None):
        cal = {"dataset": str(dataset), "num_samples": 4, **({"modality": modality} if modality else {})}
        recipe = parse_recipe(
            {"model": {"source": str(source)}, "prune": {"method": "depth", "ratio": 0.3, "calibration": cal}}
        )
        plan = api.plan(recipe)
        return plan, api.calibration_batches(recipe, plan, spec, processor, config)

    with pytest.raises(CompressorError, match=r"prune.calibration.modality: text.*--calibration-modality"):
        batches(text)
    plan, got = batches(text, "text")
    assert len(got) == 4 and not any("pixel_values" in b for b in got)
    assert any("measured on text only" in w for w in plan.warnings)
    _, stripped = batches(images, "text")  # image rows with their images dropped
    image_id = config.get("image_token_id", config.get("image_token_index"))
    assert image_id is not None
    assert not any("pixel_values" in b or (b["input_ids"] == image_id).any() for b in stripped)
    _, with_images = batches(images)
    assert all("pixel_values" in b for b in with_images)
    plan, both = batches(mixed, "mixed")
    kinds = {"pixel_values" in b for b in batches(mixed, "mixed")[1] + both}
    assert kinds == {True, False} and any("mixed" in w for w in plan.warnings)


def test_gate_keys_are_checked_when_the_recipe_loads() -> None:
    from compressor.recipe import parse_recipe

    base = {
        "model": {"source": "a/b"},
        "prune": {"method": "depth", "ratio": 0.3},
        "evaluate": {"tasks": [{"name": "vqa", "dataset": "d"}]},
    }

    def recipe(require, **extra):
        return parse_recipe({**base, **extra, "publish": {"repo_id": "a/c", "require": require}})

    assert recipe({"average_retained": 0.95, "vqa.accuracy": 0.9}).publish.require["vqa.accuracy"] == 0.9
    with pytest.raises(CompressorError, match=r"95.*share.*0.95"):
        recipe({"average_retained": 95})
    with pytest.raises(CompressorError, match=r"task 'pope', which evaluate does not run \(its tasks: vqa\)"):
        recipe({"pope": 0.9})
    with pytest.raises(CompressorError, match="TASK.METRIC"):
        recipe({"vqa.accuracy.x": 0.9})
    with pytest.raises(CompressorError, match="no evaluate section"):
        parse_recipe(
            {**base, "evaluate": None, "publish": {"repo_id": "a/c", "require": {"average_retained": 0.9}}}
        )


@pytest.fixture
def gated(hub_server, tiny_saved, tmp_path, repo_name, monkeypatch):
    """A recipe without recovery whose evaluation includes perplexity (defined on a random tiny model)."""
    from compressor.demo import write_dataset, write_eval_sets
    from tests.fixtures_hub import ALICE_WRITE

    data = write_dataset(tmp_path / "shapes", n=8)
    evals = write_eval_sets(tmp_path, n=8)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "data.jsonl").write_text(
        "".join(json.dumps({"text": "a red circle " * 6}) + "\n" for _ in range(3))
    )
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)

    def write(name: str, require: dict[str, float]) -> tuple[Path, str]:
        repo = f"alice/{repo_name}-{name}"
        recipe = {
            "model": {"source": str(tiny_saved("llava"))},
            "prune": {
                "method": "depth",
                "ratio": 0.3,
                "calibration": {"dataset": str(data), "num_samples": 2},
            },
            "evaluate": {
                "tasks": [
                    {"name": "vqa", "dataset": str(evals["vqa"]), "split": "train", "limit": 2},
                    {"name": "perplexity", "dataset": str(texts), "split": "train", "limit": 3},
                ],
                "speed": False,
            },
            "publish": {"repo_id": repo, "require": require},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path, repo

    return write


def test_the_gate_blocks_a_push_below_it_and_lets_a_good_one_through(gated, tmp_path, capsys) -> None:
    from huggingface_hub import HfApi, ModelCard

    from compressor.cli import main
    from tests.fixtures_hub import ALICE_WRITE

    hub = HfApi(token=ALICE_WRITE)
    path, repo = gated("strict", {"perplexity": 2.0})
    run_dir = tmp_path / "strict-run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) != 0
    err = capsys.readouterr().err
    assert "quality gate publish.require not met, nothing was pushed" in err
    assert "perplexity >= 200.0 %" in err and "NOT met" in err and str(run_dir) in err
    assert not hub.repo_exists(repo)  # nothing reached the Hub
    assert (run_dir / "reports" / "eval.json").is_file() and not (run_dir / "reports" / "push.json").exists()
    assert (run_dir / "pruned" / "model.safetensors").is_file()  # the model is kept for the user to decide
    assert "NOT met" in (run_dir / "pruned" / "README.md").read_text()

    path, repo = gated("lenient", {"perplexity": 0.01})
    assert main(["run", str(path), "--run-dir", str(tmp_path / "lenient-run")]) == 0
    assert hub.repo_exists(repo)
    card = ModelCard.load(repo, token=ALICE_WRITE).text
    assert "**Quality gate** (`publish.require`): passed." in card and "perplexity >= 1.0 %" in card


def test_the_apps_form_keeps_and_edits_a_list_of_sources() -> None:
    from compressor.app.form import recipe_dict, widget_values
    from compressor.recipe import parse_recipe

    sources = [{"dataset": "org/vqa", "weight": 3.0, "fraction": 0.1}, {"dataset": "org/text", "weight": 1.0}]
    base = {
        "model": {"source": "a/b"},
        "prune": {"method": "depth", "ratio": 0.3},
        "recover": {"data": sources},
    }
    values = widget_values(parse_recipe(base))
    assert values["train_data"] == "org/vqa:3, org/text:1" and values["mode"] == "auto"
    assert recipe_dict(base, values)["recover"]["data"] == sources  # untouched: the per-source fraction stays
    values["train_data"] = "org/vqa:1, org/more:2"
    edited = recipe_dict(base, values)["recover"]["data"]
    assert edited == [
        {"dataset": "org/vqa", "weight": 1.0, "fraction": 0.1},
        {"dataset": "org/more", "weight": 2.0},
    ]
    assert parse_recipe(recipe_dict(base, values)).recover.sources[1].dataset == "org/more"


def test_a_run_trains_in_the_mode_its_plan_chose_and_the_card_says_why(tiny_saved, tmp_path) -> None:
    from compressor import api
    from compressor.demo import write_dataset
    from compressor.recipe import parse_recipe

    data = write_dataset(tmp_path / "shapes", n=8)
    recipe = parse_recipe(
        {
            "model": {"source": str(tiny_saved("llava"))},
            "prune": {"method": "depth", "ratio": 0.3, "scorer": "last"},
            "recover": {
                "loss": {"ce": 1.0},
                "fraction": 1.0,
                "max_steps": 1,
                "data": {"dataset": str(data)},
                "sft": {"per_device_train_batch_size": 2},
            },
        }
    )
    run_dir = tmp_path / "run"
    api.run(recipe, run_dir)
    plan = json.loads((run_dir / "plan.json").read_text())
    train = json.loads((run_dir / "reports" / "recover.json").read_text())
    assert plan["recovery"]["mode"] == train["mode"] == train["mode_choice"]["mode"] == "full"
    card = (run_dir / "recovered" / "README.md").read_text()
    assert "chosen by `recover.mode: auto`: ratio 30% > 15%" in card


def test_recovery_warnings_follow_the_studys_budgets() -> None:
    """Depth is warned about only with a fixed step budget below the rows that brought it back in study v2, counted
    with the recipe's batch and accumulation over our defaults; nothing at 15 % (the other warnings: test_plan)."""
    from compressor.api import DEPTH_ROWS_NEEDED, recovery_warnings
    from compressor.recipe import parse_recipe

    def warnings(method="depth", ratio=0.3, **recover):
        recipe = parse_recipe(
            {"model": {"source": "x/y"}, "prune": {"method": method, "ratio": ratio}, "recover": recover}
        )
        return recovery_warnings(recipe)

    assert warnings() == []  # the default budget (one pass over 5 %) is the one that recovered depth
    short = warnings(max_steps=40, sft={"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1})
    assert len(short) == 1 and "recover.max_steps 40 (320 rows)" in short[0] and "98.9%" in short[0]
    assert warnings(max_steps=40) and "(640 rows)" in warnings(max_steps=40)[0]  # our 4 x 4 rows a step
    assert warnings(max_steps=-(-DEPTH_ROWS_NEEDED // 16)) == []  # enough rows: no warning
    assert warnings(max_steps=40, ratio=0.15) == []


def test_the_plan_points_image_calibration_at_the_mixed_calibration_result() -> None:
    """Image calibration followed by recovery above 20 % gets study v2's mixed-calibration numbers; mixed and text
    calibration, no recovery, a light ratio or a data-free scorer do not."""
    from compressor.api import calibration_notes
    from compressor.recipe import parse_recipe

    def notes(ratio=0.3, recover=True, **calibration):
        recipe = parse_recipe(
            {
                "model": {"source": "x/y"},
                "prune": {"method": "depth", "ratio": ratio, "calibration": {"dataset": "d", **calibration}},
                **({"recover": {}} if recover else {}),
            }
        )
        return calibration_notes(recipe)

    (note,) = notes()
    assert (
        "modality image at ratio 30% with recovery" in note
        and "94.9%" in note
        and "--calibration-modality" in note
    )
    assert notes(ratio=0.15) == [] and notes(recover=False) == [] and notes(dataset=None) == []
    assert "mixed" in notes(modality="mixed")[0] and "94.9%" not in notes(modality="mixed")[0]
    assert "text only" in notes(modality="text")[0]
