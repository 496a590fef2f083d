"""`compressor study`: a 2 x 2 grid on the tiny LLaVA — cells, resume, results.csv, the tables and the plot."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from compressor.cli import main
from compressor.demo import write_dataset, write_eval_sets
from compressor.errors import CompressorError

pytestmark = pytest.mark.slow  # end to end: started first when xdist hands out the files


@pytest.fixture
def study_file(tiny_saved, tmp_path):
    data = write_dataset(tmp_path / "shapes", n=12)
    evals = write_eval_sets(tmp_path, n=10)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "data.jsonl").write_text(
        "".join(json.dumps({"text": f"held-out text number {i}, with words."}) + "\n" for i in range(3))
    )
    study = {
        "name": "tiny-study",
        "base": {
            "model": {"source": "{model}"},
            "prune": {
                "method": "width",
                "ratio": 0.3,
                "round_to": 16,
                "calibration": {"dataset": str(data), "num_samples": 2},
            },
            "recover": {
                "mode": "lora",
                "fraction": 1.0,
                "max_steps": 1,
                "data": {"dataset": str(data)},
                "sft": {"per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": 100},
            },
            "evaluate": {
                "tasks": [
                    {"name": "vqa", "dataset": str(evals["vqa"]), "split": "train", "limit": 3, "seed": 0},
                    {"name": "yes_no", "dataset": str(evals["yes_no"]), "split": "train", "limit": 3},
                    {"name": "perplexity", "dataset": str(tmp_path / "text"), "split": "train"},
                ],
                "speed_repeats": 1,
                "speed_new_tokens": 2,
                "speed_memory": False,
            },
        },
        "groups": [
            {
                "name": "grid",
                "set": {"recover": None},
                "grid": {"prune.method": ["width", "depth"], "prune.ratio": [0.3, 0.5]},
            },
            # shares its cell with the grid's width-30 % cell: it must run once
            {"name": "shared", "set": {"recover": None, "prune.method": "width", "prune.ratio": 0.3}},
        ],
        "notes": {"grid": "A 2 x 2 grid."},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path, str(tiny_saved("llava"))


def _eval_mtimes(root):
    return {p.parent.parent.name: p.stat().st_mtime_ns for p in root.glob("cells/*/reports/eval.json")}


def test_study_runs_resumes_and_renders(study_file, tmp_path, caplog):
    from compressor.study import load_study, render, run_study

    path, model = study_file
    study = load_study(path, {"model": model})
    assert len(study.cells()) == 4, "the shared group's cell is the grid's width-30 % cell"
    shared = next(c for c in study.cells() if len(c.groups) == 2)
    assert shared.groups == ["grid", "shared"] and shared.recipe.prune.method == "width"
    root = tmp_path / "out"
    run_study(study, root)

    rows = list(csv.DictReader((root / "results.csv").open()))
    assert len(rows) == 4
    got = {(r["method"], float(r["ratio"])) for r in rows}
    assert got == {("width", 0.3), ("width", 0.5), ("depth", 0.3), ("depth", 0.5)}
    for r in rows:
        assert r["recovery"] == "none"
        assert 0 <= float(r["open_acc_original"]) <= 1 and float(r["perplexity_original"]) > 1
        assert int(r["params_compressed"]) < int(r["params_original"])
    for r in rows:  # the achieved ratio is the plan's (whole layers: 6 tiny layers cannot make exactly 50 %)
        plan = json.loads((root / "cells" / r["cell"] / "plan.json").read_text())
        assert float(r["achieved_ratio"]) == pytest.approx(plan["achieved_ratio"], abs=1e-4)
        assert float(r["achieved_ratio"]) > 0.2
    md = (root / "results.md").read_text()
    assert "## grid" in md and "A 2 x 2 grid." in md and "AVG-%" in md
    assert md.count("| width |") + md.count("| depth |") == 5  # 4 grid rows + the shared cell's row
    # the seed's published numbers stand beside ours where the seed measured the same thing
    assert "79.9 / 75.6" in md and "69.2 / 69.0" in md
    # what would be pushed (the card, the recipe, the reports) names no local folder
    for cell in (root / "cells").iterdir():
        for f in [
            *(cell / "pruned").glob("*.json"),
            cell / "pruned" / "README.md",
            cell / "pruned" / "recipe.yaml",
        ]:
            assert str(tmp_path) not in f.read_text(), f
    assert (
        str(tmp_path) in (root / "cells" / cell.name / "reports" / "eval.json").read_text()
    )  # the run's own do

    # the original is answered once: the later cells take its answers from the study's cache
    notes = [json.loads(f.read_text())["tasks"][0]["notes"] for f in root.glob("cells/*/reports/eval.json")]
    assert sum(any("reused" in n for n in ns) for ns in notes) == 3
    png = root / "grid.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: a finished cell is never recomputed
    before = _eval_mtimes(root)
    caplog.clear()
    with caplog.at_level("INFO", logger="compressor"):
        run_study(load_study(path, {"model": model}), root)
    assert _eval_mtimes(root) == before
    assert sum("done, skipped" in m for m in caplog.messages) == 4

    # a killed study: the cell whose eval had not finished runs again, and only it
    # (rerun by the CLI with --drop-weights: the cell that runs loses its weights once scored, the others keep
    # theirs; then a second one through the study file's keep_weights: false)
    victim, second = list(before)[:2]
    (root / "cells" / victim / "reports" / "eval.json").unlink()
    concrete = tmp_path / "concrete.yaml"
    concrete.write_text(path.read_text().replace("{model}", model))
    assert main(["study", str(concrete), "--run-dir", str(root), "--drop-weights"]) == 0
    after = _eval_mtimes(root)
    assert set(after) == set(before)
    assert [k for k in after if after[k] != before[k]] == [victim]
    (root / "cells" / second / "reports" / "eval.json").unlink()
    dropping = tmp_path / "dropping.yaml"
    dropping.write_text(path.read_text() + "keep_weights: false\n")
    assert load_study(path, {"model": model}).keep_weights is True
    run_study(load_study(dropping, {"model": model}), root)
    after = _eval_mtimes(root)
    assert sorted(k for k in after if after[k] != before[k]) == sorted([victim, second])
    weights = {c.name: sorted(p.name for p in c.rglob("*.safetensors")) for c in (root / "cells").iterdir()}
    assert weights.pop(victim) == weights.pop(second) == [], weights
    assert all(w == ["model.safetensors"] for w in weights.values()), weights
    for cell in (victim, second):
        dropped = json.loads((root / "cells" / cell / "cell.json").read_text())["weights_dropped"]
        assert dropped == ["pruned/model.safetensors"]
    # a cell without weights is still finished (not rerun) and still renders
    run_study(load_study(path, {"model": model}), root)
    assert _eval_mtimes(root) == after

    # the table and the plot are rebuilt from the run folders alone
    for name in ("results.csv", "results.md", "grid.png"):
        (root / name).unlink()
    render(load_study(path, {"model": model}), root)
    rows = list(csv.DictReader((root / "results.csv").open()))
    assert len(rows) == 4 and all(float(r["open_acc_original"]) >= 0 for r in rows)
    assert (root / "results.md").read_text().count("| depth |") == 2 and png.is_file()
    # nothing finished in another folder: an error, and an earlier results.md there is kept
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.md").write_text("earlier")
    with pytest.raises(CompressorError, match="no finished cell in .*other.* left as it was"):
        render(load_study(path, {"model": model}), other)
    assert (other / "results.md").read_text() == "earlier" and not (other / "results.csv").exists()


def test_study_cli_dry_run_lists_cells(study_file, tmp_path, capsys, monkeypatch):
    path, model = study_file
    text = path.read_text().replace("{model}", model)
    path.write_text(text)
    assert main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("no recovery") == 4 and "groups: grid, shared" in out


def test_study_errors_name_the_key_and_the_fix(study_file, tmp_path):
    from compressor.study import load_study

    path, model = study_file
    data = yaml.safe_load(path.read_text())
    data["groups"][0]["grid"]["prune.ratio"] = 0.3
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CompressorError, match=r"grid key 'prune.ratio' must be a non-empty list"):
        load_study(path, {"model": model})
    data["groups"][0]["grid"]["prune.ratio"] = [1.5]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CompressorError, match=r"group grid.*prune.ratio"):
        load_study(path, {"model": model})
    data["extra"] = 1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CompressorError, match=r"unknown top-level keys \['extra'\]"):
        load_study(path, {"model": model})
    del data["extra"]
    data["keep_weights"] = "no"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CompressorError, match=r"keep_weights is 'no'; write keep_weights: true .* or false"):
        load_study(path, {"model": model})


def test_seed_miniature_study_file_is_valid(tmp_path):
    """The shipped study expands into valid recipes (against a stand-in reference folder)."""
    from pathlib import Path

    from compressor.study import load_study

    study = load_study(
        Path(__file__).parent.parent / "studies" / "seed-miniature.yaml", {"reference": "/ref"}
    )
    cells = study.cells()
    assert len(cells) == 22
    assert all(c.recipe.model.source == "/ref/model" for c in cells)
    groups = dict(study.groups)
    assert {
        (c.recipe.prune.method, c.recipe.prune.ratio) for c in groups["1-width-vs-depth-no-recovery"]
    } == {(m, r) for m in ("width", "depth") for r in (0.15, 0.3, 0.45, 0.6)}
    assert {c.recipe.recover.mode for c in groups["2-recovery-mode"]} == {"projector", "lora", "full"}
    assert sorted(c.recipe.recover.fraction for c in groups["4-data-fraction"]) == [0.01, 0.05, 0.1, 1.0]


def test_seed_miniature_v2_study_file_is_valid(tmp_path):
    """Study v2 expands into valid recipes; shared cells run once; the seeds are averaged in its tables."""
    from pathlib import Path

    from compressor.study import _averaged_row, _varied, load_study, seed_groups

    study = load_study(
        Path(__file__).parent.parent / "studies" / "seed-miniature-v2.yaml", {"reference": "/ref"}
    )
    groups = dict(study.groups)
    assert [len(groups[g]) for g in groups] == [12, 6, 6, 4, 6, 8, 2, 4]
    assert study.keep_weights is False  # 39 cells of ~750 MB: only their reports are kept
    # shared: group 1's 0.5 CE + 0.5 hidden MSE cells (with groups 2, 3 and 4b's image calibration) and one pass
    # over 5 % at 30 % depth (2b, 4c and 5)
    assert len(study.cells()) == 12 + 5 + 5 + 2 + 6 + 4 + 1 + 4
    one_pass = groups["2b-beyond-the-seed-one-pass"]
    assert one_pass[0].name == groups["5-data-fraction"][1].name == groups["4c-calibration-one-pass"][0].name
    assert {(c.recipe.recover.max_steps, c.recipe.recover.sft.get("num_train_epochs")) for c in one_pass} == {
        (None, 1)
    }
    cosine = [c for c in one_pass if "hidden_cosine" in c.recipe.recover.loss]
    assert len(cosine) == 2 and all(c.recipe.recover.hidden_layers for c in cosine)
    recovered = groups["4b-calibration-recovered"]
    assert sorted((c.recipe.prune.method, c.recipe.prune.calibration.modality) for c in recovered) == sorted(
        2 * [("depth", "image"), ("depth", "mixed"), ("width", "image"), ("width", "mixed")]
    )
    assert len(seed_groups(recovered, {})) == 4  # 2 methods x 2 calibrations, 2 seeds each
    assert all(c.recipe.recover is not None for c in recovered)
    loss = groups["1-loss-full"]
    assert {c.recipe.recover.mode for c in loss} == {"full"} and {c.recipe.recover.seed for c in loss} == {
        1,
        2,
    }
    assert len(seed_groups(loss, {})) == 6  # 2 methods x 3 losses, 2 seeds each
    mixed = [c for c in groups["3-recovery-data"] if len(c.recipe.recover.sources) == 2]
    assert len(mixed) == 2 and [s.weight for s in mixed[0].recipe.recover.sources] == [3.0, 1.0]
    assert {c.recipe.prune.calibration.modality for c in groups["4-calibration"]} == {
        "image",
        "text",
        "mixed",
    }
    assert all(c.recipe.recover is None for c in groups["4-calibration"])
    from compressor.study import _setting, _short

    seed_recipe = groups["2-beyond-the-seed"][0]  # the base's own values show where a cell sets nothing
    assert _setting(seed_recipe, "recover.hidden_layers") is None
    assert _short("recover.loss", _setting(seed_recipe, "recover.loss")) == "0.5·ce+0.5·hidden_mse"
    assert _short("recover.data", _setting(groups["3-recovery-data"][0], "recover.data")) == "easyvqa-train"
    assert _short("recover.data", _setting(mixed[0], "recover.data")) == "3·easyvqa-train + 1·general-text"
    # the tables and the plot of a group whose cells set different keys (hidden_layers only in some)
    from compressor.study import markdown, plot

    beyond = groups["2-beyond-the-seed"]
    fake = {
        c.name: {
            "cell": c.name,
            "method": c.recipe.prune.method,
            "ratio": c.recipe.prune.ratio,
            "achieved_ratio": c.recipe.prune.ratio,
            "recovery": "full",
            "loss": "ce=0.5+hidden_mse=0.5",
            "avg_retained": 50.0 + i,
        }
        for i, c in enumerate(beyond)
    }
    only = type(study)(study.name, study.path, [("2-beyond-the-seed", beyond)], study.notes)
    assert [p.name for p in plot(only, list(fake.values()), tmp_path)] == ["2-beyond-the-seed.png"]
    assert "hidden_layers=[3, 7, 11, 15]" in markdown(only, list(fake.values()), [])
    fractions = groups["5-data-fraction"]
    assert all(c.recipe.recover.max_steps is None for c in fractions)  # one pass over each share
    # the 100 % cell's checkpoint cadence is no column and no second line in the plot
    assert fractions[-1].settings["recover.sft.save_steps"] == 250
    assert _varied(fractions) == ["recover.fraction"]
    rows = [
        {"open_acc_compressed": a, "open_acc_original": 0.8, "avg_retained": b}
        for a, b in ((0.6, 70), (0.7, 80))
    ]
    avg = _averaged_row(rows)
    assert (round(avg["open_acc_compressed"], 6), avg["avg_retained"], avg["avg_retained_spread"]) == (
        0.65,
        75,
        5,
    )
    assert round(avg["open_acc_retained"], 2) == 81.25 and avg["seeds"] == 2


def test_eval_cache_reuses_the_originals_answers_only_for_the_same_weights(tiny_saved, tmp_path):
    from compressor import evaluate
    from compressor.demo import write_eval_sets
    from compressor.evaluate.config import Evaluate

    evals = write_eval_sets(tmp_path, n=10)
    cfg = Evaluate(
        tasks=[{"name": "vqa", "dataset": str(evals["vqa"]), "split": "train", "limit": 4}], speed=False
    )
    a, b, comp = tiny_saved("llava"), tiny_saved("llava", seed=1), tiny_saved("llava", seed=2)
    cache = tmp_path / "cache"
    first = evaluate.run(a, comp, cfg, cache=cache)
    assert not any("reused" in n for n in first.tasks[0].notes) and len(list(cache.glob("*.json"))) == 1
    other = evaluate.run(b, comp, cfg, cache=cache)  # another original: its own answers, its own cache file
    assert not any("reused" in n for n in other.tasks[0].notes) and len(list(cache.glob("*.json"))) == 2
    again = evaluate.run(a, comp, cfg, cache=cache)
    assert any("answers to 4 prompts reused" in n for n in again.tasks[0].notes)
    assert again.tasks[0].metrics == first.tasks[0].metrics
    fresh = evaluate.run(a, comp, cfg)  # and the same as without any cache
    assert fresh.tasks[0].metrics == first.tasks[0].metrics


def test_a_failing_cell_does_not_stop_the_others_and_a_bad_plan_stops_them_all(study_file, tmp_path):
    from compressor.study import load_study, run_study

    path, model = study_file
    data = yaml.safe_load(path.read_text())
    data["base"]["evaluate"]["tasks"] = data["base"]["evaluate"]["tasks"][:1]
    data["groups"] = [
        {
            "name": "two",
            "cells": [
                {"recover": None, "prune.ratio": 0.5},
                # planned fine, fails when it trains: its data folder does not exist
                {"recover.data.dataset": str(tmp_path / "missing"), "recover.max_steps": 1},
            ],
        }
    ]
    path.write_text(yaml.safe_dump(data))
    root = tmp_path / "out"
    with pytest.raises(CompressorError, match=r"(?s)1 cell\(s\) failed, the others finished.*missing"):
        run_study(load_study(path, {"model": model}), root)
    assert len(list(root.glob("cells/*/reports/eval.json"))) == 1  # the other cell ran to the end
    # a layer the planned student does not have is refused for every cell before any runs
    data["groups"] = [{"name": "bad", "cells": [{"recover.hidden_layers": [50]}]}]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CompressorError, match=r"recover.hidden_layers \[50\]: \[50\] is not an inner layer"):
        run_study(load_study(path, {"model": model}), tmp_path / "bad")
    assert not (tmp_path / "bad" / "cells").exists()
