"""The app's API (the Space's API is part of the product: README, "The app's API"): gradio_client against the
launched app, on the embedded default served by the test Hub. Nothing is mocked: each run is the real
pipeline in the app's child process.

What is shown here: the named endpoints and nothing else; /plan with its warnings; /run to the pushed link
(the token reaches the run on stdin only, never in its arguments or environment, and its temporary folder
goes when it ends); one run at a time, the second caller told "2nd in line" and started when the first
ends; /cancel and a closed stream (gradio_client's Job.cancel) really end the run's process; a cancelled run
resumes after its last stage and its last whole training checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures_hub import ALICE_WRITE
from tests.leaks import holding
from tests.test_app import _free_port

pytestmark = pytest.mark.slow  # end to end: started first when xdist hands out the files

REPO = Path(__file__).resolve().parent.parent
# quiet times on this machine (2 shared cores): a 12-step run ~45 s, the child's start ~10 s; 3x and more
RUN_S = 240
START_S = 90


@pytest.fixture(scope="module")
def api_runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-runs")


@pytest.fixture(scope="module")
def app(api_runs, embedded_default):
    """The app on the test Hub, with no token of its own: a run pushes with the caller's token only."""
    from app import build_app, launch_options

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESSOR_RUNS", str(api_runs))
        mp.delenv("HF_TOKEN", raising=False)
        demo = build_app().queue()
        port = _free_port()
        demo.launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            ssr_mode=False,
            **launch_options(),
        )
        yield f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture
def client(app, tmp_path):
    from gradio_client import Client

    made = []

    def new():
        c = Client(app, verbose=False, download_files=str(tmp_path / "downloads"), analytics_enabled=False)
        made.append(c)
        return c

    yield new
    for c in made:
        c.close()


def demo_recipe(**changes) -> str:
    """The embedded default's YAML, with `section.key` changes (None removes a section)."""
    data = yaml.safe_load((REPO / "compressor" / "demo.yaml").read_text())
    for key, value in changes.items():
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return yaml.safe_dump(data, sort_keys=False)


def wait_for(job, test, timeout: float, what: str):
    """The first output of `job` (a streaming gradio_client Job) for which `test(output)` holds."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        outputs = job.outputs()
        for out in outputs[seen:]:
            if test(out):
                return out
        seen = len(outputs)
        if job.done() and seen == len(job.outputs()):
            break
        time.sleep(0.2)
    last = job.outputs()[-1] if job.outputs() else None
    pytest.fail(f"no output with {what} in {timeout:.0f} s; last: {last!r:.1500}")


def status_of(out) -> str:
    return out[0] if isinstance(out, list | tuple) and isinstance(out[0], str) else ""


def child_pid(runs: Path, recipe_yaml: str, timeout: float = START_S) -> int:
    """The pid of the run's process, from the lock it holds in its run folder (`pid N`)."""
    from app import recipe_from_yaml, run_folder

    name = run_folder(Path("x"), recipe_from_yaml(recipe_yaml)).name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lock in runs.glob(f"*/{name}/.lock"):
            text = lock.read_text().strip()
            if text.startswith("pid "):
                return int(text.split()[1])
        time.sleep(0.2)
    pytest.fail(f"no run folder {name} holds a lock after {timeout:.0f} s")


