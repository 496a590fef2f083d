"""Heavy runs on Hugging Face Jobs, end to end: the genuine huggingface_hub client against the embedded Hub,
whose Jobs API runs each job's command here in a subprocess (hubserver.Jobs), so the whole flow executes.

Nothing is mocked: `python -m compressor run RECIPE --on-jobs FLAVOR` submits a real tiny run as a Job, the
Job (a child process) pulls the model from the embedded Hub, prunes, recovers, evaluates and pushes it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from compressor import jobs
from compressor.cli import main
from compressor.demo import write_dataset, write_eval_sets
from compressor.errors import CompressorError
from compressor.recipe import load_recipe, parse_recipe
from tests.fixtures_hub import ALICE_WRITE

RUN_TIMEOUT = 900  # the tiny run takes about a minute on 2 shared cores; a Job adds a process start


def _tiny_recipe(api, tmp: Path, name: str, max_steps: int = 2) -> dict:
    """test_run.py's tiny run: a tiny LLaVA in the embedded Hub, width pruning, a short LoRA recovery, eval."""
    data = write_dataset(tmp / "shapes", n=16)
    evals = write_eval_sets(tmp, n=12)
    return {
        "model": {"source": f"alice/{name}-src"},
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
            "max_steps": max_steps,
            "data": {"dataset": str(data)},
            "sft": {"per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": 10_000},
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
        "publish": {"repo_id": f"alice/{name}", "private": True},
    }


@pytest.fixture(scope="module")
def tiny_source(hub_server, tiny_saved):
    """A factory: publish the tiny LLaVA as alice/NAME-src and write the recipe of a run on it."""
    from huggingface_hub import HfApi

    api = HfApi(token=ALICE_WRITE)

    def make(tmp: Path, name: str, **kwargs) -> tuple[Path, dict]:
        api.create_repo(f"alice/{name}-src")
        api.upload_folder(repo_id=f"alice/{name}-src", folder_path=tiny_saved("llava"))
        api.upload_file(
            path_or_fileobj=b"---\nlicense: apache-2.0\n---\n# tiny\n",
            path_in_repo="README.md",
            repo_id=f"alice/{name}-src",
        )
        recipe = _tiny_recipe(api, tmp, name, **kwargs)
        path = tmp / "tiny.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path, recipe

    return make


@pytest.fixture(scope="module")
def finished_job(hub_server, tiny_source, tmp_path_factory):
    """`python -m compressor run tiny.yaml --on-jobs cpu-basic` (following by default), run once for the
    module with HF_TOKEN set, and every answer of the Hub kept while it ran (hub_server.transcript)."""
    tmp = tmp_path_factory.mktemp("job-run")
    name = f"t-job-{os.urandom(4).hex()}"
    path, recipe = tiny_source(tmp, name)
    out, err = io.StringIO(), io.StringIO()
    hub_server.transcript = []
    started = time.monotonic()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HF_TOKEN", ALICE_WRITE)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["run", str(path), "--on-jobs", "cpu-basic"])
        transcript = hub_server.transcript
    finally:
        hub_server.transcript = None
    stdout = out.getvalue()
    job_id = next(line.split()[1] for line in stdout.splitlines() if line.startswith("job "))
    return {
        "code": code,
        "stdout": stdout,
        "stderr": err.getvalue(),
        "id": job_id,
        "recipe": recipe,
        "transcript": transcript,
        "seconds": time.monotonic() - started,
    }


