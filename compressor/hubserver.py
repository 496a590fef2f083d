"""An embedded, Hugging Face Hub-compatible HTTP server (standard library, plus PyYAML for card metadata and
huggingface_hub for the list of Jobs hardware flavours).

It answers what the genuine `huggingface_hub` client and `transformers.from_pretrained` call when
`HF_ENDPOINT` points here and `HF_HUB_DISABLE_XET=1`: whoami, repo create/delete/settings, repo info at a
revision, tree and paths-info listings, refs and commits, card validation, preupload, the Git LFS batch API
(basic transfer), NDJSON commits and `/resolve` downloads with ranges. Models, datasets and spaces alike.
And the Jobs API (`run_job`, `run_uv_job`, `inspect_job`, `list_jobs`, `fetch_job_logs`, `cancel_job`,
`wait_for_job`): each job's command runs here, in a subprocess with this Python environment (see `local_argv`),
so a submitted run really executes; its secrets reach only that subprocess's environment.

Data lives in one folder, so a server can be stopped and started again on it:

    DATA/blobs/<sha256>                                   every file's bytes, addressed by content
    DATA/repos/<models|datasets|spaces>/<ns>/<name>/repo.json      owner, visibility, gating, refs
    DATA/repos/<models|datasets|spaces>/<ns>/<name>/commits/<sha>.json   parents, message, files
    DATA/jobs/<ns>/<id>/job.json, logs.jsonl, work/                        a job (see Jobs)

A commit is visible only once `repo.json` has been atomically replaced to point at it: a rejected or
interrupted commit leaves nothing behind. Tokens are given at start-up and never logged.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import hashlib
import json
import logging
import mimetypes
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

log = logging.getLogger("compressor.hubserver")

KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores anything this large (or binary) in LFS
TICKET_SECONDS = 3600
LFS_PATTERNS = (  # noqa: SIM905 (word lists read better as text)
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz "
    "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar "
    "*.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
LICENSES = (  # noqa: SIM905
    "apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 "
    "bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc "
    "cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 "
    "cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 "
    "cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 "
    "eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c "
    "ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib "
    "pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 "
    "llama3.3 llama4 gemma unknown other"
).split()
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
NO_METADATA = "empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards#model-card-metadata)"
YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
SHORT_SHA = re.compile(r"[0-9a-f]{7,40}")
SHA256 = re.compile(r"[0-9a-f]{64}")


class HubError(Exception):
    """An error answered the way the Hub does: a status, a JSON body and `X-Error-*` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers: dict[str, str] = extra.pop("headers", {})
        self.body: dict = {"error": message, **extra}


# --- small helpers ----------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, obj: dict) -> None:
    """Write atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _flag(query: dict, name: str) -> bool:
    return (query.get(name) or ["false"])[-1].lower() in ("1", "true", "yes")


def _matches(path: str, patterns: list[str]) -> bool:
    """gitattributes/gitignore-style match: a pattern without '/' matches the file name at any depth."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path if "/" in p else name, p.lstrip("/")) for p in patterns)


def _gitattributes_lfs(text: str) -> list[str]:
    return [
        line.split()[0] for line in text.splitlines() if "filter=lfs" in line and not line.startswith("#")
    ]


def _gitignore(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith(("#", "!"))]


def _valid_repo_id(repo_id: str) -> bool:
    """namespace/name, each a plain name: never '..' or a path (ids come from URLs and land on disk)."""
    parts = repo_id.split("/")
    return len(parts) == 2 and all(REPO_NAME.fullmatch(p) and ".." not in p for p in parts)


def _check_path(path: object) -> str:
    ok = isinstance(path, str) and path and not path.startswith("/") and ".." not in path.split("/")
    if not ok or path.startswith(".git/") or "//" in path:
        raise HubError(400, f"Invalid path in commit: {path!r}")
    return path


