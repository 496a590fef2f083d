"""Faults on purpose and secrets that never leak.

The embedded Hub's fault switch fails requests (5xx, a dropped connection, a slow answer); pushes retry with
backoff and then fail cleanly. A run folder is held by one run at a time. Processes are killed (SIGKILL) at
random points. A recognisable token, passed every way the CLI takes one, is searched for in every file, log
line and HTTP answer, with a positive control that proves the search finds a planted copy.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from compressor import hub
from compressor.cli import main
from compressor.errors import CompressorError
from tests.fixtures_hub import ALICE_WRITE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("COMPRESSOR_RETRY_WAITS", "0.05,0.1,0.2")


@pytest.fixture
def faults(hub_server):
    yield hub_server.faults
    hub_server.faults.clear()


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(os.urandom(2048))
    return folder


@pytest.mark.parametrize(
    ("kind", "path", "times"),
    [
        ("status", "/commit/", 2),  # the commit itself answers 503 twice
        ("drop", "/commit/", 1),  # the connection drops mid-commit
        ("status", "/api/repos/create", 3),  # creating the repo fails three times
        ("slow", "/api/", 2),  # a slow Hub: no retry needed, nothing breaks
    ],
)
def test_push_retries_transient_faults_then_succeeds(tmp_path, faults, fast_retries, kind, path, times):
    repo = f"alice/fault-{uuid.uuid4().hex[:8]}"
    fault = faults.add(kind, path=path, times=times, delay=0.3)
    url = hub.push(_model(tmp_path / "m"), repo, token=ALICE_WRITE)
    assert url.endswith(repo) and len(fault.hits_at) == times
    files = set(HfApi(token=ALICE_WRITE).list_repo_files(repo))
    assert {"config.json", "model.safetensors"} <= files


@pytest.mark.parametrize(("kind", "path"), [("status", "/commit/"), ("drop", "/commit/")])
def test_push_that_keeps_failing_leaves_no_repo(tmp_path, faults, fast_retries, kind, path):
    repo = f"alice/fault-{uuid.uuid4().hex[:8]}"
    fault = faults.add(kind, path=path, times=99)
    with pytest.raises(CompressorError) as err:
        hub.push(_model(tmp_path / "m"), repo, token=ALICE_WRITE)
    assert (
        "4 times" in str(err.value)
        and "committed nothing" in str(err.value)
        or "tried 4 times" in str(err.value)
    )
    assert len(fault.hits_at) == 4  # one try and three retries
    faults.clear()
    assert not HfApi(token=ALICE_WRITE).repo_exists(repo)  # the repo this push created is gone


def test_fault_specs_parse_and_bad_ones_are_refused():
    from compressor.hubserver import Fault

    f = Fault.parse("503@3x2,POST,/commit/")
    assert (f.kind, f.status, f.nth, f.times, f.method) == ("status", 503, 3, 2, "POST")
    assert Fault.parse("slow@1:2.5").delay == 2.5 and Fault.parse("drop@2,PUT").kind == "drop"
    with pytest.raises(ValueError, match="KIND@N"):
        Fault.parse("explode")


# ---------------------------------------------------------------------------- the run folder lock


def _recipe(tmp_path: Path, source: Path, publish: str | None = None) -> Path:
    text = f"model:\n  source: {source}\nprune:\n  method: depth\n  ratio: 0.3\n  scorer: last\n"
    if publish:
        text += f"publish:\n  repo_id: {publish}\n"
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_a_second_run_of_a_held_run_folder_is_refused(tmp_path, tiny_saved, capsys):
    from compressor.api import RunFolder

    recipe = _recipe(tmp_path, tiny_saved("llava"))
    run_dir = tmp_path / "run"
    with RunFolder(run_dir).lock():
        assert main(["run", str(recipe), "--run-dir", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert "in use by another run" in err and f"pid {os.getpid()}" in err
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing interleaved
    assert main(["run", str(recipe), "--run-dir", str(run_dir)]) == 0  # free again once released


# ---------------------------------------------------------------------------- SIGKILL at random points


def _kill_at(argv: list[str], delay: float, env: dict) -> int | None:
    """Run the CLI in a subprocess and SIGKILL it after `delay` s; its exit code if it ended before."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "compressor", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