@pytest.mark.slow
def test_run_on_jobs_streams_the_logs_and_pushes_the_model(finished_job, hub_server):
    from huggingface_hub import HfApi

    job, recipe = finished_job, finished_job["recipe"]
    assert job["code"] == 0, job["stdout"][-3000:] + job["stderr"][-3000:]
    repo_id = recipe["publish"]["repo_id"]
    url = f"{hub_server.url}/{repo_id}"
    lines = job["stdout"].splitlines()
    assert lines[0] == f"job {job['id']} on cpu-basic: {hub_server.url}/jobs/alice/{job['id']}"
    # the Job's own output, streamed: every stage ran in the Job, then the table and the push
    logs = "\n".join(lines)
    for stage in ("prune", "recover", "eval", "card", "push"):
        assert f"{stage}: start" in logs or f"{stage}: done" in logs, stage
    assert "average retained" in logs
    assert lines[-2] == f"job {job['id']}: COMPLETED" and lines[-1] == f"pushed: {url}"
    # the pushed model is in the embedded Hub
    files = set(HfApi(token=ALICE_WRITE).list_repo_files(repo_id))
    assert {"README.md", "config.json", "model.safetensors", "recipe.yaml", "eval_report.json"} <= files
    # the library side sees the same Job
    state = jobs.status(job["id"], ALICE_WRITE)
    assert (state.stage, state.done, state.flavor) == ("COMPLETED", True, "cpu-basic")
    assert jobs.pushed_url(job["id"], ALICE_WRITE) == url
    listed = {j.id: j for j in HfApi().list_jobs(namespace="alice", token=ALICE_WRITE)}
    info = listed[job["id"]]
    assert info.status.stage == "COMPLETED" and info.labels["app"] == "compressor"
    # the Job installs the package with uv and gets the recipe itself in its command
    assert info.docker_image.startswith("ghcr.io/astral-sh/uv") and info.command[:3] == [
        "uv",
        "run",
        "--with",
    ]
    word = next(w for w in info.command if w.startswith(jobs.RECIPE_PREFIX))
    assert jobs.decode_recipe(word).publish.repo_id == repo_id


