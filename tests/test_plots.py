"""The run's pictures (compressor.plots): drawn as the stages end, true to the reports, on the card, pushed.

Two real runs of `api.run` on the tiny LLaVA, once per module: width pruning with recovery, evaluation and a
push to the embedded Hub; depth pruning without recovery (cheap), for the dropped layers.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path

import pytest

from compressor import api, plots
from compressor.demo import write_dataset, write_eval_sets
from compressor.recipe import parse_recipe
from tests.fixtures_hub import ALICE_WRITE

pytestmark = pytest.mark.slow  # end to end: started first when xdist hands out the files

PNG = b"\x89PNG\r\n\x1a\n"


def _recipe(data: Path, evals: dict[str, Path] | None, model: Path, **changes):
    recipe = {
        "model": {"source": str(model)},
        "prune": {
            "method": "width",
            "ratio": 0.3,
            "round_to": 16,
            "calibration": {"dataset": str(data), "num_samples": 2},
        },
    }
    if evals:
        recipe["evaluate"] = {
            "tasks": [
                {"name": "vqa", "dataset": str(evals["vqa"]), "split": "train", "limit": 4},
                {"name": "yes_no", "dataset": str(evals["yes_no"]), "split": "train", "limit": 4},
                # a random tiny model answers nothing right (retained undefined); its perplexity has a ratio
                {"name": "perplexity", "dataset": str(evals["text"]), "split": "train"},
            ],
            "speed_repeats": 1,
            "speed_new_tokens": 2,
            "speed_memory": False,
        }
    for key, value in changes.items():
        recipe[key] = value
    return recipe


@pytest.fixture(scope="module")
def inputs(tiny_saved, tmp_path_factory):
    root = tmp_path_factory.mktemp("plots-data")
    evals = write_eval_sets(root, n=8)
    evals["text"] = root / "text"
    evals["text"].mkdir()
    (evals["text"] / "data.jsonl").write_text(
        "".join(json.dumps({"text": f"held-out text number {i}, with words."}) + "\n" for i in range(3))
    )
    return write_dataset(root / "shapes", n=12), evals, tiny_saved("llava")


@pytest.fixture(scope="module")
def width_run(hub_server, inputs, tmp_path_factory):
    """A finished width run (prune, 3 recovery steps, eval, card, push): (run folder, summary, repo id)."""
    data, evals, model = inputs
    repo_id = f"alice/plots-{uuid.uuid4().hex[:8]}"
    recipe = _recipe(
        data,
        evals,
        model,
        recover={
            "mode": "lora",
            "loss": {"ce": 0.5, "hidden_mse": 0.5},
            "fraction": 1.0,
            "max_steps": 3,
            "data": {"dataset": str(data)},
            "sft": {"per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": 100},
        },
        publish={"repo_id": repo_id, "private": True},
    )
    run_dir = tmp_path_factory.mktemp("plots-width") / "run"
    summary = api.run(parse_recipe(recipe), run_dir, token=ALICE_WRITE)
    return run_dir, summary, repo_id


@pytest.fixture(scope="module")
def depth_run(inputs, tmp_path_factory):
    """A finished depth run by block influence, no recovery, no eval: the run folder."""
    data, _, model = inputs
    recipe = _recipe(data, None, model)
    recipe["prune"].update(method="depth", scorer="block_influence")
    run_dir = tmp_path_factory.mktemp("plots-depth") / "run"
    api.run(parse_recipe(recipe), run_dir)
    return run_dir


def _report(run_dir: Path, stage: str):
    return json.loads((run_dir / "reports" / f"{stage}.json").read_text())


def _image(path: Path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG, path
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB"), len(data)


def _count(img, rgb: tuple[int, int, int], tol: int = 12) -> int:
    """Pixels of about this colour."""
    return sum(1 for px in img.getdata() if all(abs(a - b) <= tol for a, b in zip(px, rgb)))


RED, BLUE = (214, 39, 40), (31, 119, 180)  # matplotlib's tab:red and tab:blue


def test_each_stage_leaves_its_picture(width_run):
    run_dir, summary, _ = width_run
    assert summary["stages"] == ["prune", "recover", "eval", "push"]
    for name in plots.NAMES:
        path = run_dir / "plots" / f"{name}.png"
        img, size = _image(path)
        assert 5_000 < size <= 60_000, (name, size)
        assert 500 <= img.width <= 800 and 200 <= img.height <= 800, (name, img.size)
        assert _count(img, BLUE) > 100, f"{name}: no data drawn"


def test_depth_importance_is_the_prune_reports_scores_with_the_dropped_layers_red(depth_run):
    prune = _report(depth_run, "prune")
    data = plots.importance_data(depth_run)
    assert data["scores"] == prune["layer_scores"] and data["dropped"] == prune["dropped_layers"]
    assert data["dropped"] and data["num_layers"] == prune["plan"]["num_layers_before"]
    img, _ = _image(depth_run / "plots" / "importance.png")
    red = _count(img, RED)
    assert red > 200, "the dropped layers are drawn red"
    # the same layers drawn with nothing dropped have no red bar: the colour marks the dropped ones
    plain = plots.draw_importance({**data, "dropped": []}, depth_run.parent / "plain.png")
    assert _count(_image(plain)[0], RED) < red / 20


def test_width_importance_is_the_mean_of_kept_and_removed_units(width_run):
    run_dir, _, _ = width_run
    prune = _report(run_dir, "prune")
    data = plots.importance_data(run_dir)
    mlp = next(p for p in data["panels"] if p["unit"] == "MLP channels")
    assert len(mlp["kept"]) == len(prune["mlp_scores"])
    for i, scores in enumerate(prune["mlp_scores"]):
        kept = set(prune["kept_channels"][i])
        removed = [s for j, s in enumerate(scores) if j not in kept]
        assert removed, "30 % width pruning removes channels in every layer"
        assert mlp["removed"][i] == pytest.approx(sum(removed) / len(removed))
        assert mlp["removed"][i] <= mlp["kept"][i], "the kept channels are the highest-scoring"


def test_widths_are_the_plans(width_run, depth_run):
    run_dir, _, _ = width_run
    plan = json.loads((run_dir / "plan.json").read_text())
    w = plots.widths_data(run_dir)
    n = plan["num_layers_before"]
    assert w["mlp_before"] == [plan["intermediate_before"]] * n
    assert (
        w["mlp_kept"] == [plan["intermediate_after"]] * n
        and plan["intermediate_after"] < plan["intermediate_before"]
    )
    assert w["heads_kept"] == [plan["heads_after"]] * n
    d = plots.widths_data(depth_run)
    dropped = _report(depth_run, "prune")["dropped_layers"]
    dplan = json.loads((depth_run / "plan.json").read_text())
    assert d["dropped"] == dropped
    for i in range(dplan["num_layers_before"]):
        assert d["mlp_kept"][i] == (0 if i in dropped else dplan["intermediate_before"])
        assert d["heads_kept"][i] == (0 if i in dropped else dplan["heads_before"])


def test_losses_are_the_train_reports_terms(width_run):
    run_dir, _, _ = width_run
    train = _report(run_dir, "recover")
    data = plots.losses_data(run_dir)
    assert set(data["series"]) == {"loss", "loss_ce", "loss_hidden_mse"}
    steps, values = data["series"]["loss_hidden_mse"]
    assert steps == [e["step"] for e in train["losses"]] == [1, 2, 3]
    assert values == [e["loss_hidden_mse"] for e in train["losses"]]
    assert data["series"]["loss"][1] == [e["loss"] for e in train["losses"]]


def test_scores_are_the_eval_reports_retained(width_run, tmp_path):
    run_dir, _, _ = width_run
    data = plots.scores_data(run_dir)
    assert [r["label"] for r in data["rows"]] == ["vqa", "yes_no", "yes_no f1", "perplexity"]
    by_task: dict[str, list[float]] = {}
    for r in data["rows"]:  # retained % by its definition: compressed / original; perplexity the other way
        o, c = r["original"], r["compressed"]
        num, den = (o, c) if r["label"] == "perplexity" else (c, o)
        want = None if den == 0 else 100 * num / den
        assert r["retained"] == (None if want is None else pytest.approx(want)), r
        if want is not None:
            by_task.setdefault(r["label"].split()[0], []).append(want)
    tasks = [sum(v) / len(v) for v in by_task.values()]
    assert data["rows"][-1]["retained"] is not None and data["average"] == pytest.approx(
        sum(tasks) / len(tasks)
    )
    # a report written by hand: only primary metrics are drawn, labelled by task (and metric unless it is the
    # task's accuracy), with the report's numbers
    metric = {"higher_is_better": True, "primary": True}
    report = {
        "tasks": [
            {
                "name": "vqa",
                "metrics": {"accuracy": {**metric, "original": 0.8, "compressed": 0.6, "retained": 75.0}},
            },
            {
                "name": "yes_no",
                "metrics": {
                    "accuracy": {**metric, "original": 0.5, "compressed": 0.5, "retained": 100.0},
                    "yes_ratio": {"original": 0.4, "compressed": 0.9, "retained": None, "primary": False},
                    "f1": {**metric, "original": 0.0, "compressed": 0.2, "retained": None},
                },
            },
            {
                "name": "perplexity",
                "metrics": {
                    "perplexity": {
                        **metric,
                        "higher_is_better": False,
                        "original": 10.0,
                        "compressed": 12.5,
                        "retained": 80.0,
                    }
                },
            },
        ],
        "average_retained": 85.0,
    }
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "eval.json").write_text(json.dumps(report))
    assert plots.scores_data(tmp_path) == {
        "rows": [
            {"label": "vqa", "original": 0.8, "compressed": 0.6, "retained": 75.0},
            {"label": "yes_no", "original": 0.5, "compressed": 0.5, "retained": 100.0},
            {"label": "yes_no f1", "original": 0.0, "compressed": 0.2, "retained": None},
            {"label": "perplexity", "original": 10.0, "compressed": 12.5, "retained": 80.0},
        ],
        "average": 85.0,
    }


def test_pictures_are_deterministic(width_run, tmp_path):
    run_dir, _, _ = width_run
    for name in plots.NAMES:
        data_of, drawer = plots.PICTURES[name]
        again = drawer(data_of(run_dir), tmp_path / f"{name}.png")
        assert again.read_bytes() == (run_dir / "plots" / f"{name}.png").read_bytes(), name


def test_the_card_embeds_the_pictures_and_the_push_carries_them(width_run, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    run_dir, summary, repo_id = width_run
    card = (Path(summary["model"]) / "README.md").read_text()
    assert "](plots/importance.png)" in card and "](plots/scores.png)" in card
    assert card.index("plots/importance.png") < card.index("## Recovery") < card.index("plots/scores.png")
    files = set(HfApi(token=ALICE_WRITE).list_repo_files(repo_id))
    assert {"plots/importance.png", "plots/scores.png", "README.md", "model.safetensors"} <= files
    assert not {"plots/widths.png", "plots/losses.png"} & files, "only the card's pictures travel"
    got = hf_hub_download(repo_id, "plots/importance.png", token=ALICE_WRITE, cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == (run_dir / "plots" / "importance.png").read_bytes()


def test_the_allow_list_takes_pictures_in_plots_only():
    from compressor.hub import publishable

    assert publishable("plots/importance.png") and publishable("plots/scores.png")
    for name in (
        "plots/model.safetensors",
        "plots/a.bin",
        "plots/sub/x.png",
        "other/x.png",
        "x.png",
        "plots.png",
    ):
        assert not publishable(name), name
    assert publishable("model.safetensors") and not publishable("plots/config.json")


def test_a_resumed_run_draws_the_missing_pictures(depth_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(depth_run, run_dir)
    before = {n: (run_dir / "plots" / f"{n}.png").read_bytes() for n in ("importance", "widths")}
    for name in before:
        (run_dir / "plots" / f"{name}.png").unlink()
    from compressor.recipe import load_recipe

    summary = api.run(load_recipe(run_dir / "recipe.yaml"), run_dir)
    assert summary["stages"] == ["prune"]
    for name, data in before.items():
        assert (run_dir / "plots" / f"{name}.png").read_bytes() == data
    assert "](plots/importance.png)" in (run_dir / "pruned" / "README.md").read_text()
    assert not (run_dir / "plots" / "losses.png").exists(), "no recovery, no loss curves"


def test_an_old_run_folder_with_train_json_resumes_and_renders_its_card(width_run, tmp_path):
    """Run folders written before the recovery stage took its name keep reports/train.json: a rerun reads it
    as the recovery's report (no recovery again), redraws its loss curves and renders the card's Recovery."""
    run_dir = tmp_path / "run"
    shutil.copytree(width_run[0], run_dir)
    (run_dir / "reports" / "recover.json").rename(run_dir / "reports" / "train.json")
    (run_dir / "plots" / "losses.png").unlink()
    (run_dir / "recovered" / "README.md").unlink()
    weights = (run_dir / "recovered" / "model.safetensors").stat().st_mtime_ns
    from compressor.recipe import load_recipe

    summary = api.run(load_recipe(run_dir / "recipe.yaml"), run_dir, token=ALICE_WRITE)
    assert summary["stages"] == ["prune", "recover", "eval", "push"]
    assert not (run_dir / "reports" / "recover.json").exists(), "the old report is read where it is"
    assert (run_dir / "recovered" / "model.safetensors").stat().st_mtime_ns == weights, "no recovery again"
    assert (run_dir / "plots" / "losses.png").read_bytes() == (
        width_run[0] / "plots" / "losses.png"
    ).read_bytes()
    card = (run_dir / "recovered" / "README.md").read_text()
    assert "## Recovery" in card and summary["model"] == str(run_dir / "recovered")


def test_a_picture_that_fails_leaves_the_run_whole_with_a_warning(inputs, tmp_path, monkeypatch, caplog):
    data, _, model = inputs
    recipe = _recipe(data, None, model)
    recipe["prune"].update(method="depth", scorer="block_influence")

    def broken(data, out):
        raise RuntimeError("no fonts today")

    monkeypatch.setitem(plots.PICTURES, "importance", (plots.importance_data, broken))
    run_dir = tmp_path / "run"
    with caplog.at_level("WARNING", logger="compressor"):
        summary = api.run(parse_recipe(recipe), run_dir)
    assert summary["stages"] == ["prune"] and (run_dir / "pruned" / "model.safetensors").is_file()
    assert any("plot importance not drawn" in m and "no fonts today" in m for m in caplog.messages)
    assert (
        not (run_dir / "plots" / "importance.png").exists() and (run_dir / "plots" / "widths.png").is_file()
    )
    card = (run_dir / "pruned" / "README.md").read_text()
    assert "## What was removed" in card and "plots/importance.png" not in card
    assert not (run_dir / "pruned" / "plots").exists()