def test_a_killed_prune_never_leaves_an_output_that_looks_complete(tmp_path, tiny_saved):
    """SIGKILL at 5 random points of `prune`; then the output is either absent or complete and loadable."""
    rng = random.Random(int(os.environ.get("KILL_SEED", "12")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outcomes = []
    src = tiny_saved("llava")
    for i in range(5):
        out = tmp_path / f"out{i}"
        delay = rng.uniform(1.0, 7.0)
        rc = _kill_at(
            ["prune", str(src), "--method", "depth", "--ratio", "0.3", "--scorer", "last", "--out", str(out)],
            delay,
            env,
        )
        if out.exists():
            names = {p.name for p in out.iterdir()}
            assert {"config.json", "model.safetensors", "prune_report.json"} <= names, names
            outcomes.append("complete" if rc is None else f"finished rc={rc}")
        else:
            outcomes.append("absent")
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".out{i}.")]
        outcomes[-1] += f" (+{len(leftovers)} temp)" if leftovers else ""
    print("prune kill outcomes:", outcomes)
    assert len(outcomes) == 5


def test_a_killed_push_leaves_the_old_repo_or_the_new_one(tmp_path, hub_server):
    """SIGKILL at 5 random points of `push` over a repo: its files are always exactly the old or the new set."""
    rng = random.Random(int(os.environ.get("KILL_SEED", "7")))
    api = HfApi(token=ALICE_WRITE)
    repo = f"alice/kill-{uuid.uuid4().hex[:8]}"
    old = _model(tmp_path / "old")
    hub.push(old, repo, token=ALICE_WRITE)
    old_files = snapshot_state(api, repo)
    new = _model(tmp_path / "new")
    (new / "extra_report.json").write_text("{}")
    twin = f"{repo}-new"
    hub.push(new, twin, token=ALICE_WRITE)
    new_files = snapshot_state(api, twin)
    hub_server.faults.add("slow", path="/commit/", delay=0.5, times=99)  # widen the window around the commit
    env = {**os.environ, "HF_TOKEN": ALICE_WRITE, "OMP_NUM_THREADS": "1"}
    script = f"import sys; from compressor import hub; hub.push({str(new)!r}, {repo!r}, overwrite=True)"
    outcomes = []
    try:
        for _ in range(5):
            delay = rng.uniform(0.5, 4.0)
            proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            state = snapshot_state(api, repo)
            assert state in (old_files, new_files), state
            outcomes.append("old" if state == old_files else "new")
            if state != old_files:  # back to the old state for the next round
                hub.push(old, repo, token=ALICE_WRITE, overwrite=True)
    finally:
        hub_server.faults.clear()
    print("push kill outcomes:", outcomes)


def snapshot_state(api: HfApi, repo: str) -> dict[str, str]:
    return {
        f.path: (f.lfs.sha256 if f.lfs else f.blob_id)
        for f in api.list_repo_tree(repo, recursive=True)
        if f.path != ".gitattributes" and hasattr(f, "blob_id")
    }


# ---------------------------------------------------------------------------- secrets


CANARY = "hf_CANARYtoken_7f3a9c1e5b2d4f60"


def _search(places: list[Path], texts: dict[str, str | bytes], secret: str) -> list[str]:
    """Where `secret` appears: files under `places` (any bytes) and named texts (logs, HTTP bodies)."""
    needle = secret.encode()
    found = []
    for place in places:
        for p in [place] if place.is_file() else sorted(place.rglob("*")):
            if p.is_file() and needle in p.read_bytes():
                found.append(str(p))
    for name, text in texts.items():
        if needle in (text if isinstance(text, bytes) else text.encode()):
            found.append(name)
    return found