def _byte_range(header: str | None, size: int) -> tuple[int, int, int]:
    """(start, end inclusive, status) for a single `Range: bytes=…` header; 416 when unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if match is None or match.groups() == ("", ""):
        return 0, size - 1, 200
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end, 206


# --- model card validation (POST /api/validate-yaml) -----------------------------------------------------


BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def validate_card(content: str, repo_type: str = "model") -> tuple[list[str], list[str]]:
    """(errors, warnings) for a card's YAML front matter, in the Hub's words where we know them."""
    import yaml

    match = YAML_BLOCK.search(content)
    if match is None:
        return [], [NO_METADATA]
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in the metadata block: {exc}".replace("\n", " ")], []
    if data is None:
        return [], [NO_METADATA]
    if not isinstance(data, dict):
        return ['"value" must be of type object'], []
    return _card_errors(data, repo_type), []


def _card_errors(data: dict, repo_type: str) -> list[str]:
    errors = []
    for key in ("license", "tags", "datasets", "language", "metrics", "base_model", "pipeline_tag"):
        if key in data and not _str_or_strs(data[key]):
            errors.append(f'"{key}" must be a string or an array of strings')
    licenses = data.get("license")
    licenses = [licenses] if isinstance(licenses, str) else licenses if isinstance(licenses, list) else []
    if any(isinstance(value, str) and value not in LICENSES for value in licenses):
        errors.append(f'"license" must be one of [{", ".join(LICENSES)}]')
    if "base_model_relation" in data and data["base_model_relation"] not in BASE_MODEL_RELATIONS:
        errors.append(f'"base_model_relation" must be one of [{", ".join(BASE_MODEL_RELATIONS)}]')
    if "library_name" in data and not isinstance(data["library_name"], str):
        errors.append('"library_name" must be a string')
    if "model-index" in data:
        errors += _model_index_errors(data["model-index"])
    if repo_type == "space":
        if data.get("sdk") is not None and data["sdk"] not in SPACE_SDKS:
            errors.append(f'"sdk" must be one of [{", ".join(SPACE_SDKS)}]')
        for key in ("colorFrom", "colorTo"):
            if key in data and data[key] not in SPACE_COLORS:
                errors.append(f'"{key}" must be one of [{", ".join(SPACE_COLORS)}]')
    return errors


def _str_or_strs(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _model_index_errors(index: object) -> list[str]:
    if not isinstance(index, list):
        return ['"model-index" must be an array']
    errors = []
    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"{where}.name" is required')
            continue
        for j, result in enumerate(model.get("results") or []):
            at = f"{where}.results[{j}]"
            task, dataset = (result or {}).get("task"), (result or {}).get("dataset")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{at}.task.type" is required')
            for key in ("type", "name"):
                if not isinstance(dataset, dict) or not isinstance(dataset.get(key), str):
                    errors.append(f'"{at}.dataset.{key}" is required')
            metrics = (result or {}).get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{at}.metrics" must contain at least 1 items')
            for k, metric in enumerate(metrics if isinstance(metrics, list) else []):
                if (
                    not isinstance(metric, dict)
                    or not isinstance(metric.get("type"), str)
                    or "value" not in metric
                ):
                    errors.append(f'"{at}.metrics[{k}]" must have a "type" and a "value"')
    return errors


# --- storage ----------------------------------------------------------------------------------------------


class Store:
    """Repos, commits and content-addressed blobs in one folder; one lock serialises every write."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    def repo_dir(self, kind: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{kind}s" / repo_id

    def repo(self, kind: str, repo_id: str) -> dict | None:
        return _read_json(self.repo_dir(kind, repo_id) / "repo.json")

    def commit(self, kind: str, repo_id: str, sha: str) -> dict | None:
        return _read_json(self.repo_dir(kind, repo_id) / "commits" / f"{sha}.json")

    def resolve(self, kind: str, repo_id: str, rev: str) -> dict | None:
        """The commit a branch, a PR ref or a (short) commit sha points at."""
        refs = self.repo(kind, repo_id)["refs"]
        sha = refs.get(rev.removeprefix("refs/heads/"))
        if sha is None and SHORT_SHA.fullmatch(rev):
            found = list((self.repo_dir(kind, repo_id) / "commits").glob(f"{rev}*.json"))
            sha = found[0].stem if len(found) == 1 else None
        return self.commit(kind, repo_id, sha) if sha else None

    def history(self, kind: str, repo_id: str, commit: dict) -> Iterator[dict]:
        while commit is not None:
            yield commit
            parents = commit["parents"]
            commit = self.commit(kind, repo_id, parents[0]) if parents else None

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.blob(sha256).is_file():
            fd, tmp = tempfile.mkstemp(dir=self.root / "blobs", prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.blob(sha256))
        return sha256

    def file_entry(self, data: bytes, lfs: bool) -> dict:
        sha256 = self.put_blob(data)
        oid = _git_oid(_lfs_pointer(sha256, len(data)) if lfs else data)
        return {"oid": oid, "sha256": sha256, "size": len(data), "lfs": lfs}

    def create(self, kind: str, repo_id: str, owner: str, private: bool) -> bool:
        """Create a repo whose first commit holds the Hub's default .gitattributes; False if it exists."""
        with self.lock:
            if self.repo(kind, repo_id) is not None:
                return False
            files = {".gitattributes": self.file_entry(GITATTRIBUTES.encode(), lfs=False)}
            sha = self.save_commit(kind, repo_id, [], files, "initial commit", "", owner)
            meta = {
                "owner": owner,
                "private": private,
                "gated": False,
                "createdAt": _now(),
                "refs": {"main": sha},
            }
            _write_json(self.repo_dir(kind, repo_id) / "repo.json", meta)
            return True

    def delete(self, kind: str, repo_id: str) -> None:
        with self.lock:
            trash = self.root / "trash" / f"{repo_id.replace('/', '--')}-{time.time_ns()}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.repo_dir(kind, repo_id), trash)  # atomic: the repo is gone at once
            shutil.rmtree(trash, ignore_errors=True)

    def save_commit(
        self, kind: str, repo_id: str, parents: list, files: dict, title: str, message: str, author: str
    ):
        body = {"parents": parents, "files": files, "title": title, "message": message, "author": author}
        body["date"] = _now()
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        _write_json(self.repo_dir(kind, repo_id) / "commits" / f"{sha}.json", {"id": sha, **body})
        return sha

    def update(self, kind: str, repo_id: str, refs: dict | None = None, **settings) -> None:
        with self.lock:
            meta = self.repo(kind, repo_id)
            meta["refs"].update(refs or {})
            meta.update(settings)
            _write_json(self.repo_dir(kind, repo_id) / "repo.json", meta)


# --- listings ---------------------------------------------------------------------------------------------


def _file_json(path: str, entry: dict) -> dict:
    out = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
    return out


def _dir_json(path: str, files: dict) -> dict:
    inside = sorted((p, f["oid"]) for p, f in files.items() if p.startswith(path + "/"))
    return {
        "type": "directory",
        "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(),
        "size": 0,
        "path": path,
    }


