"""The lmms-eval bridge: run lmms-eval's benchmarks (default: the LLaVA-1.5 suite) on both models and compare.

lmms-eval is pinned (``lmms_install.LMMS_EVAL``) and installed without torchvision or a second torch by
``make lmms`` (``python -m compressor.evaluate.lmms_install``) into the cache; the bridge uses an lmms-eval this
Python can import, else that install (first on PYTHONPATH), else the one of ``lmms_eval.python``, and otherwise
stops before loading any weights with the command to install it.

For each model it runs, in a child process, in a fresh folder of its own::

    python -m lmms_eval --model llava_hf --model_args pretrained=FOLDER,device=D,device_map=D,dtype=T[,EXTRA]
        --tasks pope,… --batch_size 1 --output_path DIR/<side>-XXXX --log_samples [--limit N]
        [--gen_kwargs max_new_tokens=M]
        [--include_path DIR/tasks]

and trusts nothing it did not see: lmms-eval exits 0 when evaluation raises, and llava_hf answers "" when
generation raises, so a run whose log shows an ERROR line or a traceback, that exits non-zero, or that wrote no
``*_results.json`` during this run (older files are ignored), or whose results lack a task, is a failure carrying
lmms-eval's own message. The results (``results`` → task → ``"<metric>,<filter>": value``, ``higher_is_better``,
``n-samples``, ``configs``, ``task_hashes``) become the same TaskResult rows as our own tasks, each with what
pins it (``TaskResult.pinned``): lmms-eval's version, the task, its version, yaml and hash, the dataset, its
revision and split, the limit, the generation settings and both models' model_args.

A task's dataset can come from elsewhere (``lmms_eval.datasets``: a local parquet file or folder, or a Hub id
``owner/name@revision``): the bridge writes ``compressor_<task>.yaml`` that includes lmms-eval's own yaml and
replaces only the dataset, and runs it through ``--include_path`` (lmms-eval's own task of the same name would
win over an included one, hence the prefix; the reports use the task's own name). Some tasks (mmbench_en) score
with an OpenAI judge (OPENAI_API_KEY); without it their judged metric is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.evaluate import lmms_install
from compressor.evaluate.config import LmmsEval
from compressor.evaluate.report import Score, TaskResult

log = logging.getLogger("compressor")

# lmms-eval model adapter per model family; anything else uses its generic chat model.
MODELS = {
    "llava": "llava_hf",
    "llava_next": "llava_hf",
    "llava_onevision": "llava_hf",
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
}
GENERIC_MODEL = "huggingface"
# The placement and dtype model_args each adapter takes (read in lmms-eval 0.7.3's model files). The bridge passes
# the run's own device and dtype through these; an adapter not listed gets --device only. llava_hf's default
# device_map="" is rejected by transformers 5.x, and a --device beside device= in model_args is a TypeError (both
# reach the adapter's constructor), so a listed adapter gets them in model_args only.
PLACEMENT_ARGS = {
    "llava_hf": ("device", "device_map", "dtype"),
    "qwen2_vl": ("device", "device_map"),
}

# The metric the LLaVA-1.5 paper reports per task (retained % averages these); other tasks average all their
# metrics that have a direction. lmms-eval spells MME's perception score "mme_percetion_score".
PRIMARY = {
    "gqa": ("exact_match",),
    "scienceqa_img": ("exact_match",),
    "textvqa_val": ("exact_match",),
    "pope": ("pope_f1_score",),
    "mme": ("mme_percetion_score", "mme_perception_score"),
    "mmbench_en_dev": ("gpt_eval_score",),
    "mmbench_en_test": (),
}
NO_DIRECTION = {"pope_yes_ratio", "submission"}
OVERRIDE_PREFIX = "compressor_"


@dataclass(frozen=True)
class Environment:
    """Where lmms-eval runs: the interpreter, a folder put first on PYTHONPATH (the cached install), its version
    and its package folder (where the task yamls are)."""

    python: str
    pythonpath: str | None
    version: str
    package: Path

    def env(self) -> dict[str, str]:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        return env


_PROBE = (
    "import importlib.metadata as m, importlib.util as u, json, sys\n"
    "s = u.find_spec('lmms_eval')\n"
    "sys.exit(3) if s is None else print(json.dumps([m.version('lmms_eval'), s.submodule_search_locations[0]]))"
)


def _probe(python: str, pythonpath: str | None) -> Environment | None:
    env = {**os.environ}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, env=env)
    except OSError:
        raise CompressorError(
            f"lmms_eval.python {python!r} cannot be run; give a Python interpreter"
        ) from None
    if proc.returncode != 0:
        return None
    version, package = json.loads(proc.stdout.strip().splitlines()[-1])
    return Environment(python, pythonpath, version, Path(package))


def model_name(cfg: LmmsEval, family: str) -> str:
    return cfg.model or MODELS.get(family, GENERIC_MODEL)


def python_of(cfg: LmmsEval) -> str:
    return cfg.python or sys.executable


def check_installed(cfg: LmmsEval) -> Environment:
    """The environment lmms-eval runs in, or a CompressorError giving the one command that installs it."""
    python = python_of(cfg)
    found = _probe(python, None)
    if found is None and cfg.python is None and lmms_install.installed() is not None:
        found = _probe(python, str(lmms_install.home()))
    if found is None:
        raise CompressorError(lmms_install.missing_message(python))
    if found.version != lmms_install.LMMS_EVAL:
        log.warning(
            "lmms-eval %s in %s; the bridge is tested with %s (`%s` installs that one)",
            found.version,
            python,
            lmms_install.LMMS_EVAL,
            lmms_install.INSTALL_COMMAND,
        )
    return found


def _args_of(model_args: str | None) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in (model_args or "").split(",") if "=" in kv)


def model_args(
    cfg: LmmsEval, model: str, pretrained: str | Path, device: str | None, dtype: str | None
) -> tuple[str, bool]:
    """lmms-eval's --model_args, and whether --device must be passed on the command line instead.

    The run's device and dtype go in as the adapter's own arguments (`PLACEMENT_ARGS`) unless the recipe's
    model_args set them already."""
    args = [f"pretrained={pretrained}"]
    user = _args_of(cfg.model_args)
    placement = PLACEMENT_ARGS.get(model)
    if placement is not None:
        dev = device or "cpu"
        values = {"device": dev, "device_map": dev, "dtype": dtype or "auto"}
        args += [f"{k}={values[k]}" for k in placement if k not in user]
    if cfg.model_args:
        args.append(cfg.model_args)
    return ",".join(args), placement is None and bool(device)


def command(
    cfg: LmmsEval,
    family: str,
    pretrained: str | Path,
    output_path: str | Path,
    device: str | None,
    dtype: str | None = None,
    *,
    python: str | None = None,
    tasks: list[str] | None = None,
    include_path: str | Path | None = None,
) -> list[str]:
    """The lmms-eval command line for one model."""
    model = model_name(cfg, family)
    margs, device_flag = model_args(cfg, model, pretrained, device, dtype)
    cmd = [python or python_of(cfg), "-m", "lmms_eval", "--model", model, "--model_args", margs]
    cmd += ["--tasks", ",".join(tasks or cfg.tasks), "--batch_size", str(cfg.batch_size)]
    cmd += [
        "--output_path",
        str(output_path),
        "--log_samples",
    ]  # each answer kept; the results get task_hashes
    if cfg.limit is not None:
        cmd += ["--limit", str(cfg.limit)]
    if cfg.max_new_tokens is not None:
        cmd += ["--gen_kwargs", f"max_new_tokens={cfg.max_new_tokens}"]
    if include_path is not None:
        cmd += ["--include_path", str(include_path)]
    if device_flag:
        cmd += ["--device", str(device)]
    return cmd


# ---------------------------------------------------------------------------- task yamls and local datasets


def task_yaml(package: Path, task: str) -> Path | None:
    """lmms-eval's yaml that defines `task` (a `task: NAME` line), in its package folder."""
    line = re.compile(rf"^task:\s*[\"']?{re.escape(task)}[\"']?\s*$", re.M)
    for path in sorted((package / "tasks").rglob("*.yaml")):
        try:
            if line.search(path.read_text(errors="replace")):
                return path
        except OSError:
            continue
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _test_split(yaml_path: Path) -> str:
    m = re.search(r"^test_split:\s*[\"']?([^\"'\s#]+)", yaml_path.read_text(), re.M)
    return m.group(1) if m else "test"


