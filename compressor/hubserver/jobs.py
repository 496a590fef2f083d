"""The Hugging Face Jobs API, run on this machine: each job's command runs here, in a subprocess with this
Python environment (see `local_argv`); `Jobs` keeps them in DATA/jobs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from .common import HubError, _now, _write_json

JOB_TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
JOB_ID = re.compile(r"[0-9a-f]{24}")
KEEP_ALIVE_SECONDS = 30  # like the Hub: an SSE comment line while a job is silent
CANCEL_GRACE_SECONDS = 10  # SIGTERM, then SIGKILL after this long
# A value of these options of `uv run` is the next word (the rest are flags, or written --option=value).
_UV_RUN_VALUE_OPTIONS = (
    "--with --with-editable --with-requirements --python -p --index --index-url --default-index "
    "--extra-index-url --find-links -f --extra --group --only-group --env-file --directory --project "
    "--package --cache-dir --config-file"
)
UV_RUN_VALUE_OPTIONS = frozenset(_UV_RUN_VALUE_OPTIONS.split())
# Never inherited by a job from the server's own environment: a job sees only the tokens it was given as secrets.
JOB_ENV_DROPPED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")


def job_flavors() -> tuple[str, ...]:
    """The hardware flavours the Hub's Jobs accept: huggingface_hub's own list (`JobHardware`)."""
    from huggingface_hub import JobHardware

    return tuple(h.value for h in JobHardware)


def local_argv(command: list[str]) -> list[str]:
    """How this server runs a job's command on this machine instead of in the job's Docker image.

    The image is ignored: the command runs with this Python environment.
    - `uv run [uv options] SCRIPT ARGS…` (what `run_uv_job` sends) runs `SCRIPT ARGS…`: the dependencies
      (`--with …`) are those already installed here, and `--python` is this interpreter;
    - `python`, `python3` or `python3.X` is `sys.executable`, and a `*.py` script runs with it;
    - a console script installed beside `sys.executable` (e.g. `compressor`) runs from there;
    - anything else runs as given, with `sys.executable`'s folder first on PATH (so a `bash -c "python …"`
      finds this interpreter too).
    """
    argv = list(command)
    if argv[:2] == ["uv", "run"]:
        rest, i = argv[2:], 0
        while i < len(rest) and rest[i].startswith("-"):
            i += 2 if rest[i] in UV_RUN_VALUE_OPTIONS else 1
        argv = rest[i:]
        if argv[:1] == ["--"]:
            argv = argv[1:]
    if not argv:
        raise HubError(400, "The job's command is empty once `uv run` and its options are removed")
    bin_dir = Path(sys.executable).parent
    head = argv[0]
    if re.fullmatch(r"python(3(\.\d+)?)?", head):
        return [sys.executable, *argv[1:]]
    if head.endswith(".py"):
        return [sys.executable, *argv]
    if "/" not in head and (bin_dir / head).is_file():
        return [str(bin_dir / head), *argv[1:]]
    return argv


class Job:
    """One job: its JobInfo as the Hub answers it (never a secret's value), its log events and its process."""

    def __init__(self, info: dict, folder: Path, events: list[dict] | None = None):
        self.info, self.folder = info, folder
        self.events: list[dict] = events or []
        self.changed = threading.Condition()
        self.proc = None  # the subprocess.Popen while it runs
        self.stopping: str | None = None  # "CANCELED" or "ERROR" once the server decided to stop it

    @property
    def done(self) -> bool:
        return self.info["status"]["stage"] in JOB_TERMINAL

    @property
    def pid(self) -> int | None:
        """The job's process id while it runs (its process group has the same id)."""
        return self.proc.pid if self.proc is not None else None

    def answer(self) -> dict:
        """The JobInfo JSON, with durations computed now."""
        info = dict(self.info)
        started, finished = info.get("startedAt"), info.get("finishedAt")
        if started:
            end = datetime.fromisoformat(finished.replace("Z", "+00:00")) if finished else None
            begin = datetime.fromisoformat(started.replace("Z", "+00:00"))
            running = int(((end or datetime.now(timezone.utc)) - begin).total_seconds())
            info["durations"] = {"schedulingSecs": 0, "runningSecs": running, "totalSecs": running}
        return info


class Jobs:
    """The jobs of one server, each run locally in a subprocess (see `local_argv`); kept in DATA/jobs.

    DATA/jobs/<namespace>/<id>/job.json     the JobInfo (secrets by name only)
    DATA/jobs/<namespace>/<id>/logs.jsonl   its log events ({"data": line, "timestamp": …}), one a line
    DATA/jobs/<namespace>/<id>/work/        the job's working directory

    Secrets live only in the environment handed to the job's process: never on disk, in an answer or a log.
    A job that was running when a server stopped is an ERROR when the next server starts on the folder.
    """

    def __init__(self, root: Path, endpoint: str):
        self.root, self.endpoint = root / "jobs", endpoint
        self.lock = threading.Lock()
        self.all: dict[str, Job] = {}
        for path in sorted(self.root.glob("*/*/job.json")):
            job = Job(json.loads(path.read_text()), path.parent, self._read_events(path.parent))
            if not job.done:
                self._finish(job, "ERROR", "the Hub server stopped while the job was running")
            self.all[job.info["id"]] = job

    @staticmethod
    def _read_events(folder: Path) -> list[dict]:
        path = folder / "logs.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        return [json.loads(line) for line in lines if line.strip()]

    def get(self, namespace: str, job_id: str) -> Job:
        job = self.all.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None or job.info["owner"]["name"] != namespace:
            raise HubError(404, f"Job {job_id} not found in {namespace}")
        return job

    def list(self, namespace: str) -> list[Job]:
        with self.lock:
            jobs = [j for j in self.all.values() if j.info["owner"]["name"] == namespace]
        return sorted(jobs, key=lambda j: j.info["createdAt"], reverse=True)

    def create(self, namespace: str, user: str, spec: dict) -> Job:
        """Check a job spec (run_job's JSON), start its command and answer its JobInfo."""
        command, env = spec.get("command"), spec.get("environment") or {}
        secret_env = spec.get("secrets") or {}
        flavor = spec.get("flavor") or "cpu-basic"
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise HubError(400, "command must be a non-empty list of strings")
        for name, mapping in (("environment", env), ("secrets", secret_env)):
            if not isinstance(mapping, dict) or not all(isinstance(k, str) for k in mapping):
                raise HubError(400, f"{name} must be an object of strings")
        if flavor not in job_flavors():
            raise HubError(400, f"Invalid flavor {flavor!r}: must be one of {', '.join(job_flavors())}")
        arguments = spec.get("arguments") or []
        argv = local_argv([*command, *arguments])
        job_id = secrets.token_hex(12)
        owner = {"id": hashlib.sha1(namespace.encode()).hexdigest()[:24], "name": namespace, "type": "user"}
        info = {
            "id": job_id,
            "createdAt": _now(),
            "startedAt": _now(),
            "finishedAt": None,
            "command": command,
            "arguments": arguments,
            "environment": {k: str(v) for k, v in env.items()},
            "secrets": dict.fromkeys(secret_env),  # names only: a secret's value is never kept
            "flavor": flavor,
            "labels": spec.get("labels") or None,
            "timeoutSeconds": spec.get("timeoutSeconds"),
            "status": {"stage": "RUNNING", "message": None},
            "owner": owner,
            "initiator": {"type": "user", "id": owner["id"], "name": user},
        }
        info["spaceId" if spec.get("spaceId") else "dockerImage"] = spec.get("spaceId") or spec.get(
            "dockerImage"
        )
        job = Job(info, self.root / namespace / job_id)
        (job.folder / "work").mkdir(parents=True)
        _write_json(job.folder / "job.json", info)
        with self.lock:
            self.all[job_id] = job
        child_env = self._child_env(env, {k: str(v) for k, v in secret_env.items()}, job_id)
        self._start(job, argv, child_env)
        return job

    def _child_env(self, env: dict, secrets: dict, job_id: str) -> dict[str, str]:
        """This server's environment without its tokens, pointed at this Hub, then the job's env and secrets."""
        out = {k: v for k, v in os.environ.items() if k not in JOB_ENV_DROPPED}
        out["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), out.get("PATH", "")])
        out |= {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_XET": "1", "JOB_ID": job_id}
        return out | {k: str(v) for k, v in env.items()} | secrets

    def _start(self, job: Job, argv: list[str], env: dict[str, str]) -> None:
        import subprocess

        from compressor import warm

        self._log(job, f"===== Job started at {_now()} =====")
        # `python -m compressor …` (what compressor.jobs sends) forks from a process with torch imported already
        popen = warm.Popen if warm.supported(argv) else subprocess.Popen
        try:
            job.proc = popen(
                argv,
                cwd=job.folder / "work",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel stops everything it started
            )
        except OSError as exc:
            self._log(job, f"cannot start {argv[0]!r}: {exc.strerror}")
            self._finish(job, "ERROR", f"cannot start {argv[0]!r}: {exc.strerror}")
            return
        del env  # the secrets now live only in the child's environment
        threading.Thread(target=self._follow, args=(job,), name=f"job-{job.info['id']}", daemon=True).start()
        timeout = job.info.get("timeoutSeconds")
        if timeout:
            timer = threading.Timer(
                float(timeout), self.stop, (job, "ERROR", f"Job timed out after {timeout} s")
            )
            timer.daemon = True
            timer.start()

    def _follow(self, job: Job) -> None:
        """Read the job's output into log events (a line ends at \\n or \\r), then record how it ended."""
        pending = b""
        while chunk := os.read(job.proc.stdout.fileno(), 1 << 16):
            *lines, pending = re.split(rb"\r\n|\r|\n", pending + chunk)
            for line in lines:
                if line.strip():
                    self._log(job, line.decode(errors="replace"))
        if pending.strip():
            self._log(job, pending.decode(errors="replace"))
        code = job.proc.wait()
        job.proc.stdout.close()
        if job.stopping is not None:
            return  # stop() records the stage once the process is gone
        if code == 0:
            self._finish(job, "COMPLETED", None)
        else:
            self._finish(job, "ERROR", f"exit code {code}" if code > 0 else f"killed by signal {-code}")

    def _log(self, job: Job, line: str) -> None:
        event = {"data": line, "timestamp": _now()}
        with job.changed:
            with (job.folder / "logs.jsonl").open("a") as f:
                f.write(json.dumps(event) + "\n")
            job.events.append(event)
            job.changed.notify_all()

    def _finish(self, job: Job, stage: str, message: str | None) -> None:
        with job.changed:
            if job.done:
                return  # the first ending recorded stands
            job.info = {**job.info, "finishedAt": _now(), "status": {"stage": stage, "message": message}}
            _write_json(job.folder / "job.json", job.info)
            job.changed.notify_all()

    def stop(self, job: Job, stage: str = "CANCELED", message: str | None = None) -> None:
        """SIGTERM the job's process group, SIGKILL it after CANCEL_GRACE_SECONDS, then record `stage`."""
        import signal

        with job.changed:
            if job.done or job.stopping is not None:
                return
            job.stopping = stage
        proc = job.proc
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(CANCEL_GRACE_SECONDS)
                    break
                except Exception:  # subprocess.TimeoutExpired: it ignored SIGTERM
                    continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
        self._finish(job, stage, message)

    def stop_all(self) -> None:
        for job in list(self.all.values()):
            if not job.done:
                self.stop(job, "ERROR", "the Hub server stopped")
