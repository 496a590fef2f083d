"""Faults on purpose and secrets that never leak.

The embedded Hub's fault switch fails requests (5xx, a dropped connection, a slow answer); pushes retry with
backoff and then fail cleanly. A run folder is held by one run at a time. Processes are killed (SIGKILL) at
points of their work. A recognisable token, passed every way the CLI takes one, is searched for in every file, log
line and HTTP answer, with a positive control that proves the search finds a planted copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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


@pytest.mark.parametrize(
    ("kind", "path", "said"),
    [
        ("status", "/commit/", "failed (tried 4 times) and nothing was committed: the Hub answered 503"),
        (
            "drop",
            "/commit/",
            "cannot reach the Hub at http://127.0.0.1:{port} (the push tried 4 times and committed nothing)",
        ),
    ],
)
def test_push_that_keeps_failing_leaves_no_repo(tmp_path, faults, fast_retries, kind, path, said, hub_server):
    repo = f"alice/fault-{uuid.uuid4().hex[:8]}"
    fault = faults.add(kind, path=path, times=99)
    with pytest.raises(CompressorError) as err:
        hub.push(_model(tmp_path / "m"), repo, token=ALICE_WRITE)
    assert said.format(port=hub_server.server_address[1]) in str(err.value)
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


# ---------------------------------------------------------------------------- SIGKILL mid-work

# A warm parent that forks one child per command: each child starts with torch, transformers and the
# compressor already imported, so a kill is timed against the work itself, not against the imports.
# A child stays unreaped (a zombie once it ends) until the test asks for its exit code: its pid is never
# reused while the test may still signal it.
_FORKER = r"""
import contextlib, json, os, sys, threading
import torch, transformers, huggingface_hub, tqdm, tqdm.std  # noqa: F401
import compressor.api, compressor.cli, compressor.hub, compressor.models, compressor.prune  # noqa: F401
# No lock may outlive a killed child or be held at a fork: tqdm's default write lock includes a multiprocessing
# RLock shared by every process forked after it exists, so a child SIGKILLed inside a progress bar would leave
# it held and every later child would hang at its first bar (seen here); bars get tqdm's thread lock only. And
# fork only from a single thread (no tqdm monitor thread), so no thread's lock is copied held into a child.
tqdm.std.TqdmDefaultWriteLock.mp_lock = None
tqdm.tqdm.monitor_interval = 0
torch.set_num_threads(1)
print("ready", flush=True)
while line := sys.stdin.readline():
    cmd = json.loads(line)
    if cmd["op"] == "here":  # in this parent, e.g. a first run that leaves the children its lazy imports
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            exec(compile(cmd["code"], "<here>", "exec"), {"__name__": "__main__"})
        print("done", flush=True)
        continue
    if cmd["op"] == "reap":
        _, status = os.waitpid(cmd["pid"], 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
        continue
    if threading.active_count() != 1:
        print("threads alive, refusing to fork:", threading.enumerate(), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        code = 0
        try:
            exec(compile(cmd["code"], "<child>", "exec"), {"__name__": "__main__"})
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            code = 1
        os._exit(code)
    print(pid, flush=True)
"""


class Forker:
    """The test's end of `_FORKER`: start a child, kill it at a point of its work, read its exit code."""

    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FORKER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._read() == "ready"

    def _send(self, cmd: dict) -> str:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def _read(self) -> str:
        line = self.proc.stdout.readline().strip()
        assert line, f"the forking parent died (exit {self.proc.poll()})"
        return line

    def here(self, code: str) -> None:
        """Run `code` in the parent itself (an exception ends it: the next read fails)."""
        assert self._send({"op": "here", "code": code}) == "done"

    def run(self, code: str, begun, delay: float | None, timeout: float = 120.0) -> tuple[int, float]:
        """Start `code` in a child; once `begun()` holds, SIGKILL it `delay` s later (None: let it end).

        Returns the child's exit code (-9: killed) and the seconds from `begun()` holding to its end (for a
        kill: to the kill)."""
        answer = self._send({"op": "run", "code": code})
        assert answer.isdigit(), answer
        pid = int(answer)
        start = time.monotonic()
        while not begun():
            if _ended(pid):
                return int(self._send({"op": "reap", "pid": pid})), 0.0
            if time.monotonic() - start > timeout:
                os.kill(pid, signal.SIGKILL)
                self._send({"op": "reap", "pid": pid})
                pytest.fail(f"the child never began its work in {timeout:.0f} s")
            time.sleep(0.0005)
        began = time.monotonic()
        if delay is None:
            while not _ended(pid):
                time.sleep(0.0005)
        else:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)  # a child that already ended is a zombie: the signal is a no-op
        took = time.monotonic() - began
        return int(self._send({"op": "reap", "pid": pid})), took

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _ended(pid: int) -> bool:
    """Whether the (unreaped) child `pid` has ended: a zombie in /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def forker():
    f = Forker()
    yield f
    f.close()


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes); {} when it is absent."""
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _listing(folder: Path) -> set:
    """Every path under `folder` with its size and mtime (a path gone between listing and stat counts too)."""
    found = set()
    for p in folder.rglob("*"):
        try:
            s = p.stat()
        except FileNotFoundError:
            found.add((p.as_posix(), -1, -1))
        else:
            found.add((p.as_posix(), s.st_size, s.st_mtime_ns))
    return found


def _kills(attempt, window: float, killed_only: bool, extra: int = 6) -> list[tuple[float, int, str]]:
    """`attempt(delay) -> (exit code, outcome)` at delays spread over the control run's `window`; while 'old' or
    'new' is missing (among the killed children only, with `killed_only`), up to `extra` more tries: earlier
    than any so far for 'old', else halfway between the latest kill that left 'old' and the earliest try that
    gave 'new' (or past the window), so a busy machine costs a few tries, not a flaky failure."""
    results = [(window * f, *attempt(window * f)) for f in (0.05, 0.3, 0.6, 0.9, 1.3)]
    for _ in range(extra):
        seen = {o for _, rc, o in results if rc == -signal.SIGKILL or not killed_only}
        if {"old", "new"} <= seen:
            break
        if "old" not in seen:
            delay = min(d for d, _, _ in results) / 4
        else:
            lo = max(d for d, _, o in results if o == "old")
            hi = min((d for d, _, o in results if o == "new" and d > lo), default=lo + window)
            delay = (lo + hi) / 2
        results.append((delay, *attempt(delay)))
    return results


PRUNE_FILES = {
    "config.json",
    "model.safetensors",
    "prune_report.json",
    "tokenizer.json",
    "processor_config.json",
}


def test_a_killed_prune_leaves_the_old_output_or_the_new_one(tmp_path, tiny_saved, forker):
    """SIGKILL `prune --overwrite` over an earlier output at points spread over its writing (the clock starts
    when the first file of the run changes): the folder is then exactly the old output or exactly the new one."""
    src = tiny_saved("llava")

    def code(out: Path, ratio: float) -> str:
        argv = ["prune", str(src), "--method", "depth", "--ratio", str(ratio), "--scorer", "last"]
        return f"import sys; from compressor.cli import main; sys.exit(main({[*argv, '--out', str(out), '--overwrite']!r}))"

    def contents(out: Path) -> dict[str, bytes]:
        """The output's files, its report without the one field that differs run to run (seconds taken)."""
        files = _contents(out)
        try:
            report = json.loads(files["prune_report.json"])
            files["prune_report.json"] = json.dumps({**report, "seconds": None}).encode()
        except (KeyError, ValueError):
            pass  # absent or cut short: compared as it is
        return files

    def changed(folder: Path):
        before = _listing(folder)
        return lambda: _listing(folder) != before

    # control runs: an old output (ratio 0.5, in the parent: the children inherit its lazy imports) and, over
    # a copy of it, an un-killed new one (ratio 0.3)
    forker.here(code(tmp_path / "old" / "out", 0.5).replace("sys.exit(", "assert 0 == ("))
    old = contents(tmp_path / "old" / "out")
    control = tmp_path / "control"
    shutil.copytree(tmp_path / "old", control)
    rc, window = forker.run(code(control / "out", 0.3), changed(control), None)
    new = contents(control / "out")
    assert rc == 0 and set(new) >= PRUNE_FILES and set(old) >= PRUNE_FILES, (rc, sorted(new))
    assert json.loads(new["config.json"])["text_config"]["num_hidden_layers"] == 4  # 6 layers, 2 dropped
    assert json.loads(old["config.json"])["text_config"]["num_hidden_layers"] == 3
    assert all(old[f] != new[f] for f in ("config.json", "model.safetensors", "prune_report.json"))
    from safetensors.torch import load_file

    assert load_file(control / "out" / "model.safetensors").keys()  # the new weights load

    def attempt(delay: float) -> tuple[int, str]:
        folder = Path(tempfile.mkdtemp(dir=tmp_path, prefix="kill-"))
        shutil.copytree(tmp_path / "old", folder, dirs_exist_ok=True)
        rc, _ = forker.run(code(folder / "out", 0.3), changed(folder), delay)
        got = contents(folder / "out")
        outcome = "old" if got == old else "new" if got == new else f"partial: {sorted(got)}"
        assert rc in (-signal.SIGKILL, 0), rc
        assert not outcome.startswith("partial") and (rc == -signal.SIGKILL or outcome == "new"), (
            delay,
            rc,
            outcome,
        )
        return rc, outcome

    results = _kills(attempt, window, killed_only=False)
    print(
        f"prune: window {window * 1000:.0f} ms; (delay ms, exit, outcome):",
        [(round(d * 1000), r, o) for d, r, o in results],
    )
    outcomes = {o for _, rc, o in results}
    assert {"old", "new"} <= outcomes, (
        results
    )  # kills landed mid-write, and some after the output was complete


def test_a_killed_push_leaves_the_old_repo_or_the_new_one(tmp_path, hub_server, forker):
    """SIGKILL `push --overwrite` at points spread over its requests (the clock starts at its first request;
    the commit request is held 0.4 s by the server before it is read): the repo is then exactly the old file
    set or the new one, and both happen: kills before the commit was sent and kills after it."""
    api = HfApi(token=ALICE_WRITE)
    repo = f"alice/kill-{uuid.uuid4().hex[:8]}"
    old = _model(tmp_path / "old")
    hub.push(old, repo, token=ALICE_WRITE)
    old_files = snapshot_state(api, repo)
    new = _model(tmp_path / "new")
    (new / "extra_report.json").write_text("{}")
    code = (
        f"from compressor import hub; hub.push({str(new)!r}, {repo!r}, token={ALICE_WRITE!r}, overwrite=True)"
    )
    delay = 0.4

    def settled() -> dict[str, str]:
        """The repo's files once a request the killed child left in the server (sleeping) has been handled."""
        time.sleep(delay + 0.15)
        state = snapshot_state(api, repo)
        while (again := snapshot_state(api, repo)) != state:
            state = again
            time.sleep(0.1)
        return state

    def run(kill_after: float | None) -> tuple[int, float, dict]:
        hub_server.faults.add("slow", path="/commit/", delay=delay, times=9)
        started = hub_server.faults.add("slow", path="/api/", delay=0.0, times=99)  # counts every request
        try:
            rc, took = forker.run(code, lambda: started.seen > 0, kill_after)
            state = settled()
        finally:
            hub_server.faults.clear()
        return rc, took, state

    rc, window, new_files = run(None)  # the control: an un-killed push replaces the old files with the new
    assert rc == 0 and set(new_files) == set(old_files) | {"extra_report.json"}, (rc, new_files)
    assert new_files["model.safetensors"] != old_files["model.safetensors"]
    hub.push(old, repo, token=ALICE_WRITE, overwrite=True)
    assert snapshot_state(api, repo) == old_files

    def attempt(kill_after: float) -> tuple[int, str]:
        rc, _, state = run(kill_after)
        outcome = "old" if state == old_files else "new" if state == new_files else f"partial: {state}"
        assert rc in (-signal.SIGKILL, 0) and not outcome.startswith("partial"), (kill_after, rc, outcome)
        if outcome == "new":  # back to the old state for the next round
            hub.push(old, repo, token=ALICE_WRITE, overwrite=True)
        return rc, outcome

    results = _kills(attempt, window, killed_only=True)
    print(
        f"push: window {window:.2f} s; (delay s, exit, outcome):",
        [(round(d, 2), r, o) for d, r, o in results],
    )
    killed = {o for _, rc, o in results if rc == -signal.SIGKILL}
    assert killed == {"old", "new"}, results  # killed before the commit was sent, and after


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
