"""compressor.hub against the embedded Hub: pulls, token checks, one-commit pushes and the error messages."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from compressor import hub
from compressor.errors import CompressorError
from tests.fixtures_hub import ALICE_READ, ALICE_WRITE, BOB_WRITE
from tests.leaks import holding

pytestmark = pytest.mark.usefixtures("hub_server")

ROOT = Path(__file__).resolve().parents[1]
BAD_TOKEN = "hf_bad_token_never_shown_42"
alice, bob = HfApi(token=ALICE_WRITE), HfApi(token=BOB_WRITE)


def _commit_files(api: HfApi, repo_id: str, files: dict[str, bytes]) -> None:
    ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    api.create_commit(repo_id, ops, commit_message="add files")


def test_check_token_names_the_user_and_hides_bad_tokens():
    assert hub.check_token(ALICE_WRITE, write=True) == "alice"
    assert hub.check_token(ALICE_READ) == "alice"
    with pytest.raises(CompressorError, match="read-only"):
        hub.check_token(ALICE_READ, write=True)
    with pytest.raises(CompressorError, match="rejected the token") as err:
        hub.check_token(BAD_TOKEN)
    assert holding(BAD_TOKEN, {"message": str(err.value)}) == [] and "HF_TOKEN" in str(err.value)
    # positive control: the same search on the same message finds what it does name
    assert holding("HF_TOKEN", {"message": str(err.value)}) == ["message"]


def test_push_then_pull_round_trip(tiny_llama, repo_name):
    repo_id = f"alice/{repo_name}"
    url = hub.push(tiny_llama, repo_id, token=ALICE_WRITE, commit_message="compressed")
    assert url == f"{os.environ['HF_ENDPOINT']}/{repo_id}"
    assert [c.title for c in alice.list_repo_commits(repo_id)] == ["compressed", "initial commit"]
    folder, commit = hub.pull(repo_id, token=ALICE_WRITE)
    assert commit == alice.model_info(repo_id).sha
    assert (folder / "model.safetensors").read_bytes() == (tiny_llama / "model.safetensors").read_bytes()
    config, at = hub.pull_config(repo_id)
    assert config["num_hidden_layers"] == 2 and at == commit


def test_push_refuses_a_non_empty_repo_unless_overwrite(tiny_llama, repo_name, tmp_path):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id, private=True)
    _commit_files(alice, repo_id, {"stale.txt": b"old run"})
    with pytest.raises(CompressorError, match="--overwrite") as err:
        hub.push(tiny_llama, repo_id, token=ALICE_WRITE)
    assert "stale.txt" in str(err.value)
    hub.push(tiny_llama, repo_id, token=ALICE_WRITE, overwrite=True)
    files = alice.list_repo_files(repo_id)
    assert "stale.txt" not in files and "model.safetensors" in files
    assert len(alice.list_repo_commits(repo_id)) == 3 and alice.model_info(repo_id).private


def test_a_failed_push_leaves_no_repo_and_no_commit(hub_server, tiny_llama, repo_name, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    for path in tiny_llama.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "eval_report.json").write_text(
        "x" * 200_000
    )  # a pushed regular file, sent inline with the commit
    size = (folder / "model.safetensors").stat().st_size
    monkeypatch.setattr(hub_server, "max_file_size", size + 1)  # the weights upload; the commit is refused
    with pytest.raises(CompressorError, match="nothing was committed"):
        hub.push(folder, f"alice/{repo_name}", token=ALICE_WRITE)
    assert not alice.repo_exists(f"alice/{repo_name}")
    existing = f"alice/{repo_name}-kept"
    alice.create_repo(existing)
    before = alice.list_repo_commits(existing)
    with pytest.raises(CompressorError, match="nothing was committed"):
        hub.push(folder, existing, token=ALICE_WRITE)
    assert alice.list_repo_commits(existing) == before and alice.list_repo_files(existing) == [
        ".gitattributes"
    ]


def test_push_without_write_access_says_so(tiny_llama, repo_name):
    alice.create_repo(f"alice/{repo_name}")
    for token in (ALICE_READ, BOB_WRITE):
        with pytest.raises(CompressorError, match="may not write") as err:
            hub.push(tiny_llama, f"alice/{repo_name}", token=token)
        assert holding(token, {"message": str(err.value)}) == []
        # positive control: the same search finds the repo id given beside the token in the same message
        assert holding(f"alice/{repo_name}", {"message": str(err.value)}) == ["message"]
    with pytest.raises(CompressorError, match="rejected the token") as err:
        hub.push(tiny_llama, f"alice/{repo_name}", token=BAD_TOKEN)
    assert holding(BAD_TOKEN, {"message": str(err.value)}) == []
    assert holding("--token", {"message": str(err.value)}) == ["message"]  # positive control
    with pytest.raises(CompressorError, match="needs a Hub token: pass --token"):
        hub.push(tiny_llama, f"alice/{repo_name}-anonymous")
    assert alice.list_repo_files(f"alice/{repo_name}") == [".gitattributes"]


def test_a_card_with_invalid_metadata_is_refused_before_anything_lands(tiny_llama, repo_name, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((tiny_llama / name).read_bytes())
    (folder / "README.md").write_text("---\nlicense: not-a-license\n---\n# Pruned model\n")
    with pytest.raises(CompressorError, match='(?s)invalid metadata.*"license" must be one of'):
        hub.push(folder, f"alice/{repo_name}", token=ALICE_WRITE)
    assert not alice.repo_exists(f"alice/{repo_name}")


def test_pull_refuses_pickle_only_repos_without_allow_pickle(repo_name):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    _commit_files(
        alice, repo_id, {"config.json": b'{"model_type": "llama"}', "pytorch_model.bin": b"\x80pickle"}
    )
    with pytest.raises(CompressorError, match="--allow-pickle"):
        hub.pull(repo_id)
    folder, _ = hub.pull(repo_id, allow_pickle=True)
    assert (folder / "pytorch_model.bin").exists()
    _commit_files(alice, repo_id, {"model.safetensors": b"\0" * 8})
    folder, _ = hub.pull(repo_id, allow_pickle=True)  # safetensors present: pickle is never fetched
    assert sorted(p.name for p in folder.iterdir()) == [".gitattributes", "config.json", "model.safetensors"]


def test_pull_errors_name_the_value_and_the_fix(repo_name):
    with pytest.raises(CompressorError, match="not found.*pass a token"):
        hub.pull_config("alice/does-not-exist")
    private = f"bob/{repo_name}"
    bob.create_repo(private, private=True)
    with pytest.raises(CompressorError, match=f"{private}.*not found.*check the repo id"):
        hub.pull(private, token=ALICE_WRITE)
    gated = f"bob/{repo_name}-gated"
    bob.create_repo(gated)
    _commit_files(bob, gated, {"config.json": b"{}"})
    bob.update_repo_settings(gated, gated="auto")
    with pytest.raises(CompressorError, match="is gated: accept its conditions"):
        hub.pull_config(gated, token=ALICE_WRITE)
    assert hub.pull_config(gated, token=BOB_WRITE)[0] == {}
    with pytest.raises(CompressorError, match="revision 'v9' does not exist"):
        hub.pull(gated, revision="v9", token=BOB_WRITE)
    alice.create_repo(f"alice/{repo_name}-empty")
    with pytest.raises(CompressorError, match="has no config.json"):
        hub.pull_config(f"alice/{repo_name}-empty")


def test_local_folders_pass_through(tiny_llama, tmp_path):
    assert hub.pull(tiny_llama) == (tiny_llama, None)
    config, commit = hub.pull_config(str(tiny_llama))
    assert config["model_type"] == "llama" and commit is None
    with pytest.raises(CompressorError, match="is not a folder"):
        hub.pull(tmp_path / "missing")
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(CompressorError, match="--trust-remote-code"):
        hub.pull_config(custom)
    assert hub.pull_config(custom, trust_remote_code=True)[0]["auto_map"]


def test_an_unreachable_hub_names_the_endpoint_and_the_fix(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    script = f"""
from compressor import hub
from compressor.errors import CompressorError
for call in (lambda: hub.pull_config("alice/x", token={BAD_TOKEN!r}), lambda: hub.check_token({BAD_TOKEN!r}),
             lambda: hub.pull("alice/x"), lambda: hub.push({str(tmp_path)!r}, "alice/x", token={BAD_TOKEN!r})):
    try:
        call()
    except CompressorError as exc:
        print(exc)