def test_a_token_passed_every_way_never_leaks(tmp_path, tiny_saved, hub_server, capsys, caplog, monkeypatch):
    hub_server.tokens[CANARY] = {"user": "alice", "role": "write"}
    hub_server.transcript = []
    caplog.set_level(logging.DEBUG)
    repo = f"alice/leak-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    work.mkdir()
    source = tmp_path / "src"
    import shutil

    shutil.copytree(tiny_saved("llava"), source)
    recipe = _recipe(work, source, publish=repo)
    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text(CANARY + "\n")
    try:
        # --token on the command line
        assert main(["run", str(recipe), "--run-dir", str(work / "run"), "--token", CANARY]) == 0
        # --token-file, a failure that names the token's owner, then the push itself
        assert (
            main(
                [
                    "push",
                    str(work / "run"),
                    "--repo-id",
                    f"bob/{repo.split('/')[1]}",
                    "--token-file",
                    str(token_file),
                ]
            )
            == 2
        )
        assert (
            main(
                ["push", str(work / "run"), "--repo-id", repo, "--overwrite", "--token-file", str(token_file)]
            )
            == 0
        )
        # the environment
        monkeypatch.setenv("HF_TOKEN", CANARY)
        assert main(["plan", str(recipe)]) == 0
        assert main(["card", str(work / "run"), "--repo-id", repo]) == 0
        pushed = Path(snapshot_download(repo, token=CANARY, cache_dir=tmp_path / "dl"))
        assert (pushed / "README.md").is_file()
    finally:
        transcript, hub_server.transcript = hub_server.transcript, None
        del hub_server.tokens[CANARY]
    out = capsys.readouterr()
    texts = {
        "stdout": out.out,
        "stderr": out.err,
        "log records": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        **{f"HTTP {m} {p} {s} #{i}": body for i, (m, p, s, body) in enumerate(transcript)},
    }
    assert len(transcript) > 20 and any(p.endswith("/commit/main") for _, p, _, _ in transcript)
    places = [work, tmp_path / "dl", hub_server.store.root]
    assert _search(places, texts, CANARY) == []
    # positive control: a planted copy in a run file, a log line and an HTTP body is found in each place
    (work / "run" / "reports" / "planted.json").write_text(json.dumps({"t": CANARY}))
    texts["log records"] += f"\nAuthorization: Bearer {CANARY}"
    texts[next(k for k in texts if k.startswith("HTTP"))] = b"..." + CANARY.encode()
    found = _search(places, texts, CANARY)
    assert len(found) == 3 and found[0].endswith("planted.json"), found


def test_token_file_from_stdin_and_help_says_which_way_is_safe(tmp_path):
    script = "from compressor.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "plan",
            str(tmp_path),
            "--method",
            "depth",
            "--ratio",
            "0.3",
            "--token-file",
            "-",
        ],
        input="hf_from_stdin_123\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "blip-2" in proc.stderr and "hf_from_stdin_123" not in proc.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "compressor", "push", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    flat = " ".join(help_text.split())
    assert "process list" in flat and "--token-file" in flat and "standard input with '-'" in flat


def test_a_token_given_to_the_app_never_reaches_the_page_or_its_files(
    tmp_path, tiny_saved, hub_server, caplog, monkeypatch
):
    """The app's token box and a Space login's OAuth token: the whole run and push, then nothing the page
    showed, no file under the runs folder and no log record holds the token (a planted copy is found)."""
    import gradio as gr
    import yaml

    from app import on_run
    from compressor.recipe import parse_recipe
    from tests.test_app import _form_args

    hub_server.tokens[CANARY] = {"user": "alice", "role": "write"}
    caplog.set_level(logging.DEBUG)
    runs = tmp_path / "runs"
    monkeypatch.setenv("COMPRESSOR_RUNS", str(runs))
    shown: list[str] = []
    try:
        for i, (box, oauth) in enumerate(
            [
                (CANARY, None),
                (None, gr.OAuthToken(token=CANARY, scope="openid profile write-repos", expires_at=2**31)),
            ]
        ):
            repo = f"alice/app-leak-{i}-{uuid.uuid4().hex[:6]}"
            recipe = parse_recipe(
                yaml.safe_load(_recipe(tmp_path, tiny_saved("llava"), publish=repo).read_text()), "t"
            )
            base = recipe.model_dump(mode="json", exclude_unset=True)
            request = gr.Request(session_hash=f"leak-{i}")
            for update in on_run(box, base, oauth, None, request, lambda *a, **k: None, *_form_args(recipe)):
                shown += [str(u) for u in update]
            assert shown[-7].startswith("Run finished") and repo in "".join(shown[-7:]), shown[-7]
    finally:
        del hub_server.tokens[CANARY]
    texts = {
        "page": "\n".join(shown),
        "log records": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
    }
    assert _search([runs], texts, CANARY) == []
    texts["page"] += CANARY  # positive control
    (runs / "planted.txt").write_text(CANARY)
    assert sorted(_search([runs], texts, CANARY)) == sorted([str(runs / "planted.txt"), "page"])