def _path_json(path: str, files: dict) -> dict | None:
    if path in files:
        return _file_json(path, files[path])
    if any(p.startswith(path + "/") for p in files):
        return _dir_json(path, files)
    return None


def _tree(files: dict, folder: str, recursive: bool) -> list[dict]:
    """Entries under `folder` ('' for the root): direct children, or everything when recursive."""
    root = f"{folder}/" if folder else ""
    inside = sorted(p for p in files if p.startswith(root))
    if folder and not inside:
        raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
    dirs, out = set(), []
    for path in inside:
        parts = path[len(root) :].split("/")
        depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
        dirs.update(root + "/".join(parts[: i + 1]) for i in range(depth))
        if recursive or len(parts) == 1:
            out.append(_file_json(path, files[path]))
    return [_dir_json(d, files) for d in sorted(dirs)] + out


def _card_data(store: Store, readme: dict | None) -> dict | None:
    if readme is None or readme["size"] > 1_000_000:
        return None
    import yaml

    match = YAML_BLOCK.search(store.blob(readme["sha256"]).read_text(errors="replace"))
    try:
        data = yaml.safe_load(match.group(2)) if match else None
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _config_summary(store: Store, config: dict | None) -> dict | None:
    if config is None or config["size"] > 10_000_000:
        return None
    try:
        data = json.loads(store.blob(config["sha256"]).read_bytes())
    except ValueError:
        return None
    return (
        {k: data[k] for k in ("architectures", "model_type") if k in data} if isinstance(data, dict) else None
    )


# --- jobs (the Hugging Face Jobs API, run on this machine) -------------------------------------------------

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


# --- HTTP -------------------------------------------------------------------------------------------------

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<kinds>models|datasets|spaces)/" + _REPO
_GIT = r"/(?:(?P<kinds>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+?)\.git/info/lfs/objects/"
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "info"),
    ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("GET", _API + r"/refs", "refs"),
    ("GET", _API + r"/commits/(?P<rev>[^/]+)", "commits"),
    ("PUT", _API + r"/settings", "settings"),
    ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", _GIT + "batch", "lfs_batch"),
    ("POST", _GIT + "verify", "lfs_verify"),
    ("PUT", r"/api/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("GET", r"/api/jobs/(?P<namespace>[^/]+)", "jobs_list"),
    ("POST", r"/api/jobs/(?P<namespace>[^/]+)", "job_create"),
    ("GET", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)", "job_info"),
    ("GET", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)/logs", "job_logs"),
    ("POST", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)/cancel", "job_cancel"),
    (
        "GET HEAD",
        r"/(?:(?P<kinds>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
        "resolve",
    ),
    (
        "GET HEAD POST PUT",
        r"/api/(?:models|datasets|spaces)/[^/]+(?:/(?:revision|tree|paths-info|refs|commits|settings|preupload|commit)(?:/.*)?)?",
        "no_repo",
    ),
    ("GET HEAD", r"/[^/]+/resolve/.*", "no_repo"),
]
_COMPILED = [(methods.split(), re.compile(pattern), name) for methods, pattern, name in ROUTES]