def gone(pid: int, timeout: float = 30) -> bool:
    """The process has ended and been reaped (no zombie left either)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.2)
    return False


def run_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("compressor-run-*")}


def test_the_api_is_the_named_endpoints(client):
    api = client().view_api(return_format="dict", print_info=False)
    named = set(api["named_endpoints"])
    assert {"/plan", "/run", "/cancel"} <= named, named
    assert all(not name.startswith("/lambda") and "yaml_view" not in name for name in named), named
    assert not api["unnamed_endpoints"], api["unnamed_endpoints"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/run"]["parameters"]]
    assert params == ["recipe", "token"]


def test_plan_returns_the_table_and_its_warnings(client):
    status, plan = client().predict(demo_recipe(**{"prune.ratio": 0.55}), "", api_name="/plan")
    assert status.startswith("Plan ready"), status
    assert "MLP intermediate" in plan and "**Warnings**" in plan, plan
    status, plan = client().predict(
        "model: {source: demo/tiny-llava}\nprune: {ratio: 2}\n", "", api_name="/plan"
    )
    assert status.startswith("**Error:**") and "prune.ratio" in status and plan == ""
    status, _ = client().predict("model: [", "", api_name="/plan")
    assert "not valid YAML" in status


def test_run_pushes_with_the_callers_token_which_stays_out_of_argv_and_env(client, api_runs, hub_server):
    from huggingface_hub import HfApi

    from app import PLOTS

    recipe = demo_recipe(
        **{"recover.max_steps": 12, "evaluate": None, "publish.repo_id": "alice/api-width30"}
    )
    before = run_temp_dirs()
    job = client().submit(recipe, ALICE_WRITE, api_name="/run")
    pid = child_pid(api_runs, recipe)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert holding(ALICE_WRITE, {"cmdline": cmdline, "environ": environ}) == []
    # positive control: the same search on the same /proc files finds what they do hold
    assert holding(os.environ["HF_ENDPOINT"], {"cmdline": cmdline, "environ": environ}) == ["environ"]
    assert holding("python", {"cmdline": cmdline}) == ["cmdline"]
    out = wait_for(job, lambda o: "Run finished" in status_of(o) or "Error" in status_of(o), RUN_S, "an end")
    assert "Run finished" in out[0], out[0]
    status, board, log, scores, card, url, plots = out
    assert "alice/api-width30" in url and 'data-stage="push" data-state="done"' in board
    assert "step 10/12" in log and "What was removed" in card
    assert str(api_runs) not in status + board + log + card + url
    assert HfApi(token=ALICE_WRITE).repo_exists("alice/api-width30")
    # the run's pictures (RUN/plots/*.png) come back as images with their captions; no eval: no scores
    captions = [item["caption"] for item in plots]
    assert captions == [caption for name, caption in PLOTS if name != "scores"], plots
    assert all(Path(item["image"]).stat().st_size > 1000 for item in plots)
    assert gone(pid) and run_temp_dirs() <= before, "the run's process and temporary folder are gone"
    # only alice's token was used: the folder is the session's, the push is alice's
    assert len([p for p in api_runs.glob("session-*/*") if (p / "reports" / "push.json").is_file()]) == 1


def gguf_recipe(repo_id: str) -> str:
    """A short run with export.gguf: test_export's tiny LLaVA (SmolLM2's tokenizer, which llama.cpp's converter
    knows as it is), 3 of its 6 layers dropped (data-free), f16 only. (The embedded default exports too, through
    the byte-level fallback: tests/test_export.py.)"""
    from tests.test_export import _tiny

    model = _tiny("llava-seed0")  # built once into the user cache, atomically
    return yaml.safe_dump(
        {
            "model": {"source": str(model)},
            "prune": {"method": "depth", "ratio": 0.017, "scorer": "last"},
            "export": {"gguf": {"quants": ["f16"]}},
            "publish": {"repo_id": repo_id},
        }
    )


def test_a_run_with_export_shows_the_stage_and_pushes_the_gguf_repo(client, hub_server):
    """/run of a recipe with export.gguf: the board's export stage goes to done between eval and card, and the
    GGUF repo (`<repo>-GGUF`) is pushed to the embedded Hub beside the model, its link shown after the model's."""
    from huggingface_hub import HfApi

    job = client().submit(gguf_recipe("alice/api-gguf"), ALICE_WRITE, api_name="/run")
    out = wait_for(job, lambda o: "Run finished" in status_of(o) or "Error" in status_of(o), RUN_S, "an end")
    status, board, log, scores, card, url, plots = out
    assert "Run finished" in status, status + log[-2000:]
    states = re.findall(r'data-stage="(\w+)" data-state="([^"]+)"', board)
    assert states == [
        ("plan", "done"),
        ("prune", "done"),
        ("recover", "not in this recipe"),
        ("eval", "not in this recipe"),
        ("export", "done"),
        ("card", "done"),
        ("push", "done"),
    ], board
    assert "[export] start" in log and "[export] done" in log and "agrees with transformers" in log
    gguf = f"{hub_server.url}/alice/api-gguf-GGUF"
    assert f"Pushed to [{hub_server.url}/alice/api-gguf]" in url and f"GGUF files: [{gguf}]({gguf})" in url, (
        url
    )
    files = HfApi(token=ALICE_WRITE).list_repo_files("alice/api-gguf-GGUF")
    assert any(f.endswith("-F16.gguf") for f in files) and "export_report.json" in files, files


def test_a_bad_token_fails_before_any_work_and_leaves_nothing(client, api_runs):
    recipe = demo_recipe(**{"publish.repo_id": "alice/never-pushed"})
    before = {p for p in api_runs.rglob("*")}
    out = client().predict(recipe, "hf_not_a_token_of_this_hub", api_name="/run")
    assert out[0].startswith("**Error:**"), out[0]
    assert "Hub token box" in out[0] and holding("hf_not_a_token", {"status": out[0]}) == [], out[0]
    # positive control: the same search on the same status finds what it does say
    assert holding("Hub token box", {"status": out[0]}) == ["status"]
    assert {p for p in api_runs.rglob("*")} == before


