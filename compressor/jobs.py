"""Heavy runs on Hugging Face Jobs: submit a recipe as a Job, follow its logs, wait for it, cancel it.

A free CPU Space cannot recover a 7B model; a Job on a GPU flavour can. `submit` sends the whole pipeline
(`python -m compressor run`) as one Job through huggingface_hub's Jobs API (`HfApi.run_job`):

- the recipe travels inside the Job's command as URL-safe base64 YAML (`python -m compressor run
  base64:…`); a recipe never holds a token (it is refused if the token appears anywhere in the Job's spec);
- the token goes in only as the Job secret HF_TOKEN: never in the command, the environment or the labels
  (all of which the Hub lists), and nothing here prints or logs it;
- the Job installs the package with uv (`uv run --with PACKAGE python -m compressor run …` on huggingface_hub's
  uv image, see `package_spec`), or runs an image that already has it (`image=`: plain `python -m compressor
  run …`);
- the run pushes its result as the recipe's `publish:` section says (a Job's disk is gone when it ends, so
  a recipe without one is refused), and prints `pushed: URL`, from which `pushed_url` reads the model's URL.

Against the embedded Hub (`python -m compressor serve-hub`, the tests) the Job's command runs on this machine
in a subprocess with this Python environment (hubserver.local_argv), so the same flow really executes.

Every public function takes the Job (its id, or the `Job` that `submit` returned) and the token; a token of
None means HF_TOKEN, then the saved login (`hf auth login`), so an app serving other people must pass each
visitor's own token, never None. `logs(follow=False)` on a running Job that prints nothing returns after
huggingface_hub's 5 s read timeout; follow a Job with `logs(follow=True)` rather than polling it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from compressor.errors import CompressorError, worded
from compressor.recipe import Recipe, dump_recipe, load_recipe, recipe_from_text

DISTRIBUTION = "mllm-compressor"  # the package's name in pyproject.toml
PACKAGE_ENV = (
    "COMPRESSOR_JOBS_PACKAGE"  # a pip spec the Job installs, e.g. "mllm-compressor @ git+https://…@SHA"
)
IMAGE_ENV = "COMPRESSOR_JOBS_IMAGE"  # a Docker image (or hf.co/spaces/…) that already has the package
RECIPE_PREFIX = "base64:"  # `python -m compressor run base64:…`: the recipe itself, not a path
RUN_DIR = "run"  # the run folder inside the Job, relative to its working directory
PUSHED = re.compile(r"^pushed: (\S+)\s*$")  # the line `python -m compressor run` prints after its push
PUSHED_GGUF = re.compile(r"^pushed GGUF: (\S+)\s*$")  # and after its GGUF repo's push (recipe export.gguf)
RECIPE_KEYS_WITH_PATHS = ("source", "dataset", "image_folder")  # recipe keys that may name a local path
# a recipe with export.gguf: the Job sets up llama.cpp's runner and converter, then runs the command after it
EXPORT_SETUP = 'python -m compressor.export.toolchain >&2 && exec "$@"'


@dataclass(frozen=True)
class Job:
    """A submitted Job: `id`, its `namespace` (owner), its page `url` on the Hub and its hardware `flavor`."""

    id: str
    namespace: str
    url: str
    flavor: str


@dataclass(frozen=True)
class JobState:
    """Where a Job stands: `stage` (RUNNING, COMPLETED, ERROR, CANCELED, …; huggingface_hub's JobStage),
    the Hub's `message` about it (why it failed, if it did), and `done` once it ended either way."""

    id: str
    stage: str
    message: str | None
    url: str
    flavor: str | None
    done: bool


# ---------------------------------------------------------------------------------------------- flavours


def flavors() -> tuple[str, ...]:
    """The hardware flavours Jobs accept, as huggingface_hub lists them (`JobHardware`)."""
    from huggingface_hub import JobHardware

    return tuple(h.value for h in JobHardware)


AUTO = "auto"  # --on-jobs auto: the smallest flavour that fits the plan's memory estimate


def check_flavor(flavor: str) -> str:
    """`flavor` if Jobs know it (or `auto`), else a CompressorError naming the value, `--on-jobs` and the fix."""
    from compressor.registry import closest

    known = flavors()
    if flavor in known or flavor == AUTO:
        return flavor
    raise CompressorError(
        f"--on-jobs is {flavor!r}{closest(str(flavor), known)}: not a Hugging Face Jobs hardware flavour; "
        f"choose one of {', '.join(known)}, or {AUTO} for the smallest that fits the plan's memory estimate "
        "(`hf jobs hardware` lists their memory and price)"
    )


def resolve_flavor(flavor: str, recipe: Recipe, token: str | None = None) -> str:
    """`flavor` checked; `auto` becomes hardware.suggest_flavor of the recipe's plan (config.json only).

    With `recover.mode: auto` the plan chooses the mode for Jobs' hardware, not this machine's: full training when
    the biggest one-GPU flavour holds it (`hardware.jobs_device`), so the flavour is sized for that, and the Job
    chooses full again on it."""
    if check_flavor(flavor) != AUTO:
        return flavor
    from compressor import api
    from compressor.hardware import jobs_device, suggest_flavor

    return suggest_flavor(api.plan(recipe, token=token, device=jobs_device()))


# ---------------------------------------------------------------------------------------------- the command


def encode_recipe(recipe: Recipe) -> str:
    """The recipe as one command-line word: `base64:` + URL-safe base64 of its YAML."""
    return RECIPE_PREFIX + base64.urlsafe_b64encode(dump_recipe(recipe).encode()).decode()


def decode_recipe(word: str) -> Recipe:
    """The recipe `encode_recipe` wrote (what `python -m compressor run base64:…` runs)."""
    try:
        text = base64.urlsafe_b64decode(word.removeprefix(RECIPE_PREFIX).encode()).decode()
    except ValueError as exc:
        raise CompressorError(
            f"RECIPE {word[:40]!r}… is not a base64-encoded recipe ({exc}); give a recipe .yaml file, or "
            "base64: followed by the URL-safe base64 of its YAML"
        ) from None
    return recipe_from_text(text, "from the command line (base64)")


def package_spec(package: str | None = None) -> str:
    """What the Job installs: `package`, else $COMPRESSOR_JOBS_PACKAGE, else this installation of the package
    as pip would name it (a git checkout pinned to its commit, a local folder, or the released version)."""
    from importlib import metadata

    spec = package or os.environ.get(PACKAGE_ENV)
    if spec:
        return spec
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return DISTRIBUTION
    direct = json.loads(dist.read_text("direct_url.json") or "null")
    if direct and "vcs_info" in direct:
        vcs = direct["vcs_info"]
        return f"{DISTRIBUTION} @ {vcs.get('vcs', 'git')}+{direct['url']}@{vcs.get('commit_id', '')}".rstrip(
            "@"
        )
    if direct and direct.get("url"):
        return f"{DISTRIBUTION} @ {direct['url']}"
    return f"{DISTRIBUTION}=={dist.version}"


def job_command(
    recipe: Recipe, image: str | None = None, package: str | None = None
) -> tuple[str, list[str]]:
    """(image, command) of the Job that runs `recipe`.

    With an `image` (or $COMPRESSOR_JOBS_IMAGE) that has the package installed: `python -m compressor run
    base64:… --run-dir run`. Without one: huggingface_hub's uv image and `uv run --with PACKAGE python -m
    compressor run …`, PACKAGE from `package_spec`.

    A recipe with export.gguf first sets up llama.cpp's pinned runner and converter in the Job (`python -m
    compressor.export.toolchain`, what `make export-tools` runs: the Job's disk starts empty), then runs.
    """
    from huggingface_hub._jobs_api import DEFAULT_UV_IMAGE

    run = ["python", "-m", "compressor", "run", encode_recipe(recipe), "--run-dir", RUN_DIR]
    exports = recipe.export is not None and recipe.export.gguf is not None
    if exports:
        run = ["sh", "-c", EXPORT_SETUP, "export-tools", *run]
    image = image or os.environ.get(IMAGE_ENV)
    if image:
        return image, run
    tools: list[str] = []
    if exports:  # the runner wheel, and pip: the toolchain pip-downloads the converter's sources once
        from compressor.export.toolchain import XLLAMACPP

        tools = ["--with", f"xllamacpp=={XLLAMACPP}", "--with", "pip"]
    return DEFAULT_UV_IMAGE, ["uv", "run", "--with", package_spec(package), *tools, *run]


def _loopback(endpoint: str) -> bool:
    return urlsplit(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


DATA_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")


def _local_paths(recipe: Recipe) -> list[str]:
    """'key: value' for each recipe value that names a file or folder on this machine: one that exists here,
    a path (/…, ./…, ../…, ~…), a data file (…json), or any image_folder (always a local folder)."""
    found = []

    def local(key: str, value: str) -> bool:
        name = key.rsplit(".", 1)[-1]
        if name not in RECIPE_KEYS_WITH_PATHS:
            return False
        return (
            name == "image_folder"
            or value.startswith(("/", "./", "../", "~"))
            or value.endswith(DATA_FILE_SUFFIXES)
            or Path(value).expanduser().exists()
        )

    def walk(value, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str) and local(key, value):
            found.append(f"{key}: {value}")

    walk(recipe.model_dump(mode="json"), "")
    return found


def _check_kquants(recipe: Recipe, image: str | None, endpoint: str) -> None:
    """A Job on huggingface_hub's uv image has no llama-quantize, which k-quants need: refused before it is sent
    (the embedded Hub runs the Job here, where the run itself checks for one)."""
    if recipe.export is None or recipe.export.gguf is None or image or _loopback(endpoint):
        return
    from compressor.export.stage import CONVERTER_TYPES, QUANTIZER_TYPES

    kquants = [q for q in recipe.export.gguf.quants if q in QUANTIZER_TYPES]
    if kquants:
        raise CompressorError(
            f"--on-jobs: export.gguf.quants has {', '.join(kquants)}, which needs llama.cpp's llama-quantize, and "
            f"the Job's uv image has none; ask the Job only for {', '.join(CONVERTER_TYPES)} (quantize the f16 file "
            f"afterwards), or set {IMAGE_ENV} (or --jobs-image) to an image with llama-quantize on PATH"
        )


def _check_remote(recipe: Recipe, image: str | None, command: list[str], endpoint: str) -> None:
    """On a real Hub the Job runs elsewhere: it can read neither this machine's folders nor its package."""
    if _loopback(endpoint):
        return  # the embedded Hub runs the Job here
    paths = _local_paths(recipe)
    if paths:
        raise CompressorError(
            "--on-jobs: the recipe names files on this machine, which a Job cannot read: "
            f"{'; '.join(paths)}; upload them to the Hub (`hf upload`) and give their repo ids instead"
        )
    spec = next((command[i + 1] for i, w in enumerate(command[:-1]) if w == "--with"), "")
    if "file:" in spec:
        raise CompressorError(
            f"--on-jobs: the Job would install the package from {spec.split('@', 1)[-1].strip()}, a folder on "
            f"this machine; set {PACKAGE_ENV} (or --jobs-package) to a spec the Job can install, e.g. "
            f"'{DISTRIBUTION} @ git+https://github.com/OWNER/REPO@COMMIT', or {IMAGE_ENV} (or --jobs-image) to "
            "an image that has the package installed"
        )


# ---------------------------------------------------------------------------------------------- the API


def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise worded(
            "Hugging Face Jobs need a Hub token with write access (the Job pushes the model): {ask}",
            ask="token_file",
        )
    return token


def _api():
    from huggingface_hub import HfApi

    return HfApi()


def _job_id(job: Job | str) -> str:
    return job.id if isinstance(job, Job) else str(job)


@contextmanager
def _job_errors(job_id: str | None = None):
    """huggingface_hub's failures as CompressorErrors that say what to do (never naming the token)."""
    from huggingface_hub import constants

    from compressor.hub import _unreachable

    endpoint = constants.ENDPOINT
    try:
        yield
    except CompressorError:
        raise
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        server = getattr(exc, "server_message", None) or ""
        what = f"job {job_id}" if job_id else "Jobs"
        if _unreachable(exc):
            message = f"cannot reach the Hub at {endpoint}: check your network, or set HF_ENDPOINT to a Hub that is up"
        elif status == 401:
            message = worded(
                f"the Hub at {endpoint} rejected the token (401): create a write token at {endpoint}/settings/"
                "tokens and {ask}",
                ask="pass_it_file",
            )
        elif status == 402:
            message = (
                f"Jobs on {endpoint} need a paid plan or credits (402): see {endpoint}/pricing, or run without "
                "--on-jobs"
            )
        elif status == 403:
            message = f"your token may not use {what} of that namespace (403): use a write token of its owner"
        elif status == 404 and job_id:
            message = (
                f"job {job_id!r} was not found on {endpoint}: check the id (it is printed when the job is "
                "submitted) and the namespace (--namespace)"
            )
        elif status:
            message = f"the Hub answered {status} for {what}: {server or exc}"
        else:
            raise
        raise (message if isinstance(message, CompressorError) else CompressorError(message)) from exc


def submit(
    recipe: Recipe | str | Path,
    flavor: str,
    token: str | None = None,
    *,
    namespace: str | None = None,
    image: str | None = None,
    package: str | None = None,
    timeout: str | int | None = None,
    labels: dict[str, str] | None = None,
) -> Job:
    """Submit `recipe` (a Recipe, or the path of a recipe .yaml) as a Hugging Face Job on `flavor` hardware.

    The Job runs `python -m compressor run` on the recipe (see `job_command`; `image`/`package` override
    how it gets the package) and pushes the result to the recipe's `publish.repo_id`. `token` is the user's
    Hub token (None: HF_TOKEN, then the saved login); it reaches the Job only as the secret HF_TOKEN.
    `namespace`: whose Job it is (default: the token's user). `timeout`: the Job's longest run, e.g. "6h".
    `flavor` may be `auto`: the smallest flavour that fits the plan's memory estimate (`resolve_flavor`).
    Returns the Job (`.id`, `.url`, `.flavor`); raises CompressorError for a bad flavour, a recipe without
    `publish:`, or a recipe the Job cannot run (files on this machine) before anything is sent.
    """
    from huggingface_hub import constants

    check_flavor(flavor)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if recipe.publish is None:
        raise CompressorError(
            "--on-jobs: the recipe has no publish: section, and a Job's disk is gone when it ends; add "
            "publish:\n  repo_id: YOU/NAME\nso the Job pushes the compressed model there"
        )
    if timeout is not None and not re.fullmatch(r"\d+(\.\d+)?[smhd]?", str(timeout)):
        raise CompressorError(
            f"--jobs-timeout is {timeout!r}: give a number of seconds, or a number followed by s, m, h or d "
            "(e.g. 90m, 6h)"
        )
    _check_kquants(recipe, image or os.environ.get(IMAGE_ENV), constants.ENDPOINT)
    token = _token(token)
    flavor = resolve_flavor(flavor, recipe, token)
    image, command = job_command(recipe, image=image, package=package)
    _check_remote(recipe, image, command, constants.ENDPOINT)
    env = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1"}
    labels = {"app": "compressor", **(labels or {})}
    if any(token in word for word in [image, *command, *env.values(), *labels.values()]):
        raise CompressorError(
            "--on-jobs: the Hub token appears in the recipe or the Job's settings, which the Hub lists for "
            "anyone who can see the Job; remove it (the token goes in only as the Job's HF_TOKEN secret)"
        )
    api = _api()
    with _job_errors():
        namespace = namespace or api.whoami(token=token)["name"]
        info = api.run_job(
            image=image,
            command=command,
            env=env,
            secrets={"HF_TOKEN": token},
            flavor=flavor,
            timeout=timeout,
            labels=labels,
            name=re.sub(r"[^A-Za-z0-9_-]", "-", f"compressor-{recipe.publish.repo_id.split('/')[-1]}")[:60],
            namespace=namespace,
            token=token,
        )
    return Job(id=info.id, namespace=namespace, url=info.url, flavor=str(info.flavor or flavor))


def _namespace(job: Job | str, namespace: str | None, token: str) -> str:
    if namespace:
        return namespace
    if isinstance(job, Job):
        return job.namespace
    with _job_errors():
        return _api().whoami(token=token)["name"]


def status(job: Job | str, token: str | None = None, *, namespace: str | None = None) -> JobState:
    """Where the Job stands now (one `inspect_job` call): its stage, the Hub's message, whether it ended."""
    from huggingface_hub._jobs_api import TERMINAL_JOB_STAGES

    token, job_id = _token(token), _job_id(job)
    namespace = _namespace(job, namespace, token)
    with _job_errors(job_id):
        info = _api().inspect_job(job_id=job_id, namespace=namespace, token=token)
    stage = str(getattr(info.status.stage, "value", info.status.stage))
    return JobState(
        id=info.id,
        stage=stage,
        message=info.status.message,
        url=info.url,
        flavor=str(info.flavor) if info.flavor else None,
        done=stage in {str(s.value) for s in TERMINAL_JOB_STAGES},
    )


def logs(
    job: Job | str, token: str | None = None, *, follow: bool = True, namespace: str | None = None
) -> Iterator[str]:
    """The Job's log lines. `follow`: each line as it comes, until the Job ends; else the lines so far.

    A line `pushed: URL` near the end is the pushed model's URL (see `pushed_url` and `PUSHED`).
    """
    token, job_id = _token(token), _job_id(job)
    namespace = _namespace(job, namespace, token)
    with _job_errors(job_id):
        yield from _api().fetch_job_logs(job_id=job_id, namespace=namespace, follow=follow, token=token)


def cancel(job: Job | str, token: str | None = None, *, namespace: str | None = None) -> JobState:
    """Cancel the Job (its process stops; nothing is pushed unless the push had already happened), and
    return its state after the cancel."""
    token, job_id = _token(token), _job_id(job)
    namespace = _namespace(job, namespace, token)
    with _job_errors(job_id):
        _api().cancel_job(job_id=job_id, namespace=namespace, token=token)
    return status(job_id, token, namespace=namespace)


def wait(
    job: Job | str,
    token: str | None = None,
    *,
    timeout: float | None = None,
    poll_interval: float = 2.0,
    namespace: str | None = None,
) -> JobState:
    """Block until the Job ends (COMPLETED, ERROR, CANCELED or DELETED) and return its final state;
    TimeoutError after `timeout` seconds (None: no limit). It does not raise for a failed Job: check `.stage`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = status(job, token, namespace=namespace)
        if state.done:
            return state
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {state.id} is still {state.stage} after {timeout} s")
        time.sleep(poll_interval)


def pushed_url(job: Job | str, token: str | None = None, *, namespace: str | None = None) -> str | None:
    """The URL of the model the Job pushed, read from the last `pushed: URL` line of its logs (None before
    the push, or if it never pushed). The repo is the recipe's `publish.repo_id`."""
    found = None
    for line in logs(job, token, follow=False, namespace=namespace):
        if match := PUSHED.match(line):
            found = match.group(1)
    return found


@dataclass
class Followed:
    """What following a Job has seen: the log lines that came since the last look, its latest state (None
    before the first poll), the pushed repos' URLs its logs named, and `ended` on the last look."""

    lines: list[str]
    state: JobState | None = None
    pushed: str | None = None
    pushed_gguf: str | None = None
    ended: bool = False


def follow(
    job: Job | str,
    token: str | None = None,
    *,
    namespace: str | None = None,
    poll_s: float = 2.0,
    beat_s: float = 0.5,
) -> Iterator[Followed]:
    """Follow a Job to its end (the one follower of the CLI's `--follow` and the app's Jobs view): its log lines
    as they come (read by a thread of their own), its state polled every `poll_s` seconds, the pushed model's
    URLs read off the logs (or, for a completed Job whose lines did not say, from its whole log).

    Yields at least every `beat_s` seconds (with or without new lines: a heartbeat a page can use), and a last
    time with `ended` once the Job is done and its logs are closed, or 1.5 s after a poll saw it done. A failed
    log stream ends with a line that says so; a state that cannot be read raises CompressorError."""
    incoming: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for line in logs(job, token, follow=True, namespace=namespace):
                incoming.put(line)
        except Exception as err:  # the status poll still sees the Job end; the reader says the logs stopped
            incoming.put(f"(the logs stopped: {err})")
        incoming.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen, polled, logs_open = Followed([]), 0.0, True
    while True:
        seen.lines = []
        with contextlib.suppress(queue.Empty):
            line = incoming.get(timeout=beat_s)
            while True:
                if line is None:
                    logs_open = False
                else:
                    seen.lines.append(line.rstrip("\n"))
                    if match := PUSHED.match(line.strip()):
                        seen.pushed = match.group(1)
                    elif match := PUSHED_GGUF.match(line.strip()):
                        seen.pushed_gguf = match.group(1)
                line = incoming.get_nowait()
        done = seen.state is not None and seen.state.done
        if time.monotonic() - polled > poll_s or (done and not logs_open):
            polled = time.monotonic()
            seen.state = status(job, token, namespace=namespace)
        if seen.state.done and (not logs_open or time.monotonic() - polled > 1.5):
            if seen.state.stage == "COMPLETED" and seen.pushed is None:
                with contextlib.suppress(CompressorError):
                    seen.pushed = pushed_url(job, token, namespace=namespace)
            seen.ended = True
            yield seen
            return
        yield seen