def _route(method: str, path: str) -> tuple[str, dict]:
    for methods, pattern, name in _COMPILED:
        match = pattern.fullmatch(path)
        if match and method in methods:
            return name, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
    raise HubError(404, f"Not found: {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    """One request: route it, authenticate it, answer it (or answer the HubError it raised)."""

    protocol_version = "HTTP/1.1"
    server_version = "compressor-hub/1"
    server: HubServer

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body, self.user = b"", None
        self._unread, self._answered = True, False
        fault = self.server.faults.take(self.command, url.path)
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        try:
            if fault is not None and fault.kind == "status":
                raise HubError(fault.status, f"Injected fault: {fault.status} on request {fault.hits_at[-1]}")
            name, params = _route(self.command, url.path)
            if name != "lfs_upload":
                self.body = b"".join(self._body_chunks())
            self.user = self._authenticate()
            getattr(self, f"h_{name}")(**params)
        except HubError as err:
            self._fail(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-answer
        except Exception:
            log.exception("hub server error on %s %s", self.command, url.path)
            if self._answered:  # too late for an error status: drop the connection instead
                self.close_connection = True
            else:
                self._fail(HubError(500, "Internal server error"))

    # -- request and response plumbing

    def _drop(self) -> None:
        """Read half of the request body (mid-upload), then close the socket without an answer."""
        import socket

        left = int(self.headers.get("Content-Length") or 0) // 2
        while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
            left -= len(chunk)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, Content-Length or chunked, in pieces (an LFS upload may be large)."""
        self._unread = False
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                raise HubError(400, "Request body ended early")
            left -= len(chunk)
            yield chunk

    def _json_body(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from exc
        if not isinstance(data, dict):
            raise HubError(400, "The JSON body must be an object")
        return data

    def _send(self, status: int, body: bytes, headers: dict | None = None, length: int | None = None) -> None:
        if self._unread:  # we answer before reading the body: the connection can't be reused
            self.close_connection = True
        self._answered = True
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers["Content-Length"] = str(len(body) if length is None else length)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if self.server.transcript is not None:
            self.server.transcript.append((self.command, urlsplit(self.path).path, status, bytes(body)))

    def _json(self, obj: object, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _fail(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.encode("latin-1", "replace").decode("latin-1")[:500]}
        headers.update(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.body, err.status, headers)

    def log_request(self, code: object = "-", size: object = "-") -> None:
        log.info("%s %s %s", self.command, urlsplit(self.path).path, code)  # no query string, no headers

    def log_message(self, format: str, *args: object) -> None:
        log.debug("hub server: " + format, *args)

    @property
    def base(self) -> str:
        return f"http://{self.headers.get('Host') or urlsplit(self.server.url).netloc}"

    def _repo_url(self, kind: str, repo_id: str) -> str:
        return f"{self.base}/{URL_PREFIX[kind]}{repo_id}"

    # -- authentication and permissions

    def _authenticate(self) -> dict | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        user = self.server.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _owns(self, namespace: str) -> bool:
        return self.user is not None and namespace in (self.user["user"], *self.user.get("orgs", ()))

    def _check_write(self, namespace: str, what: str) -> None:
        if self.user is None:
            raise HubError(401, f"You must be authenticated to write to {what}")
        if self.user["role"] != "write":
            raise HubError(403, f"You don't have the rights to write to {what}: this token is read-only")
        if not self._owns(namespace):
            raise HubError(403, f"You don't have the rights to write to {what}")

    def _repo(self, kinds: str, repo_id: str, write: bool = False) -> tuple[str, dict]:
        kind = KINDS[kinds or "models"]
        meta = self.server.store.repo(kind, repo_id) if _valid_repo_id(repo_id) else None
        if meta is None or (meta["private"] and not self._owns(repo_id.split("/")[0])):
            if self.user is None:
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write:
            self._check_write(repo_id.split("/")[0], f"{kind} {repo_id}")
        return kind, meta

    def _check_gate(self, kind: str, repo_id: str, meta: dict) -> None:
        if not meta.get("gated") or self._owns(repo_id.split("/")[0]):
            return
        message = (
            f"Access to {kind} {repo_id} is restricted. You must have access to it and be authenticated."
        )
        raise HubError(401 if self.user is None else 403, message, "GatedRepo")

    def _commit(self, kind: str, repo_id: str, rev: str) -> dict:
        commit = self.server.store.resolve(kind, repo_id, rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # -- account and repos

    def h_whoami(self) -> None:
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        name, role = self.user["user"], self.user["role"]
        orgs = [
            {"type": "org", "name": org, "fullname": org, "roleInOrg": "write"}
            for org in self.user.get("orgs", ())
        ]
        token_info = {"displayName": f"{name}-{role}", "role": role, "createdAt": "2024-01-01T00:00:00.000Z"}
        self._json(
            {
                "type": "user",
                "id": hashlib.sha1(name.encode()).hexdigest()[:24],
                "name": name,
                "fullname": self.user.get("fullname", name),
                "email": None,
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": f"{self.base}/avatars/{name}.svg",
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": token_info},
            }
        )

    def h_create_repo(self) -> None:
        req = self._json_body()
        kind = req.get("type") or "model"
        if kind not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {kind!r}")
        if self.user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace, name = req.get("organization") or self.user["user"], req.get("name") or ""
        self._check_write(namespace, f'the namespace "{namespace}"')
        repo_id = f"{namespace}/{name}"
        if not _valid_repo_id(repo_id) or "--" in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name {name!r}: use letters, digits, '-', '_' and '.' (max 96)")
        private = req["visibility"] != "public" if "visibility" in req else bool(req.get("private"))
        url = self._repo_url(kind, repo_id)
        if not self.server.store.create(kind, repo_id, self.user["user"], private):
            raise HubError(409, f"You already created this {kind} repo", url=url)
        self._json({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def h_delete_repo(self) -> None:
        req = self._json_body()
        if (req.get("type") or "model") not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {req.get('type')!r}")
        repo_id = f"{req.get('organization') or (self.user or {}).get('user', '')}/{req.get('name')}"
        kind, _ = self._repo(f"{req.get('type') or 'model'}s", repo_id, write=True)
        self.server.store.delete(kind, repo_id)
        self._json({})

    def h_settings(self, kinds: str, repo: str) -> None:
        kind, meta = self._repo(kinds, repo, write=True)
        req, changes = self._json_body(), {}
        if "gated" in req:
            if req["gated"] not in ("auto", "manual", False):
                raise HubError(400, "gated must be 'auto', 'manual' or false")
            changes["gated"] = req["gated"]
        if "visibility" in req or "private" in req:
            changes["private"] = (
                req["visibility"] != "public" if "visibility" in req else bool(req["private"])
            )
        self.server.store.update(kind, repo, **changes)
        self._json({})

    def h_no_repo(self) -> None:
        raise HubError(401 if self.user is None else 404, "Repository not found", "RepoNotFound")

    def h_validate_yaml(self) -> None:
        req = self._json_body()
        errors, warnings = validate_card(str(req.get("content") or ""), req.get("repoType") or "model")
        status = 400 if errors else 200
        if "text/plain" in self.headers.get("Accept", ""):
            lines = [f"- Error: {e}" for e in errors] + [f"- Warning: {w}" for w in warnings]
            self._send(status, "\n".join(lines).encode(), {"Content-Type": "text/plain; charset=utf-8"})
            return
        self._json(
            {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]},
            status,
        )

    # -- jobs (see Jobs and local_argv)

    def _job_namespace(self, namespace: str, write: bool = False) -> None:
        if self.user is None:
            raise HubError(401, "You must be authenticated to use Jobs")
        if write:
            self._check_write(namespace, f"the jobs of {namespace}")
        elif not self._owns(namespace):
            raise HubError(403, f"You don't have the rights to see the jobs of {namespace}")

    def h_job_create(self, namespace: str) -> None:
        self._job_namespace(namespace, write=True)
        job = self.server.jobs.create(namespace, self.user["user"], self._json_body())
        self._json(job.answer())

    def h_jobs_list(self, namespace: str) -> None:
        self._job_namespace(namespace)
        stages = set(self.query.get("stage") or [])
        labels = [label.partition("=") for label in self.query.get("label") or []]
        jobs = [
            job.answer()
            for job in self.server.jobs.list(namespace)
            if (not stages or job.info["status"]["stage"] in stages)
            and all((job.info.get("labels") or {}).get(k) == v for k, _, v in labels)
        ]
        self._json(jobs)

    def h_job_info(self, namespace: str, job_id: str) -> None:
        self._job_namespace(namespace)
        self._json(self.server.jobs.get(namespace, job_id).answer())

    def h_job_cancel(self, namespace: str, job_id: str) -> None:
        self._job_namespace(namespace, write=True)
        self.server.jobs.stop(self.server.jobs.get(namespace, job_id), "CANCELED")
        self._json({})

    def h_job_logs(self, namespace: str, job_id: str) -> None:
        """Server-sent events, one `data: {"data": line, "timestamp": …}` per line: the lines so far (the last
        `tail` of them if given), then each new one as it comes, until the job ends; a keep-alive comment while
        it is silent. The answer has no length: it ends when the connection closes."""
        self._job_namespace(namespace)
        job = self.server.jobs.get(namespace, job_id)
        tail = (self.query.get("tail") or [""])[-1]
        if tail and not tail.isdigit():
            raise HubError(400, f"Invalid tail: {tail!r}")
        self.close_connection, self._answered = True, True
        self.send_response(200)
        for key, value in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")):
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        sent = b""
        with job.changed:
            i = max(len(job.events) - int(tail), 0) if tail else 0
        while True:
            with job.changed:
                if i >= len(job.events) and not job.done:
                    job.changed.wait(KEEP_ALIVE_SECONDS)
                batch, done = job.events[i:], job.done
            i += len(batch)
            chunk = (
                b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in batch) or b": keep-alive\n\n"
            )
            if done and not batch:
                break
            self.wfile.write(chunk)
            self.wfile.flush()
            sent += chunk
        if self.server.transcript is not None:
            self.server.transcript.append((self.command, urlsplit(self.path).path, 200, sent))

    # -- reading

    def h_info(self, kinds: str, repo: str, rev: str = "main") -> None:
        kind, meta = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        files, store = commit["files"], self.server.store
        blobs = _flag(self.query, "blobs")
        info = {
            "_id": hashlib.sha1(f"{kind}/{repo}".encode()).hexdigest()[:24],
            "id": repo,
            "author": repo.split("/")[0],
            "sha": commit["id"],
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": meta["private"],
            "gated": meta.get("gated", False),
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [self._sibling(p, files[p], blobs) for p in sorted(files)],
            "usedStorage": sum(f["size"] for f in files.values()),
        }
        card = _card_data(store, files.get("README.md"))
        if card is not None:
            tags = card.get("tags") or []
            info["cardData"], info["tags"] = card, [tags] if isinstance(tags, str) else tags
            info.update(
                {k: card[k] for k in ("library_name", "pipeline_tag") if isinstance(card.get(k), str)}
            )
        if kind == "model" and (config := _config_summary(store, files.get("config.json"))) is not None:
            info["config"] = config
        expand = self.query.get("expand") or self.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in expand or k in ("_id", "id")}
        self._json(info)

    @staticmethod
    def _sibling(path: str, entry: dict, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": path}
        out = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
        if entry["lfs"]:
            pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
            out["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
        return out

    def h_tree(self, kinds: str, repo: str, rev: str, path: str = "") -> None:
        kind, _ = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        expand = _flag(self.query, "expand")
        entries = _tree(commit["files"], path.strip("/"), _flag(self.query, "recursive"))
        cursor = (self.query.get("cursor") or ["0"])[-1]
        if not cursor.isdigit():
            raise HubError(400, f"Invalid cursor: {cursor!r}")
        start = int(cursor)
        size = 50 if expand else self.server.page_size
        page = entries[start : start + size]
        if expand:
            page = [{**e, "lastCommit": self._last_commit(kind, repo, commit, e["path"])} for e in page]
        headers = {}
        if start + size < len(entries):
            query = {k: v[-1] for k, v in self.query.items()} | {"cursor": str(start + size)}
            headers["Link"] = f'<{self.base}{urlsplit(self.path).path}?{urlencode(query)}>; rel="next"'
        self._json(page, headers=headers)

    def _last_commit(self, kind: str, repo: str, commit: dict, path: str) -> dict:
        """The latest commit that changed `path` (a file or a folder)."""
        history = self.server.store.history(kind, repo, commit)
        newest, current = None, None
        for past in history:
            entry = _path_json(path, past["files"])
            oid = entry and entry["oid"]
            if newest is not None and oid != current:
                break
            newest, current = past, oid
        return {"id": newest["id"], "title": newest["title"], "date": newest["date"]}

    def h_paths_info(self, kinds: str, repo: str, rev: str) -> None:
        kind, _ = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        form = parse_qs(self.body.decode())
        if not form and self.body:
            form = {"paths": self._json_body().get("paths", [])}
        found = (_path_json(p.strip("/"), commit["files"]) for p in form.get("paths", []))
        self._json([entry for entry in found if entry is not None])

    def h_refs(self, kinds: str, repo: str) -> None:
        _, meta = self._repo(kinds, repo)
        refs = meta["refs"]
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in refs.items() if "/" not in n
        ]
        prs = [{"name": n, "ref": n, "targetCommit": s} for n, s in refs.items() if n.startswith("refs/pr/")]
        self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": prs})

    def h_commits(self, kinds: str, repo: str, rev: str) -> None:
        kind, _ = self._repo(kinds, repo)
        history = self.server.store.history(kind, repo, self._commit(kind, repo, rev))
        keys = ("id", "title", "message", "date")
        self._json(
            [{**{k: c[k] for k in keys}, "authors": [{"user": c["author"], "avatar": None}]} for c in history]
        )

    def h_resolve(self, repo: str, rev: str, path: str, kinds: str = "models") -> None:
        kind, meta = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        headers = {"X-Repo-Commit": commit["id"]}
        self._check_gate(kind, repo, meta)
        entry = commit["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers=headers)
        size, etag = entry["size"], f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        headers |= {"ETag": etag, "Accept-Ranges": "bytes"}
        headers["Content-Type"] = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if entry["lfs"]:
            headers |= {"X-Linked-Etag": etag, "X-Linked-Size": str(size)}
        start, end, status = _byte_range(self.headers.get("Range"), size)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, b"", headers, length=end - start + 1)
        if self.command == "GET":
            self._stream(self.server.store.blob(entry["sha256"]), start, end - start + 1)

    def _stream(self, blob: Path, start: int, length: int) -> None:
        with blob.open("rb") as f:
            f.seek(start)
            while length > 0 and (chunk := f.read(min(length, 1 << 20))):
                self.wfile.write(chunk)
                length -= len(chunk)

    # -- writing

    def h_preupload(self, kinds: str, repo: str, rev: str) -> None:
        kind, _ = self._repo(kinds, repo, write=not _flag(self.query, "create_pr"))
        commit = self._commit(kind, repo, rev)
        files, store = commit["files"], self.server.store
        attributes = files.get(".gitattributes")
        lfs = _gitattributes_lfs(store.blob(attributes["sha256"]).read_text()) if attributes else []
        req = self._json_body()
        ignore_file = files.get(".gitignore")
        ignore_text = req.get("gitIgnore") or (
            store.blob(ignore_file["sha256"]).read_text() if ignore_file else ""
        )
        ignore = _gitignore(ignore_text)
        out = []
        for item in req.get("files", []):
            path, sample = _check_path(item.get("path")), base64.b64decode(item.get("sample") or "")
            is_lfs = int(item.get("size") or 0) >= LFS_MIN_SIZE or b"\0" in sample or _matches(path, lfs)
            old = files.get(path)
            oid = None if old is None else old["sha256"] if old["lfs"] else old["oid"]
            mode = "lfs" if is_lfs else "regular"
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": _matches(path, ignore), "oid": oid})
        self._json({"files": out, "commitOid": commit["id"]})

    def h_lfs_batch(self, repo: str, kinds: str = "models") -> None:
        kind, _ = self._repo(kinds, repo, write=True)
        req = self._json_body()
        if req.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' operation is supported; download with /resolve")
        verify = f"{self.base}/{URL_PREFIX[kind]}{repo}.git/info/lfs/objects/verify"
        objects = [
            self._batch_object(obj.get("oid"), obj.get("size"), verify) for obj in req.get("objects", [])
        ]
        self._json(
            {"transfer": "basic", "objects": objects},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _batch_object(self, oid: object, size: object, verify: str) -> dict:
        """Upload instructions for one LFS object, nothing if it is already stored, or its error."""
        if not (isinstance(oid, str) and SHA256.fullmatch(oid) and isinstance(size, int) and size >= 0):
            return {"oid": str(oid), "size": 0, "error": {"code": 422, "message": "Invalid object"}}
        if size > self.server.max_file_size:
            message = f"Object is {size} bytes, over the {self.server.max_file_size}-byte file size limit"
            return {"oid": oid, "size": size, "error": {"code": 422, "message": message}}
        if self.server.store.blob(oid).is_file():
            return {"oid": oid, "size": size}
        href = f"{self.base}/api/lfs-upload/{oid}?ticket={self.server.issue_ticket(oid, size)}"
        actions = {"upload": {"href": href}, "verify": {"href": verify, "header": {}}}
        return {"oid": oid, "size": size, "authenticated": True, "actions": actions}

    def h_lfs_upload(self, oid: str) -> None:
        """The 'storage' side of LFS: a PUT with a one-time ticket instead of credentials, like a signed URL."""
        size = self.server.take_ticket((self.query.get("ticket") or [""])[-1], oid)
        if size is None:
            raise HubError(403, "Invalid or expired upload URL")
        store, digest, written = self.server.store, hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=store.root / "blobs", prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in self._body_chunks():
                    digest.update(chunk)
                    f.write(chunk)
                    written += len(chunk)
            if digest.hexdigest() != oid or written != size:
                raise HubError(400, f"Uploaded content does not match oid {oid} and size {size}")
            os.replace(tmp, store.blob(oid))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def h_lfs_verify(self, repo: str, kinds: str = "models") -> None:
        self._repo(kinds, repo, write=True)
        req = self._json_body()
        oid = str(req.get("oid", ""))
        blob = self.server.store.blob(oid)
        if not SHA256.fullmatch(oid) or not blob.is_file() or blob.stat().st_size != req.get("size"):
            raise HubError(404, f"LFS object {oid} was not uploaded")
        self._json({"success": True})

    def h_commit(self, kinds: str, repo: str, rev: str) -> None:
        create_pr = _flag(self.query, "create_pr")
        kind, _ = self._repo(kinds, repo, write=True)
        header, ops = self._parse_commit()
        store = self.server.store
        with store.lock:
            head = self._commit(kind, repo, rev)
            branch = rev.removeprefix("refs/heads/")
            if store.repo(kind, repo)["refs"].get(branch) != head["id"]:
                raise HubError(400, f"Cannot commit to {rev!r}: it is not a branch")
            parent = header.get("parentCommit")
            if parent and not head["id"].startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = self._apply(dict(head["files"]), ops)
            summary, description = header["summary"], header.get("description") or ""
            sha = store.save_commit(kind, repo, [head["id"]], files, summary, description, self.user["user"])
            target, body = branch, {"success": True, "commitOid": sha, "hookOutput": ""}
            if create_pr:
                number = 1 + sum(n.startswith("refs/pr/") for n in store.repo(kind, repo)["refs"])
                target, body["pullRequestUrl"] = (
                    f"refs/pr/{number}",
                    f"{self._repo_url(kind, repo)}/discussions/{number}",
                )
            store.update(kind, repo, refs={target: sha})
        self._json({**body, "commitUrl": f"{self._repo_url(kind, repo)}/commit/{sha}"})

    def _parse_commit(self) -> tuple[dict, list[tuple[str, str, object]]]:
        """Header and operations of an NDJSON commit, all checked before anything is written."""
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError as exc:
            raise HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc
        if not lines or lines[0].get("key") != "header" or not (lines[0].get("value") or {}).get("summary"):
            raise HubError(400, "A commit starts with a header line that has a non-empty summary")
        ops = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = _check_path(
                value.get("path", "").rstrip("/") if key == "deletedFolder" else value.get("path")
            )
            if key == "file":
                try:
                    data = base64.b64decode(value.get("content", ""), validate=True)
                except ValueError as exc:
                    raise HubError(400, f"Invalid base64 content for {path}") from exc
                if len(data) > self.server.max_file_size:
                    limit = self.server.max_file_size
                    raise HubError(413, f"{path} is {len(data)} bytes, over the {limit}-byte file size limit")
                ops.append(("file", path, data))
            elif key == "lfsFile":
                ops.append(("lfsFile", path, self._lfs_entry(path, value)))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, path, None))
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        return lines[0]["value"], ops

    def _lfs_entry(self, path: str, value: dict) -> dict:
        oid = str(value.get("oid", ""))
        blob = self.server.store.blob(oid)
        if value.get("algo", "sha256") != "sha256" or not SHA256.fullmatch(oid) or not blob.is_file():
            raise HubError(
                422, f"LFS object {oid} for {path} was never uploaded: upload it through the batch API"
            )
        size = blob.stat().st_size
        if value.get("size") not in (None, size):
            raise HubError(422, f"LFS object {oid} for {path} has size {size}, not {value['size']}")
        return {"oid": _git_oid(_lfs_pointer(oid, size)), "sha256": oid, "size": size, "lfs": True}

    def _apply(self, files: dict, ops: list) -> dict:
        for key, path, payload in ops:
            if key == "file":
                files[path] = self.server.store.file_entry(payload, lfs=False)
            elif key == "lfsFile":
                files[path] = payload
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            else:
                inside = [p for p in files if p.startswith(path + "/")]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del files[p]
        for path in files:
            parts = path.split("/")
            if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
                raise HubError(400, f"{path} would be inside a file that has the same name as its folder")
        return files


class Fault:
    """A failure on purpose: the `nth` request (counted from when it is added) that matches `method` and the
    `path` regex gets `kind`, and so do the `times - 1` matching requests after it.

    kind "status": answer `status` (default 503) with a JSON error; "drop": read half of the request body,
    then close the connection without an answer (a connection lost mid-upload); "slow": wait `delay`
    seconds, then answer normally.
    """

    KINDS = ("status", "drop", "slow")

    def __init__(
        self,
        kind: str,
        nth: int = 1,
        times: int = 1,
        status: int = 503,
        delay: float = 1.0,
        method: str | None = None,
        path: str | None = None,
    ):
        if kind not in self.KINDS or nth < 1 or times < 1:
            raise ValueError(
                f"fault kind must be one of {', '.join(self.KINDS)}, with nth >= 1 and times >= 1"
            )
        self.kind, self.nth, self.times, self.status, self.delay = kind, nth, times, status, delay
        self.method, self.path = method, re.compile(path) if path else None
        self.seen = 0
        self.hits_at: list[int] = []  # the matching request numbers it hit

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )

    @property
    def spent(self) -> bool:
        return len(self.hits_at) >= self.times

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """'KIND@N[xTIMES][:ARG][,METHOD][,PATH_REGEX]': 503@3, drop@2,PUT, slow@1x5:2.5, 500@1x9,POST,/commit/."""
        m = re.fullmatch(r"(\w+)@(\d+)(?:x(\d+))?(?::([\d.]+))?(?:,([A-Z]+))?(?:,(.+))?", spec)
        if not m:
            raise ValueError(
                f"fault {spec!r} must be KIND@N[xTIMES][:ARG][,METHOD][,PATH], e.g. 503@3 or drop@2,PUT"
            )
        kind, nth, times, arg, method, path = m.groups()
        status = int(kind) if kind.isdigit() else 503
        kwargs = {"delay": float(arg)} if arg and kind == "slow" else {}
        return cls(
            "status" if kind.isdigit() else kind,
            int(nth),
            int(times or 1),
            status,
            method=method,
            path=path,
            **kwargs,
        )


class Faults:
    """The server's fault switch: a list of `Fault`s, each counting the requests it matches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str | Fault, **kwargs) -> Fault:
        fault = kind if isinstance(kind, Fault) else Fault(kind, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The fault this request gets, if any (every live matching fault counts the request)."""
        hit = None
        with self._lock:
            for fault in self._faults:
                if fault.spent or not fault.matches(method, path):
                    continue
                fault.seen += 1
                if fault.seen >= fault.nth and hit is None:
                    fault.hits_at.append(fault.seen)
                    hit = fault
        return hit


class HubServer(ThreadingHTTPServer):
    """A running Hub: `.url`, `.store`, `.tokens`; `.shutdown()` stops it and frees the port."""

    daemon_threads = True
    page_size = 1000  # entries per tree page, like the Hub; tests lower it to exercise pagination
    max_file_size = 50 * 1000**3  # the Hub's limit per file; tests lower it to make a commit fail

    def __init__(self, address: tuple[str, int], data: Path, tokens: dict | None = None):
        super().__init__(address, _Handler)
        self.store = Store(data)
        self.tokens = {token: _check_token_info(info) for token, info in (tokens or {}).items()}
        self.url = f"http://{self.server_address[0]}:{self.server_address[1]}"
        self._tickets: dict[str, tuple[str, int, float]] = {}
        self._thread: threading.Thread | None = None
        self.faults = Faults()  # failures on purpose, for the tests (see Fault)
        self.transcript: list[tuple[str, str, int, bytes]] | None = None  # a list: every answer is kept
        self.jobs = Jobs(Path(data), self.url)  # the Jobs API: each job runs here, in a subprocess

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the server stops; Ctrl-C raises KeyboardInterrupt here."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def shutdown(self) -> None:
        self.jobs.stop_all()
        if self._thread is not None:
            super().shutdown()
            self._thread = None
        self.server_close()

    def issue_ticket(self, oid: str, size: int) -> str:
        ticket = secrets.token_urlsafe(24)
        with self.store.lock:
            self._tickets[ticket] = (oid, size, time.monotonic() + TICKET_SECONDS)
        return ticket

    def take_ticket(self, ticket: str, oid: str) -> int | None:
        with self.store.lock:
            found = self._tickets.pop(ticket, None)
        if found is None or found[0] != oid or found[2] < time.monotonic():
            return None
        return found[1]


def _check_token_info(info: dict) -> dict:
    if not isinstance(info, dict) or not info.get("user") or info.get("role") not in ("read", "write"):
        raise ValueError(
            "each token maps to {'user': NAME, 'role': 'read' | 'write'} (optionally 'orgs': [...])"
        )
    return dict(info)


def parse_token(spec: str) -> tuple[str, dict]:
    """'TOKEN:USER:ROLE' (ROLE read or write) -> (token, {'user': USER, 'role': ROLE})."""
    token, _, rest = spec.partition(":")
    user, _, role = rest.partition(":")
    if not token or not user or role not in ("read", "write"):
        raise ValueError(
            "a token is given as TOKEN:USER:ROLE with ROLE 'read' or 'write', e.g. hf_demo:alice:write"
        )
    return token, {"user": user, "role": role}


def serve(port: int, data: Path, tokens: dict | None = None, host: str = "127.0.0.1") -> HubServer:
    """Start a Hub server on host:port (0: any free port) over the data folder, in a daemon thread."""
    return HubServer((host, port), Path(data), tokens).start()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """serve-hub's options, on `python -m compressor serve-hub` and on `python -m compressor.hubserver`."""
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder holding the repos (created if missing)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind; only loopback by default")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN:USER:ROLE",
        help="accept TOKEN as USER (read|write)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND@N",
        help="fail on purpose (tests): 503@3 answers the 3rd request with a 503, drop@2,PUT drops the 2nd PUT "
        "mid-upload, slow@1x5:2 delays 5 requests by 2 s; see hubserver.Fault",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Serve until Ctrl-C (or SIGTERM)."""
    try:
        tokens = dict(parse_token(spec) for spec in args.token)
        faults = [Fault.parse(spec) for spec in args.fault]
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.host not in ("127.0.0.1", "localhost"):
        log.warning("binding %s: the hub is reachable from other machines", args.host)
    try:
        server = serve(args.port, args.data, tokens, host=args.host)
    except OSError as exc:
        print(
            f"error: cannot serve on {args.host}:{args.port} ({exc.strerror}): pick another --port, or 0 for "
            "any free one",
            file=sys.stderr,
        )
        return 2
    for fault in faults:
        server.faults.add(fault)
    print(
        f"Hub on {server.url} (data: {args.data}); use HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1",
        flush=True,
    )
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`compressor serve-hub --port P --data DIR [--token TOKEN:USER:ROLE ...]`: serve until Ctrl-C."""
    description = "Serve a local, Hugging Face Hub-compatible endpoint for offline pulls and pushes."
    parser = argparse.ArgumentParser(prog="compressor serve-hub", description=description)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