def test_one_run_at_a_time_the_next_caller_waits_and_is_told_its_place(client, api_runs):
    """A's long run goes; B waits "2nd in line" and C "3rd"; A's /cancel ends A's process, B starts;
    C leaves the line with /cancel, B's stream is closed (Job.cancel) and its process ends too."""
    a, b, c = client(), client(), client()
    long = demo_recipe(**{"recover.max_steps": 500, "evaluate": None, "publish": None})
    job_a = a.submit(long, "", api_name="/run")
    wait_for(job_a, lambda o: "[recover] start" in (o[2] or ""), RUN_S, "recovery started")
    pid_a = child_pid(api_runs, long)
    other = demo_recipe(**{"recover.max_steps": 400, "evaluate": None, "publish": None})
    job_b = b.submit(other, "", api_name="/run")
    wait_for(job_b, lambda o: "2nd in line" in status_of(o), 30, "2nd in line")
    job_c = c.submit(other, "", api_name="/run")
    wait_for(job_c, lambda o: "3rd in line" in status_of(o), 30, "3rd in line")
    assert Path(f"/proc/{pid_a}").exists(), "A still runs while B and C wait"

    assert "Cancelling" in a.predict(api_name="/cancel")
    out = wait_for(job_a, lambda o: "Run cancelled" in status_of(o), 60, "Run cancelled")
    assert "Run resumes after them" in out[0]
    assert gone(pid_a), "cancel ended A's process"
    wait_for(job_b, lambda o: status_of(o) == "Running…", 30, "B running")
    wait_for(job_c, lambda o: "2nd in line" in status_of(o), 30, "C moved up to 2nd")
    c.predict(api_name="/cancel")
    wait_for(job_c, lambda o: "before it started" in status_of(o), 30, "C left the line")

    pid_b = child_pid(api_runs, other)
    job_b.cancel()  # gradio_client closes the stream: Gradio closes the generator, which ends the run
    assert gone(pid_b), "a closed stream ended B's process"
    assert "No run is going" in a.predict(api_name="/cancel")


def test_a_cancelled_run_resumes_from_its_last_checkpoint(client, api_runs):
    """Cancel (SIGTERM to the run's process group) after a checkpoint, then run the same recipe again: the
    plan and prune stages are skipped and training resumes from the checkpoint the kill left whole."""
    recipe = demo_recipe(
        **{"recover.max_steps": 24, "recover.sft.save_steps": 8, "evaluate": None, "publish": None}
    )
    c = client()
    job = c.submit(recipe, "", api_name="/run")
    wait_for(job, lambda o: "step 10/24" in (o[2] or ""), RUN_S, "step 10 (after checkpoint-8)")
    pid = child_pid(api_runs, recipe)
    c.predict(api_name="/cancel")
    wait_for(job, lambda o: "Run cancelled" in status_of(o), 60, "Run cancelled")
    assert gone(pid)
    job = c.submit(recipe, "", api_name="/run")
    out = wait_for(job, lambda o: "Run finished" in status_of(o) or "Error" in status_of(o), RUN_S, "an end")
    assert "Run finished" in out[0], out[0]
    assert "[plan] skip" in out[2] and "[prune] skip" in out[2], out[2]
    from app import recipe_from_yaml, run_folder

    name = run_folder(Path("x"), recipe_from_yaml(recipe)).name
    (train,) = api_runs.glob(f"session-*/{name}/reports/recover.json")
    resumed = json.loads(train.read_text()).get("resumed_from")
    assert resumed and resumed.startswith("checkpoint-"), resumed


def test_run_on_jobs_follows_the_job_to_the_pushed_link(client, hub_server):
    """/run_on_jobs: the recipe goes as a Hugging Face Job (the embedded Hub runs its command here); the
    stream shows its stage and its logs as they come, and the pushed model's link at the end."""
    from huggingface_hub import HfApi

    recipe = demo_recipe(
        **{"recover.max_steps": 12, "evaluate": None, "publish.repo_id": "alice/jobs-width30"}
    )
    job = client().submit(recipe, "auto", ALICE_WRITE, api_name="/run_on_jobs")
    running = wait_for(job, lambda o: "data-job-stage" in (o[1] or ""), START_S, "the job's board")
    assert "/jobs/alice/" in running[1] and "cpu-basic" in running[1], running[1]  # auto: the plan's flavour
    wait_for(job, lambda o: "[prune]" in (o[2] or "") or "prune" in (o[2] or ""), RUN_S, "the job's logs")
    out = wait_for(
        job, lambda o: status_of(o).startswith(("**Job finished", "**Error")), RUN_S, "the job's end"
    )
    assert out[0].startswith("**Job finished"), out[0]
    assert 'data-job-stage="COMPLETED"' in out[1]
    assert "alice/jobs-width30" in out[5], out[5]
    assert holding(ALICE_WRITE, {"page": "".join(str(x) for x in out)}) == []
    # positive control: the same search on the same page finds the repo it names
    assert holding("alice/jobs-width30", {"page": "".join(str(x) for x in out)}) == ["page"]
    assert HfApi(token=ALICE_WRITE).repo_exists("alice/jobs-width30")