def _surfaces(hub_server, job_id: str, token: str) -> dict[str, str]:
    """Everything anyone can read about a Job: what the client lists and inspects, the raw answers, its logs,
    and every file the server keeps for it (its record, its log, its working folder)."""
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.inspect_job(job_id=job_id, namespace="alice", token=token)
    spec = {
        k: getattr(info, k)
        for k in ("docker_image", "command", "arguments", "environment", "secrets", "labels", "flavor")
    }
    found = {"inspect_job": json.dumps(spec, default=str)}
    listed = [j for j in api.list_jobs(namespace="alice", token=token) if j.id == job_id]
    found["list_jobs"] = json.dumps([vars(j) for j in listed], default=str)
    for route in (f"/api/jobs/alice/{job_id}", "/api/jobs/alice", f"/api/jobs/alice/{job_id}/logs"):
        request = urllib.request.Request(hub_server.url + route, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            found[route] = answer.read().decode(errors="replace")
    found["fetch_job_logs"] = "\n".join(api.fetch_job_logs(job_id=job_id, namespace="alice", token=token))
    folder = hub_server.store.root / "jobs" / "alice" / job_id
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        found[str(path.relative_to(folder))] = path.read_bytes().decode("latin-1")
    return found


def _leaks(surfaces: dict[str, str], secret: str) -> list[str]:
    return sorted(name for name, text in surfaces.items() if secret in text)


@pytest.mark.slow
def test_the_token_reaches_the_job_only_as_a_secret(finished_job, hub_server):
    """The token is nowhere in the Job's listed spec, arguments, environment, labels or logs, nor in any
    file the server keeps for it, any answer the Hub gave while it ran, or what the CLI printed. The
    positive control plants a copy in a Job's environment: the same search finds it everywhere it shows."""
    from huggingface_hub import HfApi

    job = finished_job
    assert job["code"] == 0
    surfaces = _surfaces(hub_server, job["id"], ALICE_WRITE)
    assert len(surfaces) > 8 and any(name.startswith("work/") for name in surfaces)  # the run folder too
    surfaces["cli output"] = job["stdout"] + job["stderr"]
    surfaces["every Hub answer during the run"] = b"".join(a[3] for a in job["transcript"]).decode("latin-1")
    assert len(job["transcript"]) > 20  # the Job's own pulls and push went through the same server
    assert _leaks(surfaces, ALICE_WRITE) == []
    assert json.loads(surfaces["inspect_job"])["secrets"] == {"HF_TOKEN": None}  # by name only

    # positive control: the same token given as a plain env var (as a careless caller would) is found
    api = HfApi()
    script = (
        "import hashlib, os; print('planted', os.environ['PLANTED']); "
        "print('secret sha256', hashlib.sha256(os.environ['HF_TOKEN'].encode()).hexdigest())"
    )
    control = api.run_job(
        image="python:3.12",
        command=["python", "-c", script],
        env={"PLANTED": ALICE_WRITE},
        secrets={"HF_TOKEN": ALICE_WRITE},
        namespace="alice",
        token=ALICE_WRITE,
    )
    assert (
        api.wait_for_job(control.id, timeout=120, namespace="alice", token=ALICE_WRITE).status.stage
        == "COMPLETED"
    )
    planted = _leaks(_surfaces(hub_server, control.id, ALICE_WRITE), ALICE_WRITE)
    assert {"inspect_job", "list_jobs", "fetch_job_logs", "job.json", "logs.jsonl"} <= set(planted)
    # ... and the secret itself did reach the Job's process, as its environment
    logs = list(api.fetch_job_logs(job_id=control.id, namespace="alice", token=ALICE_WRITE))
    assert f"secret sha256 {hashlib.sha256(ALICE_WRITE.encode()).hexdigest()}" in logs


@pytest.mark.slow
def test_cancel_stops_a_run_mid_recovery(hub_server, tiny_source, tmp_path):
    """A Job cancelled while it trains: its process (and its process group) is gone, the stage is CANCELED,
    the log stream ends, and nothing was pushed."""
    from huggingface_hub import HfApi

    name = f"t-cancel-{os.urandom(4).hex()}"
    path, recipe = tiny_source(tmp_path, name, max_steps=100_000)
    job = jobs.submit(path, "cpu-basic", ALICE_WRITE)
    assert jobs.status(job, ALICE_WRITE).stage == "RUNNING"
    seen = []
    for line in jobs.logs(job, ALICE_WRITE, follow=True):
        seen.append(line)
        if "recover: start" in line:
            break
    assert "recover: start" in seen[-1], "\n".join(seen[-30:])
    time.sleep(2)  # inside the training loop
    pid = hub_server.jobs.all[job.id].pid
    os.kill(pid, 0)  # alive
    state = jobs.cancel(job, ALICE_WRITE)
    assert (state.stage, state.done) == ("CANCELED", True)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the process is gone (and reaped)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # and so is anything it started in its group
    assert list(jobs.logs(job, ALICE_WRITE, follow=True))  # the stream ends at once
    assert jobs.pushed_url(job, ALICE_WRITE) is None
    assert not HfApi(token=ALICE_WRITE).repo_exists(recipe["publish"]["repo_id"])


@pytest.mark.filterwarnings("ignore:.HfApi.run_uv_job. is experimental")
def test_a_uv_job_runs_here_and_its_lines_stream_as_they_come(hub_server):
    """run_uv_job's `uv run --with … python …` runs with this interpreter; a line is read while the Job
    still runs; a failing command is an ERROR with its exit code."""
    from huggingface_hub import HfApi

    api = HfApi()
    script = "import sys, time; print('first', sys.executable, flush=True); time.sleep(3); print('second')"
    job = api.run_uv_job(
        "python",
        script_args=["-c", script],
        dependencies=["mllm-compressor"],
        namespace="alice",
        token=ALICE_WRITE,
    )
    assert job.command[:4] == ["uv", "run", "--with", "mllm-compressor"]
    stages = []
    for line in api.fetch_job_logs(job_id=job.id, namespace="alice", follow=True, token=ALICE_WRITE):
        stages.append(
            (line, api.inspect_job(job_id=job.id, namespace="alice", token=ALICE_WRITE).status.stage)
        )
    assert stages[0] == (f"first {sys.executable}", "RUNNING")  # streamed while the Job ran
    assert [line for line, _ in stages] == [f"first {sys.executable}", "second"]
    done = api.wait_for_job(job.id, timeout=60, namespace="alice", token=ALICE_WRITE)
    assert done.status.stage == "COMPLETED" and done.finished_at is not None

    failing = api.run_job(
        image="python:3.12",
        command=["python", "-c", "raise SystemExit(3)"],
        namespace="alice",
        token=ALICE_WRITE,
    )
    failed = api.wait_for_job(failing.id, timeout=60, namespace="alice", token=ALICE_WRITE)
    assert (failed.status.stage, failed.status.message) == ("ERROR", "exit code 3")
    assert jobs.status(failing.id, ALICE_WRITE).stage == "ERROR"

    slow = api.run_job(
        image="python:3.12",
        command=["python", "-c", "import time; time.sleep(120)"],
        timeout=1,
        namespace="alice",
        token=ALICE_WRITE,
    )
    timed_out = api.wait_for_job(slow.id, timeout=60, namespace="alice", token=ALICE_WRITE)
    assert (timed_out.status.stage, timed_out.status.message) == ("ERROR", "Job timed out after 1 s")


def test_jobs_status_logs_and_cancel_commands(hub_server, capsys, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    job = HfApi().run_job(
        image="python:3.12",
        command=["python", "-c", "print('hello from the job', flush=True); import time; time.sleep(300)"],
        namespace="alice",
        token=ALICE_WRITE,
    )
    deadline = time.monotonic() + 60
    while "hello from the job" not in list(jobs.logs(job.id, follow=False)):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert main(["jobs", "status", job.id]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"job {job.id}: RUNNING"
    assert main(["jobs", "logs", job.id]) == 0
    assert capsys.readouterr().out == "hello from the job\n"
    assert main(["jobs", "cancel", job.id]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"job {job.id}: CANCELED"
    assert main(["jobs", "logs", job.id, "--follow"]) == 1  # it did not complete
    captured = capsys.readouterr()
    assert f"job {job.id}: CANCELED" in captured.out and "ended CANCELED" in captured.err
    assert main(["jobs", "status", "0" * 24]) == 2
    err = capsys.readouterr().err
    assert f"job '{'0' * 24}' was not found" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flavor", "message"),
    [
        ("a100-hugee", "--on-jobs is 'a100-hugee' (did you mean 'a100-large'?): not a Hugging Face Jobs"),
        ("gpu", "--on-jobs is 'gpu': not a Hugging Face Jobs hardware flavour; choose one of cpu-basic"),
    ],
)
def test_a_bad_flavour_is_a_clear_error(hub_server, tmp_path, capsys, monkeypatch, flavor, message):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {source: alice/x}\nprune: {method: depth, ratio: 0.3}\npublish: {repo_id: alice/y}\n"
    )
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    before = len(list(HfApi().list_jobs(namespace="alice", token=ALICE_WRITE)))
    assert main(["run", str(recipe), "--on-jobs", flavor]) == 2
    err = capsys.readouterr().err
    assert message in err and "or auto for the smallest" in err and "Traceback" not in err
    assert len(list(HfApi().list_jobs(namespace="alice", token=ALICE_WRITE))) == before  # nothing submitted
    with pytest.raises(HfHubHTTPError, match="Invalid flavor 'a100-hugee'"):  # the server checks it too
        HfApi().run_job(
            image="x", command=["true"], flavor="a100-hugee", namespace="alice", token=ALICE_WRITE
        )


@pytest.mark.parametrize(
    ("recipe", "argv", "message"),
    [
        (
            "model: {source: alice/x}\nprune: {method: depth, ratio: 0.3}\n",
            [],
            "the recipe has no publish: section, and a Job's disk is gone when it ends",
        ),
        (
            "model: {source: alice/x}\nprune: {method: depth, ratio: 0.3}\npublish: {repo_id: alice/y}\n",
            ["--jobs-timeout", "6 hours"],
            "--jobs-timeout is '6 hours': give a number of seconds, or a number followed by s, m, h or d",
        ),
        (
            "model: {source: alice/x}\nprune: {method: depth, ratio: 0.3}\npublish: {repo_id: alice/y}\n",
            ["--run-dir", "here"],
            "--run-dir 'here' names a folder on this machine, but --on-jobs runs the recipe in a Job",
        ),
    ],
)
def test_a_run_that_cannot_go_to_jobs_is_refused(
    hub_server, tmp_path, capsys, monkeypatch, recipe, argv, message
):
    path = tmp_path / "r.yaml"
    path.write_text(recipe)
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    assert main(["run", str(path), "--on-jobs", "t4-small", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_real_hub_job_cannot_read_this_machines_files(tmp_path):
    """Against huggingface.co (checked without a request) a recipe naming local folders, or a package that
    is a local folder, is refused before submission with the key and the fix."""
    data = write_dataset(tmp_path / "shapes", n=2)
    recipe = parse_recipe(
        {
            "model": {"source": "llava-hf/llava-1.5-7b-hf"},
            "prune": {"method": "depth", "ratio": 0.3, "calibration": {"dataset": str(data)}},
            "publish": {"repo_id": "you/x"},
        }
    )
    image, command = jobs.job_command(recipe, package="mllm-compressor @ file:///work/main")
    with pytest.raises(
        CompressorError, match=rf"prune.calibration.dataset: {re.escape(str(data))}; upload them"
    ):
        jobs._check_remote(recipe, image, command, "https://huggingface.co")
    elsewhere = parse_recipe(  # a data file that is not even here (the repo's recipes name data/… files)
        {
            "model": {"source": "llava-hf/llava-1.5-7b-hf"},
            "prune": {"method": "depth", "ratio": 0.3, "calibration": {"dataset": "data/mix665k.json"}},
            "publish": {"repo_id": "you/x"},
        }
    )
    with pytest.raises(CompressorError, match="cannot read: prune.calibration.dataset: data/mix665k.json"):
        jobs._check_remote(elsewhere, image, command, "https://huggingface.co")
    remote = recipe.model_copy(update={"prune": recipe.prune.model_copy(update={"calibration": None})})
    with pytest.raises(
        CompressorError, match="COMPRESSOR_JOBS_PACKAGE .or --jobs-package. to a spec the Job"
    ):
        jobs._check_remote(remote, image, command, "https://huggingface.co")
    jobs._check_remote(
        remote, *jobs.job_command(remote, package="mllm-compressor==0.1.0"), "https://huggingface.co"
    )
    jobs._check_remote(recipe, image, command, "http://127.0.0.1:8080")  # the embedded Hub runs it here
    # an image with the package: no uv, the same run
    image, command = jobs.job_command(remote, image="hf.co/spaces/you/compressor")
    assert image == "hf.co/spaces/you/compressor" and command[:4] == ["python", "-m", "compressor", "run"]


def test_a_job_of_an_exporting_recipe_sets_up_llama_cpp_and_refuses_k_quants_on_the_uv_image():
    """export.gguf: the Job gets the pinned runner and pip (the uv image has neither), and sets up the converter
    before the run; k-quants need llama-quantize, which the uv image has not: refused before anything is sent
    (the embedded Hub runs the Job here, and an image may have one: not refused there)."""
    from compressor.export.toolchain import XLLAMACPP

    plain = {"model": {"source": "acme/m"}, "prune": {"method": "depth", "ratio": 0.3}}
    exporting = parse_recipe({**plain, "export": {"gguf": {"quants": ["f16", "q4_k_m"]}}}, "t")
    _, command = jobs.job_command(exporting, package="mllm-compressor==1.0")
    setup = ["sh", "-c", jobs.EXPORT_SETUP, "export-tools", "python", "-m", "compressor", "run"]
    tools = ["--with", f"xllamacpp=={XLLAMACPP}", "--with", "pip"]
    assert command[:8] == ["uv", "run", "--with", "mllm-compressor==1.0", *tools]
    assert command[8:16] == setup and jobs.decode_recipe(command[16]) == exporting
    _, plain_command = jobs.job_command(parse_recipe(plain, "t"), package="mllm-compressor==1.0")
    assert plain_command[4:8] == ["python", "-m", "compressor", "run"]  # nothing to set up
    with pytest.raises(CompressorError) as refused:
        jobs._check_kquants(exporting, None, "https://huggingface.co")
    assert "export.gguf.quants has q4_k_m" in str(refused.value) and "ask the Job only for f32, f16" in str(
        refused.value
    )
    jobs._check_kquants(exporting, "ghcr.io/acme/with-llama-quantize", "https://huggingface.co")
    jobs._check_kquants(exporting, None, "http://127.0.0.1:8080")


def test_on_jobs_auto_is_the_plans_flavour(hub_server, tiny_source, tmp_path, capsys, monkeypatch):
    """`--on-jobs auto` submits on the smallest flavour that fits the plan; `--no-follow` returns at once."""
    from tests import real_shapes

    path, _ = tiny_source(tmp_path, f"t-auto-{os.urandom(4).hex()}")
    recipe = load_recipe(path)
    flavor = jobs.resolve_flavor("auto", recipe, ALICE_WRITE)
    assert flavor == "cpu-basic"  # a 0.3 M-parameter model
    # LLaVA-1.5-7B (config only) with LoRA recovery: ~28 GB of GPU memory (a 7.06 B bf16 teacher, 14.1 GB, and
    # the 5.04 B student, 10.1 GB, + activations): more than a 24 GB A10G, so an L40S (48 GB)
    seven = tmp_path / "llava-7b"
    seven.mkdir()
    (seven / "config.json").write_text(json.dumps(real_shapes.llava_1_5_7b()))
    big = parse_recipe(
        {
            "model": {"source": str(seven)},
            "prune": {"method": "depth", "ratio": 0.3},
            "recover": {"mode": "lora"},
        },
        "7b",
    )
    assert jobs.resolve_flavor("auto", big) == "l40sx1"
    # recover.mode auto (the default) chooses for Jobs' hardware, not this machine's: full training of the 30 %
    # student needs ~100 GB, which the biggest one-GPU flavour (h200, 141 GB) holds, so the flavour is sized for
    # full training (h200, where LoRA's l40sx1 would make the Job choose LoRA again); at 45 % it needs ~82 GB: the
    # RTX PRO 6000 (96 GB)
    from compressor import api
    from compressor.hardware import jobs_device

    assert jobs_device() == ("the h200 Jobs flavour", 141 * 10**9)
    auto = big.model_copy(update={"recover": big.recover.model_copy(update={"mode": "auto"})})
    planned = api.plan(auto, device=jobs_device())
    assert planned.recovery.mode == "full" and "of the h200 Jobs flavour's 141 GB" in planned.recovery.reason
    assert jobs.resolve_flavor("auto", auto) == "h200"
    deeper = auto.model_copy(update={"prune": auto.prune.model_copy(update={"ratio": 0.45})})
    assert jobs.resolve_flavor("auto", deeper) == "rtx-pro-6000"
    assert jobs.resolve_flavor("a10g-small", recipe, ALICE_WRITE) == "a10g-small"
    monkeypatch.setenv("HF_TOKEN", ALICE_WRITE)
    assert main(["run", str(path), "--on-jobs", "auto", "--no-follow"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    job_id = first.split()[1]
    assert first.startswith(f"job {job_id} on {flavor}: ")
    assert second == f"follow it with: python -m compressor jobs logs {job_id} --follow"
    assert jobs.status(job_id).stage == "RUNNING"
    assert jobs.cancel(job_id).stage == "CANCELED"


def test_local_argv_maps_a_jobs_command_to_this_environment():
    from compressor.hubserver import local_argv

    bin_dir = Path(sys.executable).parent
    assert local_argv(
        ["uv", "run", "--with", "x @ git+https://h/r@1", "--python", "3.12", "python", "-V"]
    ) == [
        sys.executable,
        "-V",
    ]
    assert local_argv(["python3", "-m", "compressor"]) == [sys.executable, "-m", "compressor"]
    assert local_argv(["uv", "run", "--isolated", "train.py", "--lr=1"]) == [
        sys.executable,
        "train.py",
        "--lr=1",
    ]
    assert local_argv(["compressor", "run", "r.yaml"]) == [str(bin_dir / "compressor"), "run", "r.yaml"]
    assert local_argv(["bash", "-c", "echo hi"]) == ["bash", "-c", "echo hi"]


def test_a_job_left_running_by_a_stopped_server_is_an_error_after_restart(tmp_path):
    from huggingface_hub import HfApi

    from compressor import hubserver

    server = hubserver.serve(0, tmp_path / "hub", {ALICE_WRITE: {"user": "alice", "role": "write"}})
    try:
        api = HfApi(endpoint=server.url)
        job = api.run_job(
            image="x",
            command=["python", "-c", "print('up', flush=True); import time; time.sleep(300)"],
            namespace="alice",
            token=ALICE_WRITE,
        )
        pid = server.jobs.all[job.id].pid
    finally:
        server.shutdown()  # stops its jobs
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server = hubserver.serve(0, tmp_path / "hub", {ALICE_WRITE: {"user": "alice", "role": "write"}})
    try:
        api = HfApi(endpoint=server.url)
        info = api.inspect_job(job_id=job.id, namespace="alice", token=ALICE_WRITE)
        assert info.status.stage == "ERROR" and "server stopped" in info.status.message
    finally:
        server.shutdown()
