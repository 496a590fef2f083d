"""Pruning straight from the (embedded) Hub: model and calibration data by repo id, at a revision."""

from __future__ import annotations

import json

import pytest

from compressor.cli import main
from compressor.demo import write_dataset
from tests.fixtures_hub import ALICE_WRITE
from tests.leaks import check_found_where_the_cli_writes, holding


@pytest.fixture
def published(hub_server, tiny_saved, tmp_path, repo_name, monkeypatch):
    from huggingface_hub import HfApi

    api = HfApi(token=ALICE_WRITE)
    model_id, data_id = f"alice/{repo_name}", f"alice/{repo_name}-data"
    api.create_repo(model_id, private=True)
    first = api.upload_folder(repo_id=model_id, folder_path=tiny_saved("llava"), commit_message="v1")
    api.create_repo(data_id, repo_type="dataset")
    api.upload_folder(
        repo_id=data_id, repo_type="dataset", folder_path=write_dataset(tmp_path / "data", n=10)
    )
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    return model_id, data_id, first.oid


def test_prune_a_private_hub_model_with_hub_calibration_data(published, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText

    model_id, data_id, commit = published
    out = tmp_path / "pruned"
    argv = [
        "prune",
        model_id,
        "--revision",
        commit,
        "--method",
        "depth",
        "--ratio",
        "0.3",
        "--calibration",
        data_id,
        "--num-samples",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert report["source"] == {"id": model_id, "revision": commit, "commit": commit}
    assert report["num_samples"] == 4 and len(report["dropped_layers"]) == report["plan"]["drop_count"]
    assert AutoModelForImageTextToText.from_pretrained(out).config.text_config.num_hidden_layers == 4
    assert ALICE_WRITE not in (out / "prune_report.json").read_text() + capsys.readouterr().err


def test_plan_of_a_private_repo_without_token_is_a_clear_error(published, monkeypatch, capsys):
    model_id, _, _ = published
    monkeypatch.delenv("HF_TOKEN")
    assert main(["plan", model_id, "--method", "depth", "--ratio", "0.3"]) == 2
    err = capsys.readouterr().err
    assert model_id in err and "Traceback" not in err


def test_token_flag_works_and_never_shows(published, monkeypatch, capsys):
    model_id, _, _ = published
    monkeypatch.delenv("HF_TOKEN")
    assert (
        main(
            [
                "plan",
                model_id,
                "--token",
                ALICE_WRITE,
                "--method",
                "width",
                "--ratio",
                "0.3",
                "--round-to",
                "8",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "KV groups" in captured.out
    assert holding(ALICE_WRITE, {"stdout": captured.out, "stderr": captured.err}) == []
    assert (
        main(["plan", model_id, "--token", "hf_not_a_real_token", "--method", "depth", "--ratio", "0.3"]) == 2
    )
    err = capsys.readouterr().err
    assert "rejected the token" in err and holding("hf_not_a_real_token", {"stderr": err}) == []
    # positive control: copies planted where the CLI writes (its log and stderr) are found in the same capture
    for token in (ALICE_WRITE, "hf_not_a_real_token"):
        check_found_where_the_cli_writes(token, lambda: capsys.readouterr().err)


def test_unknown_revision_is_a_clear_error(published, capsys):
    model_id, _, _ = published
    assert (
        main(["plan", model_id, "--revision", "no-such-branch", "--method", "depth", "--ratio", "0.3"]) == 2
    )
    assert "no-such-branch" in capsys.readouterr().err