def write_pope(rows: list[dict[str, Any]], path: Path) -> Path:
    """POPE-format rows (question_id, question, answer "yes"/"no", category, image: a PIL image) as one parquet file,
    the local dataset `lmms_eval.datasets: {pope: PATH}` reads; returns `path`."""
    import datasets

    features = datasets.Features(
        {k: datasets.Value("string") for k in ("question_id", "question", "answer", "category")}
        | {"image": datasets.Image()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path


def write_overrides(env: Environment, cfg: LmmsEval, folder: Path) -> tuple[Path | None, dict[str, str]]:
    """Task yamls for `cfg.datasets` under `folder` (an --include_path): ({run name: task}) for the tasks moved."""
    if not cfg.datasets:
        return None, {}
    unknown = sorted(set(cfg.datasets) - set(cfg.tasks))
    if unknown:
        raise CompressorError(
            f"lmms_eval.datasets names {unknown}, which are not in lmms_eval.tasks {cfg.tasks}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for task, source in cfg.datasets.items():
        original = task_yaml(env.package, task)
        if original is None:
            raise CompressorError(
                f"lmms-eval {env.version} has no task {task!r} (no yaml says `task: {task}`)"
            )
        split = _test_split(original)
        local = Path(source).expanduser()
        if local.exists() or source.startswith(("/", ".", "~")):
            local = local.resolve()
            files = [local] if local.is_file() else sorted(local.glob("*.parquet")) if local.is_dir() else []
            if not files:
                raise CompressorError(
                    f"lmms_eval.datasets.{task}: {source} is no parquet file or folder of them"
                )
            dataset = {
                "dataset_path": "parquet",
                "dataset_kwargs": {"data_files": {split: [str(f) for f in files]}},
            }
        else:
            repo, _, revision = source.partition("@")
            dataset = {"dataset_path": repo, "dataset_kwargs": {"revision": revision} if revision else {}}
        name = OVERRIDE_PREFIX + task
        spec = {"include": str(original), "task": name, "dataset_name": None, **dataset}
        (folder / f"{name}.yaml").write_text(json.dumps(spec, indent=1) + "\n")  # JSON is YAML
        names[name] = task
    return folder, names


# ---------------------------------------------------------------------------- running and trusting a run

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CONTINUATION = ("Traceback", "The above exception", "During handling", "^", "~")


def failures(lines: list[str]) -> list[str]:
    """lmms-eval's error messages in its log: every ERROR-level line and each traceback's exception line."""
    found: list[str] = []
    in_traceback = False
    for raw in lines:
        line = _ANSI.sub("", raw).rstrip()
        if "| ERROR" in line:
            found.append(line.split(" - ", 1)[-1])
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace() and not line.startswith(_CONTINUATION):
            found.append(line)
            in_traceback = False
    return list(dict.fromkeys(found))


def run_one(env: Environment, cmd: list[str], folder: Path, side: str, expected: list[str]) -> Path:
    """Run one lmms-eval command whose --output_path is `folder`; its new results file, or a CompressorError."""
    folder.mkdir(parents=True, exist_ok=True)
    logfile = folder / "lmms-eval.log"
    log.info("lmms-eval on the %s model: %s", side, " ".join(cmd))
    started = time.time()
    lines: list[str] = []
    with logfile.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env.env()
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            sys.stderr.write(line)
            lines.append(line)
        code = proc.wait()
    problems = failures(lines)
    if code != 0:
        problems.append(f"exit status {code}")
    found = sorted(folder.rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    fresh = [p for p in found if p.stat().st_mtime >= started]
    if not problems and not fresh:
        older = f" (only older ones: {', '.join(map(str, found))})" if found else ""
        problems.append(f"no *_results.json written during this run under {folder}{older}")
    if not problems:
        data = json.loads(fresh[-1].read_text())
        missing = [t for t in expected if t not in (data.get("results") or {})]
        if missing:
            problems.append(f"its results have no {missing}")
    if problems:
        raise CompressorError(
            f"lmms-eval failed on the {side} model: " + "; ".join(problems[:8]) + f" (its log: {logfile})"
        )
    return fresh[-1]


def find_results(output_path: str | Path) -> Path:
    """The newest `*_results.json` under lmms-eval's output path."""
    found = sorted(Path(output_path).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CompressorError(f"lmms-eval wrote no *_results.json under {output_path}; see its log above")
    return found[-1]


def parse_results(path: str | Path, names: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """task → {"metrics": {metric: value}, "higher_is_better": {metric: bool}, "samples": int | None,
    "config": the task's config as lmms-eval ran it, "version", "hash", "run_as", "run": the run's config}.

    Metric keys "<metric>,<filter>" become "<metric>" (filter "none") or "<metric> (<filter>)"; standard errors,
    aliases and non-numeric values (submission files) are left out. `names` maps a task run under another name
    (a dataset override) back to its own.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data.get("results"), dict):
        raise CompressorError(f"{path} is not an lmms-eval results file: it has no 'results' mapping")
    names = names or {}
    out: dict[str, dict[str, Any]] = {}
    for run_as, values in data["results"].items():
        metrics: dict[str, float] = {}
        for key, value in values.items():
            name, _, filt = key.partition(",")
            if (
                "_stderr" in name
                or name == "alias"
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
            ):
                continue
            metrics[name if filt in ("", "none") else f"{name} ({filt})"] = float(value)
        n = (data.get("n-samples") or {}).get(run_as) or {}
        out[names.get(run_as, run_as)] = {
            "metrics": metrics,
            "higher_is_better": (data.get("higher_is_better") or {}).get(run_as) or {},
            "samples": n.get("effective"),
            "config": (data.get("configs") or {}).get(run_as) or {},
            "version": (data.get("versions") or {}).get(run_as),
            "hash": (data.get("task_hashes") or {}).get(run_as),
            "run_as": run_as,
            "run": data.get("config") or {},
        }
    return out


def _direction(task: dict[str, Any], metric: str) -> bool | None:
    base = metric.split(" (")[0]
    if base in NO_DIRECTION:
        return None
    return task["higher_is_better"].get(base, True)


def _task_version(config: dict[str, Any], fallback: Any) -> Any:
    meta = config.get("metadata")
    meta = meta[0] if isinstance(meta, list) and meta else meta
    return meta.get("version", fallback) if isinstance(meta, dict) else fallback


def pins(
    task: str, a: dict[str, Any], b: dict[str, Any], cfg: LmmsEval, env: Environment | None
) -> dict[str, Any]:
    """What pins one task's comparison, so it can be repeated exactly."""
    config, run = a.get("config") or {}, a.get("run") or {}
    yaml_path = task_yaml(env.package, task) if env is not None else None
    kwargs = config.get("dataset_kwargs") or {}
    return {
        "lmms_eval": env.version if env is not None else None,
        "task": task,
        "run_as": a.get("run_as", task),
        "task_version": _task_version(config, a.get("version")),
        "task_yaml": str(yaml_path.relative_to(env.package)) if yaml_path and env else None,
        "task_yaml_sha256": _sha256(yaml_path) if yaml_path else None,
        "task_hash": a.get("hash"),
        "dataset": config.get("dataset_path"),
        "dataset_name": config.get("dataset_name"),
        "dataset_kwargs": kwargs,
        "dataset_override": cfg.datasets.get(task),
        "split": config.get("test_split"),
        "limit": cfg.limit,
        "samples": a.get("samples"),
        "generation": config.get("generation_kwargs"),
        "gen_kwargs": run.get("gen_kwargs"),
        "model": run.get("model"),
        "model_args": {
            "original": run.get("model_args"),
            "compressed": (b.get("run") or {}).get("model_args"),
        },
        "batch_size": run.get("batch_size"),
    }


def compare(
    original: dict[str, dict[str, Any]],
    compressed: dict[str, dict[str, Any]],
    cfg: LmmsEval,
    seconds: float = 0.0,
    env: Environment | None = None,
) -> list[TaskResult]:
    """TaskResult rows for the tasks both runs report."""
    results = []
    for task in [t for t in original if t in compressed]:
        a, b = original[task], compressed[task]
        primary = PRIMARY.get(task)
        scores = {}
        for metric in [m for m in a["metrics"] if m in b["metrics"]]:
            direction = _direction(a, metric)
            is_primary = direction is not None and (primary is None or metric.split(" (")[0] in primary)
            scores[metric] = Score.of(a["metrics"][metric], b["metrics"][metric], direction, is_primary)
        notes = [] if scores else ["no numeric metric in both results (a judged or submission-only task)"]
        pinned = pins(task, a, b, cfg, env)
        dataset = pinned["dataset"]
        if dataset == "parquet" and pinned["dataset_override"]:
            dataset = pinned["dataset_override"]
        results.append(
            TaskResult.build(
                scores,
                name=task,
                task="lmms_eval",
                dataset=dataset or f"lmms-eval:{task}",
                subset=pinned["dataset_name"],
                split=pinned["split"],
                revision=(pinned["dataset_kwargs"] or {}).get("revision"),
                limit=cfg.limit,
                samples=int(a["samples"] or b["samples"] or 0),
                seconds=seconds,
                notes=notes,
                pinned=pinned,
            )
        )
    return results


def run(
    original: Path,
    compressed: Path,
    family: str,
    cfg: LmmsEval,
    device: str | None = None,
    dtype: str | None = None,
) -> list[TaskResult]:
    """Run lmms-eval on both models, one after the other, each in a fresh folder, and compare their results."""
    env = check_installed(cfg)
    if device in (None, "auto"):
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    root = Path(cfg.output_dir) if cfg.output_dir else Path(tempfile.mkdtemp(prefix="compressor-lmms-"))
    root.mkdir(parents=True, exist_ok=True)
    parsed = {}
    start = time.perf_counter()
    done = False
    try:
        include, names = write_overrides(env, cfg, Path(tempfile.mkdtemp(prefix="tasks-", dir=root)))
        back = {task: name for name, task in names.items()}
        tasks = [back.get(t, t) for t in cfg.tasks]
        for side, folder in (("original", original), ("compressed", compressed)):
            fresh = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=root))
            cmd = command(
                cfg,
                family,
                folder,
                fresh,
                device,
                dtype,
                python=env.python,
                tasks=tasks,
                include_path=include,
            )
            parsed[side] = parse_results(run_one(env, cmd, fresh, side, tasks), names)
        done = True
    finally:
        if not cfg.output_dir and done:  # a failed run's log stays where its message says
            shutil.rmtree(root, ignore_errors=True)
    return compare(parsed["original"], parsed["compressed"], cfg, (time.perf_counter() - start) / 2, env)
