"""The lmms-eval bridge: run lmms-eval's benchmarks (default: the LLaVA-1.5 suite) on both models and compare.

For each model it runs, in a child process::

    python -m lmms_eval --model llava_hf --model_args pretrained=FOLDER[,EXTRA] --tasks gqa,scienceqa_img,…
        --batch_size 1 --output_path DIR/{original,compressed} [--limit N] [--device cuda:0]

then reads the ``*_results.json`` lmms-eval writes under the output path (``DIR/<model name>/<date>_results.json``,
the lm-evaluation-harness layout: ``results`` → task → ``"<metric>,<filter>": value``, with ``higher_is_better``
and ``n-samples`` per task) into the same TaskResult rows as our own tasks.

Installing it (the ``eval`` extra; never in CI). lmms-eval depends on torchvision, and pip resolving
torchvision from the registry replaces a pinned torch with a CUDA build of another version. Install it beside
the torch you have, with the matching torchvision from the same index, e.g. for torch 2.13 on CUDA 12.8::

    pip install torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cu128
    pip install lmms-eval          # now resolves against the torch and torchvision already there
    python -c "import torch, lmms_eval; print(torch.__version__)"   # still 2.13.0

(on a CPU-only machine use ``--index-url https://download.pytorch.org/whl/cpu``; check the torchvision that
matches your torch in PyTorch's compatibility table). Or keep lmms-eval in its own environment and point the
recipe at its interpreter with ``lmms_eval.python``. Its tasks download their datasets from the Hub, and some
(mmbench_en) score with an OpenAI judge (OPENAI_API_KEY) — without it their judged metric is missing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.evaluate.config import LmmsEval
from compressor.evaluate.report import Score, TaskResult

log = logging.getLogger("compressor")

INSTALL_HINT = (
    "lmms-eval is not installed in {python}. Install the eval extra beside your pinned torch: first torch and "
    "the matching torchvision from the PyTorch index (e.g. pip install torch==2.13.0 torchvision==0.28.0 "
    "--index-url https://download.pytorch.org/whl/cu128), then pip install lmms-eval; or set lmms_eval.python "
    "to an environment that has it (see compressor/evaluate/lmms.py)"
)

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


def model_name(cfg: LmmsEval, family: str) -> str:
    return cfg.model or MODELS.get(family, GENERIC_MODEL)


def python_of(cfg: LmmsEval) -> str:
    return cfg.python or sys.executable


def command(
    cfg: LmmsEval, family: str, pretrained: str | Path, output_path: str | Path, device: str | None
) -> list[str]:
    """The lmms-eval command line for one model."""
    model_args = f"pretrained={pretrained}" + (f",{cfg.model_args}" if cfg.model_args else "")
    cmd = [
        python_of(cfg),
        "-m",
        "lmms_eval",
        "--model",
        model_name(cfg, family),
        "--model_args",
        model_args,
        "--tasks",
        ",".join(cfg.tasks),
        "--batch_size",
        str(cfg.batch_size),
        "--output_path",
        str(output_path),
    ]
    if cfg.limit is not None:
        cmd += ["--limit", str(cfg.limit)]
    if device:
        cmd += ["--device", device]
    return cmd


def check_installed(cfg: LmmsEval) -> None:
    """A CompressorError with the install hint when lmms-eval cannot be imported by the configured Python."""
    python = python_of(cfg)
    if python == sys.executable:
        import importlib.util

        found = importlib.util.find_spec("lmms_eval") is not None
    else:
        probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('lmms_eval') else 1)"
        try:
            found = subprocess.run([python, "-c", probe], capture_output=True).returncode == 0
        except OSError:
            raise CompressorError(
                f"lmms_eval.python {python!r} cannot be run; give a Python interpreter"
            ) from None
    if not found:
        raise CompressorError(INSTALL_HINT.format(python=python))


def find_results(output_path: str | Path) -> Path:
    """The newest `*_results.json` under lmms-eval's output path."""
    found = sorted(Path(output_path).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CompressorError(f"lmms-eval wrote no *_results.json under {output_path}; see its log above")
    return found[-1]


def parse_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """task → {"metrics": {metric: value}, "higher_is_better": {metric: bool}, "samples": int | None}.

    Metric keys "<metric>,<filter>" become "<metric>" (filter "none") or "<metric> (<filter>)"; standard errors,
    aliases and non-numeric values (submission files) are left out.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data.get("results"), dict):
        raise CompressorError(f"{path} is not an lmms-eval results file: it has no 'results' mapping")
    out: dict[str, dict[str, Any]] = {}
    for task, values in data["results"].items():
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
        n = (data.get("n-samples") or {}).get(task) or {}
        out[task] = {
            "metrics": metrics,
            "higher_is_better": (data.get("higher_is_better") or {}).get(task) or {},
            "samples": n.get("effective"),
        }
    return out


def _direction(task: dict[str, Any], metric: str) -> bool | None:
    base = metric.split(" (")[0]
    if base in NO_DIRECTION:
        return None
    return task["higher_is_better"].get(base, True)


def compare(
    original: dict[str, dict[str, Any]],
    compressed: dict[str, dict[str, Any]],
    cfg: LmmsEval,
    seconds: float = 0.0,
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
        results.append(
            TaskResult.build(
                scores,
                name=task,
                task="lmms_eval",
                dataset=f"lmms-eval:{task}",
                limit=cfg.limit,
                samples=int(a["samples"] or b["samples"] or 0),
                seconds=seconds,
                notes=notes,
            )
        )
    return results


def run(
    original: Path, compressed: Path, family: str, cfg: LmmsEval, device: str | None = None
) -> list[TaskResult]:
    """Run lmms-eval on both models, one after the other, and compare their results."""
    check_installed(cfg)
    out = Path(cfg.output_dir) if cfg.output_dir else Path(tempfile.mkdtemp(prefix="compressor-lmms-"))
    parsed = {}
    start = time.perf_counter()
    try:
        for side, folder in (("original", original), ("compressed", compressed)):
            cmd = command(cfg, family, folder, out / side, device)
            log.info("lmms-eval on the %s model: %s", side, " ".join(cmd))
            proc = subprocess.run(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if proc.returncode != 0:
                raise CompressorError(
                    f"lmms-eval failed on the {side} model (exit {proc.returncode}); see its log above"
                )
            parsed[side] = parse_results(find_results(out / side))
    finally:
        if not cfg.output_dir:
            shutil.rmtree(out, ignore_errors=True)
    return compare(parsed["original"], parsed["compressed"], cfg, (time.perf_counter() - start) / 2)
