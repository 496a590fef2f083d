"""`compressor run`: the whole pipeline against the embedded Hub, resumable, ending in a pushed model + card."""

from __future__ import annotations

import json

import pytest
import yaml

from compressor.cli import main
from compressor.demo import write_dataset, write_eval_sets
from tests.fixtures_hub import ALICE_READ, ALICE_WRITE
from tests.leaks import check_found_where_the_cli_writes, holding

pytestmark = pytest.mark.slow  # end to end: started first when xdist hands out the files


@pytest.fixture
def recipe_file(hub_server, tiny_saved, tmp_path, repo_name, monkeypatch):
    from huggingface_hub import HfApi

    api = HfApi(token=ALICE_WRITE)
    source = f"alice/{repo_name}-src"
    api.create_repo(source)
    api.upload_folder(repo_id=source, folder_path=tiny_saved("llava"))
    api.upload_file(
        path_or_fileobj=b"---\nlicense: apache-2.0\n---\n# tiny\n", path_in_repo="README.md", repo_id=source
    )
    data = write_dataset(tmp_path / "shapes", n=16)
    evals = write_eval_sets(tmp_path, n=12)
    recipe = {
        "model": {"source": source},
        "prune": {
            "method": "width",
            "ratio": 0.3,
            "round_to": 16,
            "calibration": {"dataset": str(data), "num_samples": 4},
        },
        "recover": {
            "mode": "lora",
            "loss": {"ce": 0.5, "hidden_mse": 0.5},
            "fraction": 1.0,
            "max_steps": 2,
            "data": {"dataset": str(data)},
            "sft": {"per_device_train_batch_size": 2, "logging_steps": 1},
        },
        "evaluate": {
            "tasks": [
                {"name": "vqa", "dataset": str(evals["vqa"]), "split": "train", "limit": 4},
                {"name": "yes_no", "dataset": str(evals["yes_no"]), "split": "train", "limit": 4},
            ],
            "speed_repeats": 1,
            "speed_new_tokens": 4,
            "speed_memory": False,
        },
        "publish": {"repo_id": f"alice/{repo_name}", "private": True},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    return path, recipe


def test_run_pushes_a_model_that_loads_from_the_hub(recipe_file, tmp_path, capsys, monkeypatch):
    from huggingface_hub import HfApi, ModelCard
    from transformers import AutoModelForImageTextToText

    path, recipe = recipe_file
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr()
    assert "average retained" in out.out and "pushed:" in out.out
    for name in (
        "recipe.yaml",
        "plan.json",
        "source.json",
        "reports/prune.json",
        "reports/recover.json",
        "reports/eval.json",
        "reports/push.json",
    ):
        assert (run_dir / name).is_file(), name
    repo_id = recipe["publish"]["repo_id"]
    files = set(HfApi(token=ALICE_WRITE).list_repo_files(repo_id))
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "recipe.yaml",
        "prune_report.json",
        "train_report.json",
        "eval_report.json",
    } <= files
    assert (
        len(HfApi(token=ALICE_WRITE).list_repo_commits(repo_id)) == 2
    )  # creation + ONE commit with everything
    card = ModelCard.load(repo_id, token=ALICE_WRITE)
    assert card.data.base_model == recipe["model"]["source"] and card.data.license == "apache-2.0"
    assert card.data.base_model_relation == "finetune" and card.data.pipeline_tag == "image-text-to-text"
    assert {"pruned", "compressor", "width-pruning"} <= set(card.data.tags)
    assert card.data.eval_results and {r.metric_type for r in card.data.eval_results} >= {"accuracy"}
    assert "## What was removed" in card.text and "method: width" in card.text  # the exact recipe is embedded
    places = {"card": card.content, "recipe.yaml": (run_dir / "recipe.yaml").read_text()}
    assert holding(ALICE_WRITE, places) == []
    # positive control: the same search finds a value the recipe gave (its source) in both places
    assert holding(recipe["model"]["source"], places) == ["card", "recipe.yaml"]
    # a fresh cache, through the Hub, plain transformers
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    model = AutoModelForImageTextToText.from_pretrained(repo_id, token=ALICE_READ)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert model.config.text_config.intermediate_size == plan["intermediate_after"]
    assert model.config.text_config.num_key_value_heads == plan["kv_heads_after"]


def test_rerun_resumes_after_the_last_finished_stage(recipe_file, tmp_path, capsys):
    path, _ = recipe_file
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0
    train_before = (run_dir / "reports" / "recover.json").read_text()
    (run_dir / "reports" / "eval.json").unlink()  # as if the run had died during evaluation
    capsys.readouterr()
    assert main(["-v", "run", str(path), "--run-dir", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "prune: skip" in err and "recover: skip" in err and "eval: start" in err
    assert (run_dir / "reports" / "recover.json").read_text() == train_before
    assert (run_dir / "reports" / "eval.json").is_file()


def test_a_run_folder_of_another_recipe_is_refused(recipe_file, tmp_path, capsys):
    path, recipe = recipe_file
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("model: {source: x/y}\n")
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 2
    assert "holds a run of a different recipe" in capsys.readouterr().err


def test_bad_token_fails_before_any_work(recipe_file, tmp_path, monkeypatch, capsys):
    path, _ = recipe_file
    monkeypatch.setenv("HF_TOKEN", ALICE_READ)  # may read, may not write
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "write" in err and holding(ALICE_READ, {"stderr": err}) == []
    # positive control: planted copies (a log record, a stderr line) are found in the same capture
    check_found_where_the_cli_writes(ALICE_READ, lambda: capsys.readouterr().err)
    assert not run_dir.exists()


def test_card_and_push_commands_on_a_run_folder(recipe_file, tmp_path, repo_name, capsys):
    path, recipe = recipe_file
    data = yaml.safe_load(path.read_text())
    del data["publish"], data["recover"], data["evaluate"]
    path.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0
    assert not (run_dir / "reports" / "push.json").exists()
    assert main(["card", str(run_dir), "--repo-id", "alice/renamed"]) == 0
    assert 'from_pretrained("alice/renamed")' in capsys.readouterr().out
    target = f"alice/{repo_name}-pushed"
    assert main(["push", str(run_dir), "--repo-id", target]) == 0
    assert "pushed: " in capsys.readouterr().out
    assert main(["push", str(run_dir), "--repo-id", target]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["push", str(run_dir), "--repo-id", target, "--overwrite"]) == 0


def test_card_validation_survives_an_unreachable_hub_and_refuses_bad_metadata(tmp_path):
    """In a subprocess whose HF_ENDPOINT is a closed port: a good card passes (checked locally), a bad one fails."""
    import os
    import subprocess
    import sys

    code = (
        "from compressor import hub\n"
        "from compressor.errors import CompressorError\n"
        "hub.validate_card('---\\nlicense: mit\\n---\\n# ok\\n')\n"
        "try:\n"
        "    hub.validate_card('---\\nlicense: [mit\\n---\\n')\n"
        "except CompressorError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    # the unclosed list is refused locally by the YAML parser, at the end of `license: [mit` (line 1, column 14),
    # as a CompressorError that says where, what and how to fix it (not a raw yaml ParserError)
    (line,) = proc.stdout.splitlines()
    assert line.startswith("refused: the model card's metadata"), line
    assert "does not parse at line 1, column 14: expected ',' or ']', but got '<stream end>'" in line
    assert "nothing was written or pushed" in line
    assert proc.stderr.count("only checked locally") == 1  # the good card, checked without the Hub