"""
    (tmp_path / "model.safetensors").write_text("x")
    env = {**os.environ, "HF_ENDPOINT": closed, "HF_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4, out.stderr
    assert all(f"cannot reach the Hub at {closed}" in line and "HF_ENDPOINT" in line for line in lines)
    assert holding(BAD_TOKEN, {"stdout": out.stdout, "stderr": out.stderr}) == []
    # positive control: the same search finds the endpoint the messages name in the same output
    assert holding(closed, {"stdout": out.stdout, "stderr": out.stderr}) == ["stdout"]


def test_license_of_reads_only_the_card(tiny_llama, repo_name, tmp_path):
    api = HfApi(token=ALICE_WRITE)
    repo_id = f"alice/{repo_name}"
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=tiny_llama)
    assert hub.license_of(repo_id, token=ALICE_WRITE) is None  # no README.md in the repo
    api.upload_file(
        path_or_fileobj=b"---\nlicense: mit\n---\n# m\n", path_in_repo="README.md", repo_id=repo_id
    )
    assert hub.license_of(repo_id, token=ALICE_WRITE) == "mit"
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    assert hub.license_of(tmp_path) == "apache-2.0"
    (tmp_path / "no-card").mkdir()
    assert hub.license_of(tmp_path / "no-card") is None


def test_a_dataset_given_as_a_model_says_where_datasets_go_in_each_audiences_words(repo_name):
    api = HfApi(token=ALICE_WRITE)
    repo = f"alice/{repo_name}-rows"
    api.create_repo(repo, repo_type="dataset")
    api.upload_file(
        path_or_fileobj=b'{"a": 1}\n', path_in_repo="data.jsonl", repo_id=repo, repo_type="dataset"
    )
    with pytest.raises(CompressorError) as caught:
        hub.pull_config(repo, token=ALICE_WRITE)
    assert "is a dataset repo" in str(caught.value) and "--calibration, recover --data" in str(caught.value)
    assert "“Training data”" in caught.value.page and "--" not in caught.value.page