def test_a_job_of_a_recipe_with_export_sets_up_llama_cpp_and_reaches_the_export(client):
    """/run_on_jobs of a recipe with export.gguf: the Job's command (as the Hub lists it) carries the export section
    and sets up llama.cpp's toolchain before the run, which then reaches its export stage (cancelled there: the
    export and the GGUF push themselves are test_a_run_with_export_shows_the_stage_and_pushes_the_gguf_repo's)."""
    from huggingface_hub import HfApi

    from compressor import jobs

    c = client()
    job = c.submit(gguf_recipe("alice/jobs-gguf"), "cpu-basic", ALICE_WRITE, api_name="/run_on_jobs")
    out = wait_for(
        job, lambda o: "export: start" in (o[2] or "") or "**Error" in status_of(o), RUN_S, "export"
    )
    assert "export: start" in out[2], out[0] + out[2][-2000:]
    assert "converter_home" in out[2]  # the toolchain set-up ran in the Job, before the run
    (job_id,) = set(re.findall(r"/jobs/alice/(\w+)", out[1]))
    command = HfApi(token=ALICE_WRITE).inspect_job(job_id=job_id, namespace="alice").command
    ran = jobs.decode_recipe(next(w for w in command if w.startswith(jobs.RECIPE_PREFIX)))
    assert ran.export.gguf.quants == ("f16",) and ran.publish.repo_id == "alice/jobs-gguf"
    assert jobs.EXPORT_SETUP in command
    assert "Cancelling the job" in c.predict(api_name="/cancel")
    ends = ("**Job cancelled", "**Job finished", "**Error")
    out = wait_for(job, lambda o: status_of(o).startswith(ends), 90, "the job's end")
    assert 'data-job-stage="CANCELED"' in out[1], out[0]


def test_a_job_needs_the_callers_token_and_a_publish_section(client):
    out = client().predict(demo_recipe(), "auto", "", api_name="/run_on_jobs")
    assert out[0].startswith("**Error:**") and "your own token" in out[0], out[0]
    out = client().predict(demo_recipe(publish=None), "auto", ALICE_WRITE, api_name="/run_on_jobs")
    assert out[0].startswith("**Error:**") and "publish" in out[0], out[0]
    out = client().predict(demo_recipe(), "a10g-smal", ALICE_WRITE, api_name="/run_on_jobs")
    assert out[0].startswith("**Error:**") and "a10g-small" in out[0], out[0]


def test_cancel_cancels_the_job(client):
    c = client()
    recipe = demo_recipe(
        **{"recover.max_steps": 500, "evaluate": None, "publish.repo_id": "alice/jobs-cancelled"}
    )
    job = c.submit(recipe, "cpu-basic", ALICE_WRITE, api_name="/run_on_jobs")
    wait_for(job, lambda o: 'data-job-stage="RUNNING"' in (o[1] or ""), START_S, "the job running")
    assert "Cancelling the job" in c.predict(api_name="/cancel")
    out = wait_for(
        job, lambda o: status_of(o).startswith(("**Job cancelled", "**Error", "**Job finished")), 90, "end"
    )
    assert out[0].startswith("**Job cancelled"), out[0]
    assert 'data-job-stage="CANCELED"' in out[1]


def test_the_readme_documents_exactly_the_api(client):
    """README, "The app's API": its table names every public endpoint, and its example calls only them."""
    import re

    text = (REPO / "README.md").read_text()
    section = text[text.index("### The app's API") :]
    section = section[: section.index("\n## ")]
    api = client().view_api(return_format="dict", print_info=False)["named_endpoints"]
    table = set(re.findall(r"^\| `(/\w+)` \|", section, flags=re.M))
    assert table == set(api), (table, set(api))
    assert set(re.findall(r'api_name="(/\w+)"', section)) <= set(api)
    for name, endpoint in api.items():
        params = [p["parameter_name"] for p in endpoint["parameters"]]
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        assert all(f"`{p}`" in row for p in params), (name, params, row)
