"""The embedded Hub server, driven by the genuine huggingface_hub client and transformers (nothing mocked)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    get_session,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from compressor import hubserver
from tests.fixtures_hub import ALICE_READ, ALICE_WRITE, BOB_WRITE

pytestmark = pytest.mark.usefixtures("hub_server")
ROOT = Path(__file__).resolve().parents[1]

alice, bob = HfApi(token=ALICE_WRITE), HfApi(token=BOB_WRITE)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _upload(api: HfApi, repo_id: str, files: dict[str, bytes], message: str = "add files", **kwargs) -> str:
    ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    return api.create_commit(repo_id, ops, commit_message=message, **kwargs).oid


def test_whoami_names_user_and_token_role():
    assert alice.whoami()["name"] == "alice"
    assert alice.whoami()["auth"]["accessToken"]["role"] == "write"
    assert HfApi(token=ALICE_READ).whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_not_a_token").whoami()
    assert err.value.response.status_code == 401


def test_create_repo_conflicts_unless_exist_ok(repo_name):
    url = alice.create_repo(repo_name)
    assert url.repo_id == f"alice/{repo_name}" and url.endpoint == os.environ["HF_ENDPOINT"]
    with pytest.raises(HfHubHTTPError) as err:
        alice.create_repo(repo_name)
    assert err.value.response.status_code == 409
    assert err.value.response.json()["url"] == str(url)
    assert alice.create_repo(repo_name, exist_ok=True) == url
    assert alice.list_repo_files(f"alice/{repo_name}") == [".gitattributes"]


def test_upload_folder_is_one_commit_and_snapshot_matches(tiny_llama, repo_name, tmp_path):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    commit = alice.upload_folder(repo_id=repo_id, folder_path=tiny_llama, commit_message="tiny llama")
    assert [c.title for c in alice.list_repo_commits(repo_id)] == ["tiny llama", "initial commit"]
    info = alice.model_info(repo_id, files_metadata=True)
    assert info.sha == commit.oid and info.config == {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
    }
    weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == hashlib.sha256((tiny_llama / "model.safetensors").read_bytes()).hexdigest()
    local = Path(snapshot_download(repo_id, cache_dir=tmp_path))
    assert _files(local) == {**_files(tiny_llama), ".gitattributes": _files(local)[".gitattributes"]}


def test_snapshot_at_an_older_commit(repo_name, tmp_path):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    first = _upload(alice, repo_id, {"notes.txt": b"v1"})
    _upload(alice, repo_id, {"notes.txt": b"v2", "extra.txt": b"new"})
    old = Path(snapshot_download(repo_id, revision=first, cache_dir=tmp_path))
    new = Path(snapshot_download(repo_id, cache_dir=tmp_path))
    assert (old / "notes.txt").read_bytes() == b"v1" and not (old / "extra.txt").exists()
    assert (new / "notes.txt").read_bytes() == b"v2" and (new / "extra.txt").exists()
    assert alice.model_info(repo_id, revision=first[:8]).sha == first


def test_from_pretrained_through_the_hub_into_a_fresh_cache(tiny_llama, repo_name, tmp_path):
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    alice.upload_folder(repo_id=repo_id, folder_path=tiny_llama)
    model = LlamaForCausalLM.from_pretrained(repo_id, cache_dir=tmp_path)
    reference = LlamaForCausalLM.from_pretrained(tiny_llama)
    assert AutoConfig.from_pretrained(repo_id, cache_dir=tmp_path).num_hidden_layers == 2
    for (name, value), (_, expected) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(value, expected), name


def test_resolve_serves_ranges_and_lfs_headers(repo_name):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    weights = bytes(range(256)) * 4
    sha = _upload(alice, repo_id, {"w.safetensors": weights, "a.txt": b"0123456789"})
    url = hf_hub_url(repo_id, "w.safetensors")
    head = get_session().head(url)
    assert head.headers["X-Repo-Commit"] == sha
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(weights).hexdigest()
    assert head.headers["X-Linked-Size"] == str(len(weights))
    part = get_session().get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == weights[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(weights)}"
    tail = get_session().get(hf_hub_url(repo_id, "a.txt"), headers={"Range": "bytes=-3"})
    assert tail.status_code == 206 and tail.content == b"789"
    assert get_session().get(hf_hub_url(repo_id, "a.txt"), headers={"Range": "bytes=50-"}).status_code == 416


def test_404s_carry_error_codes_the_client_understands(repo_name):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/no-such-repo", "config.json", token=ALICE_WRITE)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        alice.model_info(repo_id, revision="0" * 40)
    codes = [
        get_session().head(hf_hub_url(r, f)).headers["X-Error-Code"]
        for r, f in [(repo_id, "x"), ("a/b", "x")]
    ]
    assert codes == ["EntryNotFound", "RepoNotFound"]
    assert not alice.file_exists(repo_id, "x") and alice.file_exists(repo_id, ".gitattributes")


def test_writes_need_a_write_token_of_the_owner(repo_name):
    repo_id = f"alice/{repo_name}"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=ALICE_READ).create_repo(repo_id)
    assert err.value.response.status_code == 403
    alice.create_repo(repo_id)
    for api in (HfApi(token=ALICE_READ), bob):
        with pytest.raises(HfHubHTTPError) as err:
            _upload(api, repo_id, {"a.txt": b"x"})
        assert err.value.response.status_code == 403
    for api in (HfApi(token=False), HfApi(token="hf_not_a_token")):
        with pytest.raises(HfHubHTTPError) as err:
            _upload(api, repo_id, {"a.txt": b"x"})
        assert err.value.response.status_code == 401 and not isinstance(err.value, RepositoryNotFoundError)
    assert alice.list_repo_files(repo_id) == [".gitattributes"]


def test_private_repo_is_hidden_from_everyone_but_its_owner(repo_name):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id, private=True)
    _upload(alice, repo_id, {"config.json": b"{}"})
    assert alice.model_info(repo_id).private is True
    for api in (bob, HfApi(token=False)):
        assert not api.repo_exists(repo_id)
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(repo_id)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo_id, "config.json", token=api.token)
    alice.update_repo_settings(repo_id, private=False)
    assert bob.repo_exists(repo_id)


def test_card_validation_and_push(repo_name):
    ModelCard("---\nlicense: mit\ntags: [pruning]\n---\n# Model\n").validate()
    with pytest.raises(ValueError, match='- Error: "license" must be one of'):
        ModelCard("---\nlicense: not-a-license\n---\n# Model\n").validate()
    with pytest.raises(ValueError, match='"base_model_relation" must be one of'):
        ModelCard("---\nbase_model: a/b\nbase_model_relation: pruned\n---\n# Model\n").validate()
    ModelCard("---\nbase_model: a/b\nbase_model_relation: finetune\n---\n# Model\n").validate()
    url = f"{os.environ['HF_ENDPOINT']}/api/validate-yaml"
    broken = get_session().post(url, json={"content": "---\nlicense: [mit\n---\n", "repoType": "model"})
    assert broken.status_code == 400 and "Invalid YAML" in broken.json()["errors"][0]["message"]
    bare = get_session().post(url, json={"content": "# no metadata", "repoType": "model"}).json()
    assert bare["errors"] == [] and "empty or missing yaml metadata" in bare["warnings"][0]["message"]
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    ModelCard("---\nlicense: mit\nlibrary_name: transformers\n---\n# Model\n").push_to_hub(
        repo_id, token=ALICE_WRITE
    )
    info = alice.model_info(repo_id)
    assert info.card_data.license == "mit" and info.library_name == "transformers"


def test_tree_pagination_folders_and_deletes(hub_server, repo_name, monkeypatch):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    _upload(alice, repo_id, {f"sub/{i}.txt": b"%d" % i for i in range(5)} | {"top.txt": b"t"})
    monkeypatch.setattr(hub_server, "page_size", 2)
    assert len(alice.list_repo_files(repo_id)) == 7
    assert sorted(e.path for e in alice.list_repo_tree(repo_id, "sub")) == [f"sub/{i}.txt" for i in range(5)]
    with pytest.raises(EntryNotFoundError):
        list(alice.list_repo_tree(repo_id, "nowhere"))
    ops = [CommitOperationDelete("sub/"), CommitOperationDelete("top.txt")]
    alice.create_commit(repo_id, ops, commit_message="clean up")
    assert alice.list_repo_files(repo_id) == [".gitattributes"]


def test_pull_requests_datasets_and_delete(repo_name, tmp_path):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    op = CommitOperationAdd(path_in_repo="a.txt", path_or_fileobj=b"pr")
    pr = alice.create_commit(repo_id, [op], commit_message="via a PR", create_pr=True)
    assert pr.pr_revision == "refs/pr/1"
    assert (
        Path(hf_hub_download(repo_id, "a.txt", revision=pr.pr_revision, cache_dir=tmp_path)).read_bytes()
        == b"pr"
    )
    assert alice.list_repo_files(repo_id) == [".gitattributes"]
    alice.create_repo(repo_id, repo_type="dataset")
    _upload(alice, repo_id, {"data/train.jsonl": b'{"x": 1}\n'}, repo_type="dataset")
    local = snapshot_download(repo_id, repo_type="dataset", cache_dir=tmp_path)
    assert (Path(local) / "data/train.jsonl").read_bytes() == b'{"x": 1}\n'
    alice.delete_repo(repo_id)
    assert not alice.repo_exists(repo_id) and alice.repo_exists(repo_id, repo_type="dataset")
    alice.delete_repo(repo_id, missing_ok=True)


def test_data_survives_a_restart(tmp_path):
    first = hubserver.serve(0, tmp_path, {"t1": {"user": "carol", "role": "write"}})
    auth = {"Authorization": "Bearer t1"}
    get_session().post(
        f"{first.url}/api/repos/create", json={"name": "kept"}, headers=auth
    ).raise_for_status()
    sha = get_session().get(f"{first.url}/api/models/carol/kept").json()["sha"]
    first.shutdown()
    again = hubserver.serve(0, tmp_path)
    try:
        assert get_session().get(f"{again.url}/api/models/carol/kept").json()["sha"] == sha
    finally:
        again.shutdown()


def test_module_runs_as_a_subprocess_and_never_logs_tokens(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "hf_subprocess_secret_123"
    cmd = [sys.executable, "-m", "compressor.hubserver", "--port", str(port), "--data", str(tmp_path)]
    cmd += ["--token", f"{secret}:carol:write"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert f"Hub on http://127.0.0.1:{port}" in proc.stdout.readline().decode()
        auth = {"Authorization": f"Bearer {secret}"}
        reply = get_session().get(f"http://127.0.0.1:{port}/api/whoami-v2", headers=auth)
        assert reply.json()["name"] == "carol"
        time.sleep(0.2)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "GET /api/whoami-v2 200" in stderr.decode() and secret not in stderr.decode()


def test_parse_token_rejects_bad_specs():
    assert hubserver.parse_token("abc:alice:read") == ("abc", {"user": "alice", "role": "read"})
    with pytest.raises(ValueError, match="TOKEN:USER:ROLE"):
        hubserver.parse_token("abc:alice:admin")


def test_lfs_upload_accepts_chunked_bodies_and_one_time_urls(repo_name):
    repo_id, endpoint = f"alice/{repo_name}", os.environ["HF_ENDPOINT"]
    alice.create_repo(repo_id)
    data = os.urandom(3000)
    oid, auth = hashlib.sha256(data).hexdigest(), {"Authorization": f"Bearer {ALICE_WRITE}"}
    batch_url = f"{endpoint}/{repo_id}.git/info/lfs/objects/batch"
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    actions = get_session().post(batch_url, json=batch, headers=auth).json()["objects"][0]["actions"]
    put = get_session().put(actions["upload"]["href"], content=iter([data[:1000], data[1000:]]))  # chunked
    assert put.status_code == 200
    assert get_session().put(actions["upload"]["href"], content=data).status_code == 403  # used up
    verify = get_session().post(actions["verify"]["href"], json={"oid": oid, "size": len(data)}, headers=auth)
    assert verify.status_code == 200
    assert "actions" not in get_session().post(batch_url, json=batch, headers=auth).json()["objects"][0]


def test_repo_ids_never_escape_the_data_folder(hub_server, repo_name):
    """A real repo's folder copied OUTSIDE the store: under an id inside the store the copy is a readable repo
    (the control), but no repo id that climbs out of the store reads it, writes into it or creates beside it."""
    import base64
    import json
    import shutil

    store, url = hub_server.store, hub_server.url
    auth = {"Authorization": f"Bearer {ALICE_WRITE}"}
    alice.create_repo(f"alice/{repo_name}")
    _upload(alice, f"alice/{repo_name}", {"config.json": b'{"planted": 1}'})
    outside = store.root.parent / f"outside-{repo_name}"  # alice/../../../../outside-… from repos/models/
    shutil.copytree(store.repo_dir("model", f"alice/{repo_name}"), outside)
    inside = store.repo_dir("model", f"alice/{repo_name}-copy")
    shutil.copytree(outside, inside)
    before = _files(outside)
    climb = "..%2F" * 4 + outside.name
    session = get_session()
    try:
        # control: the same files, where the store keeps repos, are a repo these requests read
        assert session.get(f"{url}/api/models/alice/{repo_name}-copy", headers=auth).status_code == 200
        got = session.get(f"{url}/alice/{repo_name}-copy/resolve/main/config.json", headers=auth)
        assert got.status_code == 200 and got.content == b'{"planted": 1}'
        for path in (
            f"/api/models/alice/{climb}",
            f"/api/models/alice/{climb}/tree/main",
            f"/alice/{climb}/resolve/main/config.json",
            f"/api/models/..%2F..%2F..%2F{outside.name}/x",
            "/api/models/alice/..%2F..%2Fetc",
            "/alice/%2E%2E/resolve/main/repo.json",
        ):
            reply = session.get(f"{url}{path}", headers=auth)
            assert reply.status_code == 404 and reply.headers["X-Error-Code"] == "RepoNotFound", path
        lines = [
            {"key": "header", "value": {"summary": "overwrite"}},
            {
                "key": "file",
                "value": {
                    "path": "config.json",
                    "content": base64.b64encode(b"{}").decode(),
                    "encoding": "base64",
                },
            },
        ]
        body = "\n".join(json.dumps(line) for line in lines).encode()
        headers = {**auth, "Content-Type": "application/x-ndjson"}
        reply = session.post(f"{url}/api/models/alice/{climb}/commit/main", content=body, headers=headers)
        assert reply.status_code == 404, reply.text
        new = {"name": f"../../../../{outside.name}-new", "organization": "alice", "type": "model"}
        assert session.post(f"{url}/api/repos/create", json=new, headers=auth).status_code >= 400
        assert _files(outside) == before and not (store.root.parent / f"{outside.name}-new").exists()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        shutil.rmtree(inside, ignore_errors=True)


def test_datasets_load_from_the_hub(repo_name, tmp_path):
    import datasets

    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id, repo_type="dataset")
    _upload(alice, repo_id, {"data/train.jsonl": b'{"text": "a"}\n{"text": "b"}\n'}, repo_type="dataset")
    rows = datasets.load_dataset(repo_id, split="train", cache_dir=str(tmp_path))
    assert rows["text"] == ["a", "b"]
